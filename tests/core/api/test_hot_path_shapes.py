"""The hot paths (intake, outcomes, permits) answer with TypedDicts for speed; their pydantic models are what
the schema publishes. Each pair must name the same fields in the same order."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from recovery.breakers import schemas as breaker_schemas
from recovery.errors import schemas as error_schemas

PAIRS = [*error_schemas.HOT_PATH_MIRRORS, *breaker_schemas.HOT_PATH_MIRRORS]


@pytest.mark.parametrize(("typed", "model"), PAIRS, ids=[model.__name__ for _, model in PAIRS])
def test_it_answers_the_hot_paths_in_the_shape_the_schema_publishes(
    typed: type, model: type[BaseModel]
) -> None:
    assert list(typed.__annotations__) == list(model.model_fields)

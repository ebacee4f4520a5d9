"""Issue 11, item 9: the schema says what the API refuses, so a request valid by the schema is not a 400."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from drf_spectacular.generators import SchemaGenerator

pytestmark = pytest.mark.django_db


@functools.cache
def _components() -> dict[str, Any]:
    return SchemaGenerator().get_schema(request=None, public=True)["components"]["schemas"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("component", ["RuleInRequest", "PatchedRulePatchInRequest", "ReasonInRequest"])
def test_it_documents_that_a_reason_needs_a_character_that_is_not_white_space(component: str) -> None:
    reason = _components()[component]["properties"]["reason"]
    assert (reason["minLength"], reason["pattern"]) == (1, r"\S")


def test_it_documents_that_a_batch_holds_at_least_one_error() -> None:
    assert _components()["ErrorBatchIn"]["properties"]["errors"]["minItems"] == 1


def test_it_refuses_a_reason_of_white_space_as_the_schema_says(operator_client: Any) -> None:
    body = {"name": "x", "error_class": "transient", "severity": "low", "message_regex": "x", "reason": "  "}
    response = operator_client.post("/api/v1/rules", body, format="json")
    assert response.status_code == 400
    assert "reason" in [e["field"] for e in response.json()["errors"]]

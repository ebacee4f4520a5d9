"""Every number a request's model holds is one Rebound can keep: finite floats, integers within 64 bits, even
where pydantic's lax mode reads them from strings (issue 11, item 7, the generic part)."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field, TypeAdapter
from rest_framework.test import APIClient

from core.api.errors import InvalidInput
from core.api.validation import parse

NOT_FINITE = "must be a finite number"
INT_RANGE = (
    "an integer must be between -9223372036854775808 and 9223372036854775807 (send larger numbers as strings)"
)


class Inner(BaseModel):
    seconds: float | None = None


class Query(BaseModel):
    after: int = 0
    wait: Annotated[float, Field(ge=0)] = 0
    name: str = ""
    inner: Inner | None = None
    many: list[Inner] = []
    weights: dict[str, float] = {}
    free: dict[str, Any] = {}
    flag: bool = False


_QUERY = TypeAdapter(Query)
_LIST = TypeAdapter(list[Query])


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"wait": "inf"}, "wait", NOT_FINITE),
        ({"wait": "Infinity"}, "wait", NOT_FINITE),
        ({"wait": "1e400"}, "wait", NOT_FINITE),
        ({"after": "9" * 30}, "after", INT_RANGE),
        ({"after": "-9223372036854775809"}, "after", INT_RANGE),
        ({"inner": {"seconds": "-inf"}}, "inner.seconds", NOT_FINITE),
        ({"inner": {"seconds": "nan"}}, "inner.seconds", NOT_FINITE),
        ({"many": [{}, {"seconds": "1e999"}]}, "many[1].seconds", NOT_FINITE),
        ({"weights": {"a": 1, "b": "inf"}}, "weights.b", NOT_FINITE),
    ],
)
def test_it_refuses_a_number_that_cannot_be_kept_naming_the_field(
    data: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse(_QUERY, data)
    assert refused.value.errors == [{"field": field, "message": message}]


def test_it_names_the_item_of_a_list_with_its_prefix() -> None:
    with pytest.raises(InvalidInput) as refused:
        parse(_LIST, [{}, {"wait": "inf"}], prefix="outcomes")
    assert refused.value.errors == [{"field": "outcomes[1].wait", "message": NOT_FINITE}]


def test_it_keeps_every_number_in_range() -> None:
    data = {
        "after": str(2**63 - 1),
        "wait": "1e308",
        "inner": {"seconds": 0.5},
        "weights": {"a": -1.5},
        "free": {"x": 10**30},
        "flag": True,
    }
    parsed = parse(_QUERY, data)
    assert (parsed.after, parsed.wait, parsed.free["x"]) == (2**63 - 1, 1e308, 10**30)


@pytest.mark.django_db
def test_an_outcome_with_an_infinite_duration_in_a_string_is_refused(agent_client: APIClient) -> None:
    body = [{"service": "svc", "success": True, "duration_ms": "1e400"}]
    response = agent_client.post("/api/v1/outcomes", body, format="json")
    assert response.status_code == 400, response.content
    assert [e["field"] for e in response.json()["errors"]] == ["[0].duration_ms"]

"""A date and time in a query is whatever RFC 3339 allows (the schema says `format: date-time`): any offset
up to ±23:59, any year from 1 to 9999. PostgreSQL takes offsets only up to ±15:59, so core.api.schemas.Moment
hands it the moment in UTC, and refuses with 400, naming the field, one that has no UTC year in range."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def test_it_answers_a_since_with_an_offset_postgresql_cannot_hold(operator_client: APIClient) -> None:
    answer = operator_client.get("/api/v1/audit-events", {"since": "0590-10-21T05:37:57+22:18"})
    assert answer.status_code == 200


def test_it_reads_a_since_with_a_large_offset_as_the_same_moment_in_utc(operator_client: APIClient) -> None:
    # The operator's key was issued (and audited) just now: 2000-01-02 00:00+22:00 is 2000-01-01 02:00 UTC.
    answer = operator_client.get("/api/v1/audit-events", {"since": "2000-01-02T00:00:00+22:00"})
    assert answer.status_code == 200
    assert answer.json()["count"] >= 1


def test_it_refuses_a_since_whose_utc_year_is_out_of_range_naming_the_field(
    operator_client: APIClient,
) -> None:
    answer = operator_client.get("/api/v1/audit-events", {"since": "0001-01-01T00:00:00+10:00"})
    assert answer.status_code == 400
    assert [e["field"] for e in answer.json()["errors"]] == ["since"]

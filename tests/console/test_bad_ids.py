"""Ids no row can have, in every console route that takes one: a 404 (or the page's own refusal), never a 500.

A route's int converter takes any number of digits; PostgreSQL's bigint does not."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from recovery.breakers.models import Service
from tests.support import factories
from tests.support.admin_helpers import login

pytestmark = pytest.mark.django_db
HUGE = 10**30


@pytest.fixture
def as_operator() -> Client:
    return login(factories.operator())


@pytest.mark.parametrize(
    "path",
    [
        f"/console/escalations/{HUGE}/acknowledge/",
        f"/console/runs/{HUGE}/approve/",
        f"/console/services/search/checks/{HUGE}/run/",
    ],
)
def test_it_answers_404_to_an_id_no_row_can_have(as_operator: Client, path: str) -> None:
    Service.objects.create(name="search")
    assert as_operator.post(path, {"reason": "why"}).status_code == 404


@pytest.mark.parametrize("q", [f"#{HUGE}", str(HUGE), f"run {HUGE}", f"esc-{HUGE}"])
def test_it_finds_nothing_for_a_number_no_row_can_have(as_operator: Client, q: str) -> None:
    response: Any = as_operator.get("/console/search/", {"q": q})
    assert response.status_code == 200
    assert "No match" in response.content.decode()

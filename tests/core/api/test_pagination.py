"""The page parameters of every paged list are read strictly: 400 naming the parameter (issue 11, item 7)."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from core.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def _events(count: int) -> None:
    for n in range(count):
        AuditEvent.objects.create(
            actor_label="cli", action="x", target_type="t", target_id=str(n), source="cli"
        )


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page=1e400", "page"),
        ("page=NaN", "page"),
        ("page=-1", "page"),
        ("page=0", "page"),
        ("page=" + "9" * 5000, "page"),
        ("page_size=1e400", "page_size"),
        ("page_size=Infinity", "page_size"),
        ("page_size=0", "page_size"),
        ("page_size=-5", "page_size"),
        ("page_size=2.5", "page_size"),
    ],
)
def test_it_refuses_a_page_parameter_that_is_not_a_whole_number(
    viewer_client: APIClient, query: str, field: str
) -> None:
    response = viewer_client.get(f"/api/v1/audit-events?{query}")
    assert response.status_code == 400, response.content
    body: dict[str, Any] = response.json()
    assert body["code"] == "invalid"
    assert [e["field"] for e in body["errors"]] == [field]


def test_it_pages_with_whole_numbers_and_caps_the_size(viewer_client: APIClient) -> None:
    _events(5 - AuditEvent.objects.count())  # the viewer's key left one or more already
    page = viewer_client.get("/api/v1/audit-events?page=3&page_size=2").json()
    assert (page["count"], len(page["results"])) == (5, 1)
    assert len(viewer_client.get("/api/v1/audit-events?page_size=100000").json()["results"]) == 5
    assert len(viewer_client.get("/api/v1/audit-events?page=last&page_size=2").json()["results"]) == 1


def test_a_page_past_the_last_is_a_json_404(viewer_client: APIClient) -> None:
    _events(1)
    response = viewer_client.get("/api/v1/audit-events?page=999999999999999999")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"

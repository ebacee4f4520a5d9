"""A NUL or bytes that are not UTF-8 in a path or a query parameter under /api/ are a 400 naming it, never a
database error (issue 11, item 5)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def _refused(response: Any, field: str) -> dict[str, Any]:
    assert response.status_code == 400, response.content
    body: dict[str, Any] = response.json()
    assert body["code"] == "invalid"
    assert body["errors"] == [{"field": field, "message": body["detail"]}]
    return body


@pytest.mark.parametrize(
    "path", ["/api/v1/tasks", "/api/v1/patterns", "/api/v1/breakers/events", "/api/v1/retries"]
)
def test_it_refuses_a_nul_in_a_query_parameter_naming_it(agent_client: APIClient, path: str) -> None:
    body = _refused(agent_client.get(f"{path}?agent=%00"), "agent")
    assert "NUL" in body["detail"]


@pytest.mark.parametrize("value", ["%ED%A0%80", "%FF", "a%C3", "%C0%AF"])
def test_it_refuses_a_query_parameter_that_is_not_utf8(agent_client: APIClient, value: str) -> None:
    body = _refused(agent_client.get(f"/api/v1/tasks?status=running&agent={value}"), "agent")
    assert "UTF-8" in body["detail"]


def test_it_names_a_parameter_whose_name_holds_a_nul(agent_client: APIClient) -> None:
    _refused(agent_client.get("/api/v1/tasks?ag%00ent=x"), "ag\\x00ent")


def test_it_refuses_a_nul_in_the_path(agent_client: APIClient) -> None:
    _refused(agent_client.get("/api/v1/breakers/svc%00x"), "path")
    _refused(agent_client.post("/api/v1/tasks/t%00/heartbeat"), "path")


def test_it_reads_percent_encoded_utf8_as_before(agent_client: APIClient) -> None:
    response = agent_client.get("/api/v1/tasks?agent=caf%C3%A9&name=a+b")
    assert response.status_code != 400 or "UTF-8" not in response.json()["detail"]
    assert agent_client.get("/api/v1/patterns?service=svc-1&page_size=2").status_code == 200


def test_it_leaves_pages_outside_the_api_alone() -> None:
    assert Client().get("/admin/login/?next=%00").status_code == 200

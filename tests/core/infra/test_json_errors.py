"""Under /api/ every answer is JSON, with the error envelope, whoever gives it: DRF's views, Django's own
handlers or a middleware (issue 11, item 8; the database outage of item 24)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import InterfaceError, OperationalError
from django.test import Client, RequestFactory, override_settings
from rest_framework.test import APIClient

from core.access import api as access_api
from core.infra import error_handlers
from tests.support import factories

pytestmark = pytest.mark.django_db
PLAIN = override_settings(ROOT_URLCONF="tests.core.infra.plain_urls")


def _envelope(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body: dict[str, Any] = json.loads(response.content)
    assert set(body) == {"detail", "code", "errors"}
    assert body["code"] == code
    return body


@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/v1/errors/nope/deeper", "/api/", "/api/v2/errors"])
def test_an_unmatched_api_path_is_a_json_404(agent_client: APIClient, path: str) -> None:
    body = _envelope(agent_client.get(path), 404, "not_found")
    assert path in body["detail"]
    _envelope(agent_client.post(path, {"a": 1}, format="json"), 404, "not_found")


def test_an_unmatched_path_outside_the_api_stays_a_page() -> None:
    response = Client().get("/nope")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_a_session_post_to_an_unmatched_api_path_is_a_json_404_not_a_csrf_page(operator_user: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator_user)
    _envelope(client.post("/api/v1/nope", {"a": "1"}), 404, "not_found")


def test_a_wrong_method_is_a_json_405_with_allow(agent_client: APIClient) -> None:
    response = agent_client.delete("/api/v1/me")
    _envelope(response, 405, "method_not_allowed")
    assert "GET" in response["Allow"]


def test_a_body_that_is_not_json_is_a_json_415(agent_client: APIClient) -> None:
    response = agent_client.generic("POST", "/api/v1/errors", b"service=svc", content_type="text/plain")
    _envelope(response, 415, "unsupported_media_type")


def test_an_answer_it_cannot_render_is_a_json_406(agent_client: APIClient) -> None:
    _envelope(agent_client.get("/api/v1/me", HTTP_ACCEPT="text/csv"), 406, "not_acceptable")


def test_a_host_not_allowed_is_a_json_400() -> None:
    response = Client().get("/api/v1/me", HTTP_HOST="evil.example")
    _envelope(response, 400, "bad_host")


def test_an_uncaught_exception_in_an_api_view_is_a_json_500(
    agent_client: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(access_api.MeView, "get", boom)
    agent_client.raise_request_exception = False
    _envelope(agent_client.get("/api/v1/me"), 500, "server_error")


@pytest.mark.parametrize(
    "error", [OperationalError("server closed the connection"), InterfaceError("connection already closed")]
)
def test_a_database_outage_in_an_api_view_is_a_json_503_with_retry_after(
    agent_client: APIClient, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def gone(*args: Any) -> None:
        raise error

    monkeypatch.setattr(access_api.MeView, "get", gone)
    response = agent_client.get("/api/v1/me")
    _envelope(response, 503, "unavailable")
    assert int(response["Retry-After"]) > 0


@PLAIN
def test_a_plain_views_exception_under_the_api_is_a_json_500() -> None:
    _envelope(Client(raise_request_exception=False).get("/api/plain/boom"), 500, "server_error")


@PLAIN
def test_a_plain_views_database_outage_is_a_json_503_with_retry_after() -> None:
    response = Client().get("/api/plain/database-gone")
    _envelope(response, 503, "unavailable")
    assert int(response["Retry-After"]) > 0


@PLAIN
def test_a_plain_views_405_is_json_with_allow() -> None:
    response = Client().post("/api/plain/form")
    _envelope(response, 405, "method_not_allowed")
    assert response["Allow"] == "GET"


@PLAIN
def test_a_csrf_refusal_under_the_api_is_json(operator_user: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator_user)
    _envelope(client.post("/api/plain/post-form", {"a": "1"}), 403, "forbidden")


def test_a_database_outage_raised_outside_any_view_is_a_json_503() -> None:
    request = RequestFactory().get("/api/v1/me")
    try:
        raise OperationalError("the database system is shutting down")
    except OperationalError:
        response = error_handlers.server_error(request)
    _envelope(response, 503, "unavailable")
    assert int(response["Retry-After"]) > 0


def test_django_pages_outside_the_api_stay_pages() -> None:
    request = RequestFactory().get("/admin/x")
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        response = error_handlers.server_error(request)
    assert response.status_code == 500
    assert not response["Content-Type"].startswith("application/json")


def test_a_user_key_is_still_answered_in_json_everywhere(operator_user: Any) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {factories.user_key(operator_user)}")
    _envelope(client.get("/api/v1/audit-events/nope"), 404, "not_found")


def test_the_browsable_api_still_shows_its_errors_to_a_browser() -> None:
    response = APIClient().get("/api/v1/patterns", HTTP_ACCEPT="text/html")
    assert response.status_code in (401, 403)
    assert response["Content-Type"].startswith("text/html")


def test_the_bare_api_prefix_is_a_json_404() -> None:
    _envelope(Client().get("/api"), 404, "not_found")

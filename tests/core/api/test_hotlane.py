"""The hot lane (core/api/hotlane.py): the plain case of POST /errors, /breakers/{service}/permit and a
checkpoint's save skips the middleware chain and DRF's dispatch, and answers exactly as the full stack does; every
other case is the full stack's. A key is verified (and cached) by its first request, which the full stack serves:
the next request with it is the lane's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from core.access import authentication
from core.access.models import ApiKey
from core.api import hotlane
from recovery.checkpoints.models import Checkpoint, Task
from recovery.errors import services as error_services
from recovery.errors.models import ErrorEvent

pytestmark = pytest.mark.django_db

REPORT = {
    "service": "openai",
    "operation": "chat",
    "type": "RateLimitError",
    "message": "Rate limit reached for org 42",
    "status_code": 429,
    "headers": {"Retry-After": "20"},
}


@pytest.fixture
def lane(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The paths the lane served, in order."""
    served: list[str] = []
    serve = hotlane.HotLaneMiddleware._serve

    def spy(self: hotlane.HotLaneMiddleware, request: Any, *args: Any) -> Any:
        served.append(request.path)
        return serve(self, request, *args)

    monkeypatch.setattr(hotlane.HotLaneMiddleware, "_serve", spy)
    yield served


def _post(client: APIClient, body: Any = REPORT, path: str = "/api/v1/errors", **extra: Any) -> Any:
    return client.post(path, body, format="json", **extra)


def _shape(response: Any) -> tuple[int, list[str], Any]:
    """What must be the same whichever path answered: status, header names, and the body (ids aside)."""
    names = sorted(name.lower() for name in response.headers if name.lower() != "x-request-id")
    body = response.json()
    if isinstance(body, dict) and "pattern" in body:
        body = {**body, "pattern": None}
    return response.status_code, names, body


def test_it_answers_a_known_keys_report_on_the_lane_as_the_full_stack_does(
    agent_client: APIClient, lane: list[str]
) -> None:
    first = _post(agent_client)
    second = _post(agent_client)
    assert lane == ["/api/v1/errors"]  # the first verified the key, through the full stack
    assert _shape(second) == _shape(first)
    assert second.status_code == 201
    assert second["Allow"] == "POST, OPTIONS"
    assert second["Content-Length"] == str(len(second.content))
    assert second.json()["pattern"]["total_count"] == 2
    events = {e.request_id: e for e in ErrorEvent.objects.all()}
    assert set(events) == {first["X-Request-ID"], second["X-Request-ID"]}
    assert events[second["X-Request-ID"]].agent == agent_client.agent  # type: ignore[attr-defined]


def test_it_keeps_the_callers_request_id_on_the_lane(agent_client: APIClient, lane: list[str]) -> None:
    _post(agent_client)
    response = _post(agent_client, HTTP_X_REQUEST_ID="trace-42.a")
    assert lane == ["/api/v1/errors"]
    assert response["X-Request-ID"] == "trace-42.a"
    assert ErrorEvent.objects.filter(request_id="trace-42.a").count() == 1


def test_it_refuses_an_invalid_report_on_the_lane_as_the_full_stack_does(
    agent_client: APIClient, lane: list[str]
) -> None:
    bad = {**REPORT, "status_code": "teapot"}
    first = _post(agent_client, bad)
    second = _post(agent_client, bad)
    assert lane == ["/api/v1/errors"]
    assert second.status_code == 400
    assert _shape(second) == _shape(first)
    assert any(e["field"] == "status_code" for e in second.json()["errors"])
    assert ErrorEvent.objects.count() == 0


def test_it_refuses_malformed_json_on_the_lane_as_the_full_stack_does(
    agent_client: APIClient, lane: list[str]
) -> None:
    def broken() -> Any:
        return agent_client.post("/api/v1/errors", b'{"service": ', content_type="application/json")

    first, second = broken(), broken()
    assert lane == ["/api/v1/errors"]
    assert second.status_code == 400
    assert _shape(second) == _shape(first)


def test_it_leaves_a_keyed_request_to_the_full_stack(agent_client: APIClient, lane: list[str]) -> None:
    _post(agent_client)
    first = _post(agent_client, HTTP_IDEMPOTENCY_KEY="k-1")
    again = _post(agent_client, HTTP_IDEMPOTENCY_KEY="k-1")
    assert lane == []
    assert (first.status_code, again.status_code) == (201, 201)
    assert again["Idempotent-Replayed"] == "true"
    assert ErrorEvent.objects.count() == 2  # the unkeyed one and the keyed one, counted once


def test_it_refuses_a_key_revoked_in_this_process_at_once(agent_client: APIClient, lane: list[str]) -> None:
    _post(agent_client)
    key = ApiKey.objects.get(agent=agent_client.agent)  # type: ignore[attr-defined]
    authentication.forget_key(key)
    ApiKey.objects.filter(pk=key.pk).update(revoked_at="2026-01-01T00:00:00Z")
    response = _post(agent_client)
    assert lane == []
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="rebound"'


def test_it_leaves_a_viewer_to_the_full_stack_which_refuses_it(
    viewer_client: APIClient, lane: list[str]
) -> None:
    first, second = _post(viewer_client), _post(viewer_client)
    assert lane == []
    assert (first.status_code, second.status_code) == (403, 403)
    assert second.json()["detail"] == "Only agent keys and operators may report."


def test_it_serves_an_operators_key_on_the_lane(operator_client: APIClient, lane: list[str]) -> None:
    _post(operator_client)
    response = _post(operator_client)
    assert lane == ["/api/v1/errors"]
    assert response.status_code == 201
    event = ErrorEvent.objects.get(request_id=response["X-Request-ID"])
    assert event.agent is None


def test_it_leaves_a_body_over_the_limit_to_the_full_stack_which_answers_413(
    agent_client: APIClient, lane: list[str]
) -> None:
    _post(agent_client)
    with override_settings(API_MAX_BODY_BYTES=200):
        response = _post(agent_client, {**REPORT, "message": "x" * 300})
    assert lane == []
    assert response.status_code == 413
    assert response.json()["code"] == "body_too_large"


def test_it_leaves_other_media_types_to_the_full_stack_which_answers_415(
    agent_client: APIClient, lane: list[str]
) -> None:
    _post(agent_client)
    response = agent_client.post("/api/v1/errors", "service=openai", content_type="text/plain")
    assert lane == []
    assert response.status_code == 415


def test_it_answers_an_uncaught_failure_with_the_json_500_and_a_request_id(
    agent_client: APIClient, lane: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _post(agent_client)

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(error_services, "record_errors", fail)
    agent_client.raise_request_exception = False
    response = _post(agent_client)
    assert lane == ["/api/v1/errors"]
    assert response.status_code == 500
    assert response.json()["code"] == "server_error"
    assert response["X-Request-ID"]
    assert response["X-Content-Type-Options"] == "nosniff"


def test_it_counts_lane_requests_in_the_request_metrics(agent_client: APIClient, lane: list[str]) -> None:
    labels = {"status": "201", "view": "v1:errors", "method": "POST"}
    name = "django_http_responses_total_by_status_view_method_total"
    _post(agent_client)
    before = REGISTRY.get_sample_value(name, labels) or 0.0
    total_before = REGISTRY.get_sample_value("django_http_requests_total_by_method_total", {"method": "POST"})
    _post(agent_client)
    assert lane == ["/api/v1/errors"]
    assert REGISTRY.get_sample_value(name, labels) == before + 1
    total = REGISTRY.get_sample_value("django_http_requests_total_by_method_total", {"method": "POST"})
    assert total == (total_before or 0.0) + 1


def _request_samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """django-prometheus's request metrics now, but for the latencies' buckets and sums (timing varies)."""
    found = {}
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            timed = "latency" in sample.name and sample.name.endswith(("_bucket", "_sum"))
            if sample.name.startswith("django_http_") and not timed:
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _changed(before: dict[Any, float], after: dict[Any, float]) -> dict[Any, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def test_it_counts_every_request_metric_the_full_stack_counts(
    agent_client: APIClient, lane: list[str]
) -> None:
    start = _request_samples()
    _post(agent_client)  # the full stack: the key is not cached yet
    middle = _request_samples()
    _post(agent_client)  # the lane
    end = _request_samples()
    assert lane == ["/api/v1/errors"]
    assert _changed(middle, end) == _changed(start, middle)


def test_it_serves_a_permit_on_the_lane_as_the_full_stack_does(
    agent_client: APIClient, lane: list[str]
) -> None:
    path = "/api/v1/breakers/openai/permit"
    first = agent_client.post(path)
    second = agent_client.post(path)
    assert lane == [path]
    assert second.status_code == 200
    assert _shape(second) == _shape(first)
    assert second.json()["allowed"] is True


def test_it_refuses_a_bad_service_name_on_the_lane_naming_the_field(
    agent_client: APIClient, lane: list[str]
) -> None:
    agent_client.post("/api/v1/breakers/openai/permit")
    response = agent_client.post("/api/v1/breakers/Not%20A%20Slug/permit")
    assert lane == ["/api/v1/breakers/Not A Slug/permit"]
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "service"


def test_it_leaves_a_query_string_to_the_full_stack(agent_client: APIClient, lane: list[str]) -> None:
    agent_client.post("/api/v1/breakers/openai/permit")
    response = agent_client.post("/api/v1/breakers/openai/permit?x=1")
    assert lane == []
    assert response.status_code == 200


def test_it_leaves_the_bare_view_to_the_full_stack(lane: list[str]) -> None:
    response = APIClient().get("/healthz")
    assert lane == []
    assert response.status_code == 200


CHECKPOINTS = "/api/v1/tasks/inbox-1/checkpoints"


def test_it_saves_a_checkpoint_on_the_lane_as_the_full_stack_does(
    agent_client: APIClient, lane: list[str]
) -> None:
    first = _post(agent_client, {"state": {"page": 1}, "step": "fetch"}, CHECKPOINTS)
    second = _post(agent_client, {"state": {"page": 2}, "step": "fetch", "expected_seq": 1}, CHECKPOINTS)
    assert lane == [CHECKPOINTS]
    assert (first.status_code, second.status_code) == (201, 201)
    assert _shape(second)[1] == _shape(first)[1]
    assert second.json()["seq"] == 2
    task = Task.objects.get(task_id="inbox-1")
    assert task.last_seq == 2
    assert list(task.checkpoints.values_list("seq", "step")) == [(2, "fetch"), (1, "fetch")]


def test_it_keeps_a_states_integers_beyond_64_bits_on_the_lane(
    agent_client: APIClient, lane: list[str]
) -> None:
    # The lane hands the body to the checkpoint's own parser: the API's strict one refuses such integers.
    _post(agent_client, {"state": {}}, CHECKPOINTS)
    response = _post(agent_client, {"state": {"n": 2**70}}, CHECKPOINTS)
    assert lane == [CHECKPOINTS]
    assert response.status_code == 201
    latest = agent_client.get(f"{CHECKPOINTS}/latest")
    assert latest.json()["state"] == {"n": 2**70}


def test_it_refuses_an_operators_checkpoint_on_the_lane_as_the_full_stack_does(
    operator_client: APIClient, lane: list[str]
) -> None:
    first = _post(operator_client, {"state": {}}, CHECKPOINTS)
    second = _post(operator_client, {"state": {}}, CHECKPOINTS)
    assert lane == [CHECKPOINTS]
    assert second.status_code == 403
    assert _shape(second) == _shape(first)
    assert not Task.objects.exists()


def test_it_refuses_a_conflicting_checkpoint_on_the_lane_with_409(
    agent_client: APIClient, lane: list[str]
) -> None:
    _post(agent_client, {"state": {"page": 1}}, CHECKPOINTS)
    response = _post(agent_client, {"state": {"page": 9}, "expected_seq": 0}, CHECKPOINTS)
    assert lane == [CHECKPOINTS]
    assert response.status_code == 409
    assert response.json()["code"] == "seq_conflict"
    assert Checkpoint.objects.count() == 1


def test_it_serves_the_routes_the_views_register() -> None:
    names = {r.url_name for r in hotlane._routes}
    assert names == {"v1:errors", "v1:breaker-permit", "v1:checkpoints"}

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from recovery.errors.models import ErrorEvent, ErrorPattern
from tests.support.factories import rebound_settings

pytestmark = pytest.mark.django_db

RATE_LIMIT = {
    "service": "openai",
    "operation": "chat.completions",
    "type": "RateLimitError",
    "message": "Rate limit reached for org 42",
    "status_code": 429,
    "headers": {"Retry-After": "20"},
    "context": {"task": "t-1"},
}


def test_it_answers_201_with_the_classification_of_the_error(agent_client: Any) -> None:
    response = agent_client.post("/api/v1/errors", RATE_LIMIT, format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["error_class"] == "rate_limit"
    assert body["severity"] == "medium"
    assert body["retryable"] is True
    assert body["counts_toward_breaker"] is True
    assert body["needs_human"] is False
    assert body["retry_after_s"] == 20.0


def test_it_records_one_pattern_with_a_message_template(agent_client: Any) -> None:
    body = agent_client.post("/api/v1/errors", RATE_LIMIT, format="json").json()
    pattern = ErrorPattern.objects.get()
    assert body["fingerprint"] == pattern.fingerprint
    assert body["pattern"] == {"id": pattern.pk, "total_count": 1}
    assert (pattern.service, pattern.operation, pattern.error_class) == (
        "openai",
        "chat.completions",
        "rate_limit",
    )
    assert pattern.message_template == "Rate limit reached for org <n>"


def test_it_records_the_event_with_its_agent_rule_context_and_request_id(agent_client: Any) -> None:
    response = agent_client.post("/api/v1/errors", RATE_LIMIT, format="json")
    pattern = ErrorPattern.objects.get()
    event = ErrorEvent.objects.get()
    assert event.pattern_id == pattern.pk
    assert event.agent == agent_client.agent
    assert (event.status_code, event.retry_after_s, event.rule_name) == (429, 20.0, "rate limit (type)")
    assert event.context == {"task": "t-1"}
    assert event.request_id == response["X-Request-ID"]


def test_it_prefers_the_retry_after_field_over_the_header(agent_client: Any) -> None:
    body = {**RATE_LIMIT, "retry_after": "Wed, 21 Oct 2099 07:28:00 GMT"}
    response = agent_client.post("/api/v1/errors", body, format="json")
    assert response.json()["retry_after_s"] > 10_000


def test_it_counts_repeats_into_one_pattern(agent_client: Any) -> None:
    for n in range(3):
        agent_client.post(
            "/api/v1/errors", {**RATE_LIMIT, "message": f"Rate limit reached for org {n}"}, format="json"
        )
    pattern = ErrorPattern.objects.get()
    assert pattern.total_count == 3
    assert pattern.events.count() == 3
    assert pattern.first_seen_at <= pattern.last_seen_at


def test_it_records_a_batch_with_a_summary(agent_client: Any) -> None:
    batch = {
        "errors": [RATE_LIMIT, {"service": "stripe", "status_code": 503}, {"type": "ImproperlyConfigured"}],
        "successes": 7,
    }
    response = agent_client.post("/api/v1/errors", batch, format="json")
    assert response.status_code == 201
    body = response.json()
    assert [r["error_class"] for r in body["results"]] == ["rate_limit", "external_service", "fatal"]
    assert body["summary"] == {
        "total": 3,
        "successes": 7,
        "success_rate": 0.7,
        "by_class": {"rate_limit": 1, "external_service": 1, "fatal": 1},
        "by_severity": {"medium": 1, "high": 1, "critical": 1},
        "retryable": 2,
        "needs_human": 1,
        "critical": [2],
    }
    assert ErrorEvent.objects.count() == 3
    assert ErrorPattern.objects.count() == 3


def test_it_accepts_a_bare_list(agent_client: Any) -> None:
    response = agent_client.post("/api/v1/errors", [RATE_LIMIT, RATE_LIMIT], format="json")
    assert response.status_code == 201
    assert response.json()["summary"]["success_rate"] == 0.0
    assert ErrorPattern.objects.get().total_count == 2


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"service": "x"}, "body", "at least one of type, status_code or message"),
        ({"status_code": 99}, "status_code", "greater than or equal to 100"),
        ({"status_code": "abc"}, "status_code", "valid integer"),
        ({"message": 12}, "message", "valid string"),
        ({"service": "Not A Slug", "message": "x"}, "service", "should match pattern"),
        ({"message": "x", "retry_after": "soon"}, "retry_after", "seconds or an HTTP date"),
        ({"message": "x", "stauts_code": 500}, "stauts_code", "Extra inputs are not permitted"),
        ({"message": "x", "context": [1]}, "context", "valid dictionary"),
        ({"message": "x", "headers": {"a": 1}}, "headers.a", "valid string"),
        ([], "body", "at least one error"),
        ({"errors": [], "successes": 1}, "errors", "at least 1 item"),
        ({"errors": [{"message": "x"}], "successes": -1}, "successes", "greater than or equal to 0"),
        ("just a string", "body", "error object or a list"),
    ],
)
def test_it_refuses_bad_input_naming_the_field(
    agent_client: Any, body: Any, field: str, fragment: str
) -> None:
    response = agent_client.post("/api/v1/errors", body, format="json")
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert any(e["field"] == field and fragment in e["message"] for e in errors), errors
    assert ErrorEvent.objects.count() == 0


def test_it_records_nothing_when_one_item_of_a_batch_is_bad(agent_client: Any) -> None:
    response = agent_client.post(
        "/api/v1/errors", [RATE_LIMIT, RATE_LIMIT, {"status_code": 1000}], format="json"
    )
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"field": "[2].status_code", "message": "Input should be less than or equal to 599"}
    ]
    assert ErrorEvent.objects.count() == 0
    assert ErrorPattern.objects.count() == 0


def test_it_refuses_malformed_json(agent_client: Any) -> None:
    response = agent_client.generic("POST", "/api/v1/errors", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "body"
    assert ErrorEvent.objects.count() == 0


@override_settings(API_MAX_BODY_BYTES=2048)
def test_it_refuses_an_oversized_body_with_413(agent_client: Any) -> None:
    body = {"message": "x" * 5000}
    response = agent_client.post("/api/v1/errors", body, format="json")
    assert response.status_code == 413
    assert response.json()["errors"] == [{"field": "body", "message": "at most 2048 bytes"}]
    assert ErrorEvent.objects.count() == 0


@override_settings(REBOUND=rebound_settings(ERRORS_BATCH_MAX=2))
def test_it_refuses_a_batch_over_the_limit(agent_client: Any) -> None:
    response = agent_client.post("/api/v1/errors", [RATE_LIMIT] * 3, format="json")
    assert response.status_code == 400
    assert "at most 2 errors" in response.json()["detail"]
    assert ErrorEvent.objects.count() == 0


def test_it_classifies_without_recording(agent_client: Any) -> None:
    response = agent_client.post(
        "/api/v1/errors/classify", {"type": "httpx.ConnectTimeout", "message": "timed out"}, format="json"
    )
    assert response.status_code == 200
    body = response.json()
    assert body["error_class"] == "transient"
    assert body["matched_rule"]["name"] == "connection timeout (type)"
    assert body["why"][1] == "type 'httpx.ConnectTimeout' is one of the rule's types"
    assert ErrorEvent.objects.count() == 0
    assert ErrorPattern.objects.count() == 0


def test_it_refuses_to_classify_bad_input(agent_client: Any) -> None:
    response = agent_client.post("/api/v1/errors/classify", ["not", "an", "object"], format="json")
    assert response.status_code == 400


def test_it_lists_patterns_newest_first_with_recent_counts(agent_client: Any) -> None:
    agent_client.post("/api/v1/errors", {"service": "a", "status_code": 503}, format="json")
    agent_client.post("/api/v1/errors", {"service": "b", "status_code": 401}, format="json")
    agent_client.post("/api/v1/errors", {"service": "b", "status_code": 401}, format="json")
    body = agent_client.get("/api/v1/patterns").json()
    assert body["count"] == 2
    first = body["results"][0]
    assert (first["service"], first["total_count"], first["recent_5m"], first["recent_60m"]) == ("b", 2, 2, 2)
    assert agent_client.get("/api/v1/patterns?error_class=authentication").json()["count"] == 1
    assert agent_client.get("/api/v1/patterns?severity=high&service=a").json()["count"] == 1
    assert agent_client.get("/api/v1/patterns?since=2999-01-01T00:00:00Z").json()["count"] == 0
    assert agent_client.get("/api/v1/patterns?page_size=1").json()["next"] is not None
    detail = agent_client.get(f"/api/v1/patterns/{first['id']}")
    assert detail.json()["fingerprint"] == first["fingerprint"]


@pytest.mark.parametrize(
    ("query", "field"),
    [("error_class=bogus", "error_class"), ("severity=huge", "severity"), ("since=yesterday", "since")],
)
def test_it_refuses_bad_pattern_filters(agent_client: Any, query: str, field: str) -> None:
    response = agent_client.get(f"/api/v1/patterns?{query}")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == field


def test_it_refuses_reports_without_a_key() -> None:
    response = APIClient().post("/api/v1/errors", RATE_LIMIT, format="json")
    assert response.status_code == 401
    assert ErrorEvent.objects.count() == 0


def test_it_refuses_reports_from_viewers(viewer_client: Any) -> None:
    response = viewer_client.post("/api/v1/errors", RATE_LIMIT, format="json")
    assert response.status_code == 403
    assert ErrorEvent.objects.count() == 0


def test_it_lets_operators_report_for_their_scripts(operator_client: Any) -> None:
    response = operator_client.post("/api/v1/errors", RATE_LIMIT, format="json")
    assert response.status_code == 201
    assert ErrorEvent.objects.get().agent is None


def test_it_counts_errors_in_metrics_once_committed(
    agent_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    def value() -> float:
        text = agent_client.get("/metrics").content.decode()
        for line in text.splitlines():
            if line.startswith('errors_total{error_class="rate_limit",severity="medium"}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = value()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        agent_client.post("/api/v1/errors", [RATE_LIMIT, RATE_LIMIT], format="json")
    assert len(callbacks) == 1
    assert value() == before + 2


def test_it_echoes_a_safe_request_id_and_replaces_an_unsafe_one(agent_client: Any) -> None:
    ok = agent_client.post("/api/v1/errors", RATE_LIMIT, format="json", HTTP_X_REQUEST_ID="trace-123")
    assert ok["X-Request-ID"] == "trace-123"
    assert ErrorEvent.objects.get().request_id == "trace-123"
    bad = agent_client.post("/api/v1/errors", RATE_LIMIT, format="json", HTTP_X_REQUEST_ID="x\ny" * 40)
    assert bad["X-Request-ID"] != "x\ny" * 40
    assert len(bad["X-Request-ID"]) == 32


def test_it_stores_context_exactly(agent_client: Any) -> None:
    context = {"nested": {"list": [1, 2.5, None, True]}, "unicode": "héllo"}
    agent_client.post("/api/v1/errors", {"message": "x", "context": context}, format="json")
    assert json.loads(json.dumps(ErrorEvent.objects.get().context)) == context

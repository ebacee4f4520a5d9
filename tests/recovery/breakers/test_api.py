from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.test import override_settings
from django.utils import timezone

from core.audit.models import AuditEvent
from recovery.breakers import services as breaker_services
from recovery.breakers import store as breaker_store
from recovery.breakers.models import BreakerTransition, Service
from recovery.breakers.store import DatabaseStore, RedisStore
from recovery.errors.models import ErrorEvent
from tests.support.factories import rebound_settings

pytestmark = pytest.mark.django_db

FAIL_503 = {"service": "svc", "success": False, "error": {"status_code": 503}}
OK = {"service": "svc", "success": True, "duration_ms": 12}


@pytest.fixture(params=["database", pytest.param("redis", marks=pytest.mark.redis)], autouse=True)
def store_kind(request: Any) -> str:
    from django.conf import settings

    breaker_store.use_store(
        DatabaseStore()
        if request.param == "database"
        else RedisStore(redis.Redis.from_url(settings.TEST_REDIS_URL))
    )
    return str(request.param)


def small_breaker(name: str = "svc", **settings: Any) -> Service:
    values = {
        "minimum_calls": 4,
        "window_size": 10,
        "consecutive_failures": 0,
        "wait_duration_s": 30,
        "half_open_max_calls": 2,
        **settings,
    }
    return Service.objects.create(name=name, **values)


def trip(client: Any, name: str = "svc") -> None:
    response = client.post("/api/v1/outcomes", [{**FAIL_503, "service": name}] * 4, format="json")
    assert response.status_code == 200, response.json()


def test_it_registers_an_unknown_service_at_its_first_permit(agent_client: Any) -> None:
    response = agent_client.post("/api/v1/breakers/new-tool/permit")
    assert response.status_code == 200
    assert response.json() == {
        "service": "new-tool",
        "allowed": True,
        "state": "closed",
        "retry_after_s": None,
        "permit_id": None,
        "reason": "closed",
    }
    service = Service.objects.get(name="new-tool")
    assert (service.auto_registered, service.criticality, service.failure_rate_threshold) == (
        True,
        "non_critical",
        50,
    )


@override_settings(REBOUND=rebound_settings(AUTO_REGISTER_SERVICES=False))
def test_it_answers_404_for_unknown_services_when_registration_is_off(agent_client: Any) -> None:
    response = agent_client.post("/api/v1/breakers/new-tool/permit")
    assert response.status_code == 404
    assert "automatic registration is off" in response.json()["detail"]
    assert not Service.objects.exists()
    outcome = agent_client.post("/api/v1/outcomes", {**OK, "service": "new-tool"}, format="json")
    assert outcome.status_code == 404


def test_it_refuses_a_service_that_is_not_a_slug(agent_client: Any) -> None:
    response = agent_client.post("/api/v1/breakers/Not%20Slug/permit")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "service"


def _trip(agent_client: Any) -> list[dict[str, Any]]:
    small_breaker()
    response = agent_client.post(
        "/api/v1/outcomes", {"outcomes": [OK, FAIL_503, FAIL_503, FAIL_503]}, format="json"
    )
    return response.json()["results"]  # type: ignore[no-any-return]


def test_it_trips_the_breaker_on_the_failure_that_crosses_the_threshold(agent_client: Any) -> None:
    results = _trip(agent_client)
    assert [r["state"] for r in results] == ["closed", "closed", "closed", "open"]
    assert results[2]["error_class"] == "external_service" and results[2]["counted"] is True


def test_it_says_why_a_breaker_tripped_with_its_window(agent_client: Any) -> None:
    results = _trip(agent_client)
    transition = results[3]["transition"]
    assert (transition["from_state"], transition["to_state"]) == ("closed", "open")
    assert transition["reason"] == "failure rate 75% over the last 4 calls (threshold 50%)"
    assert transition["window"]["calls"] == 4 and transition["window"]["failures"] == 3
    assert transition["window"]["patterns"][0]["count"] == 3


def test_it_records_the_trip_by_the_agent_and_the_failures_as_errors(agent_client: Any) -> None:
    _trip(agent_client)
    row = BreakerTransition.objects.get()
    assert (row.actor, row.actor_agent, row.to_state) == ("agent", agent_client.agent, "open")
    assert ErrorEvent.objects.count() == 3


def test_it_refuses_permits_while_a_tripped_breaker_is_open(agent_client: Any) -> None:
    _trip(agent_client)
    permit = agent_client.post("/api/v1/breakers/svc/permit").json()
    assert (permit["allowed"], permit["state"], permit["reason"]) == (False, "open", "open")
    assert 29 < permit["retry_after_s"] <= 30


def test_it_shows_everyone_a_tripped_breaker_and_why(agent_client: Any, viewer_client: Any) -> None:
    transition = _trip(agent_client)[3]["transition"]
    view = viewer_client.get("/api/v1/breakers/svc").json()
    assert (view["state"], view["why"]["reason"]) == ("open", transition["reason"])
    assert view["open_until"] is not None
    assert view["why"]["window"]["patterns"][0]["message_template"] == ""


def test_the_callers_own_errors_never_trip_it(agent_client: Any) -> None:
    small_breaker()
    bad = [
        {"service": "svc", "success": False, "error": {"status_code": code}} for code in (400, 401, 403, 422)
    ]
    results = agent_client.post("/api/v1/outcomes", bad * 2, format="json").json()["results"]
    assert all(r["state"] == "closed" and r["counted"] is False for r in results)
    assert agent_client.get("/api/v1/breakers/svc").json()["window"]["calls"] == 0


def test_a_rate_limit_opens_it_until_retry_after(agent_client: Any) -> None:
    small_breaker()
    body = {
        "service": "svc",
        "success": False,
        "error": {"status_code": 429, "headers": {"Retry-After": "120"}},
    }
    result = agent_client.post("/api/v1/outcomes", body, format="json").json()
    assert result["transition"]["reason"] == "rate limited: Retry-After 120 s"
    assert 119 < agent_client.post("/api/v1/breakers/svc/permit").json()["retry_after_s"] <= 120


def test_slow_calls_count_as_failures_when_configured(agent_client: Any) -> None:
    small_breaker(slow_call_ms=1000)
    slow = {"service": "svc", "success": True, "duration_ms": 1500}
    results = agent_client.post("/api/v1/outcomes", [slow] * 4, format="json").json()["results"]
    assert results[-1]["state"] == "open"


def test_a_failure_without_an_error_counts(agent_client: Any) -> None:
    small_breaker()
    results = agent_client.post("/api/v1/outcomes", [{"service": "svc", "success": False}] * 4, format="json")
    assert results.json()["results"][-1]["state"] == "open"
    assert ErrorEvent.objects.count() == 0


def test_half_open_grants_trials_and_closes_on_success(agent_client: Any) -> None:
    small_breaker(wait_duration_s=0.2, max_wait_s=1, success_threshold=2)
    trip(agent_client)
    time.sleep(0.25)
    first = agent_client.post("/api/v1/breakers/svc/permit").json()
    second = agent_client.post("/api/v1/breakers/svc/permit").json()
    third = agent_client.post("/api/v1/breakers/svc/permit").json()
    assert (first["state"], first["allowed"], bool(first["permit_id"])) == ("half_open", True, True)
    assert (second["allowed"], third["allowed"]) == (True, False)
    outcomes = [{**OK, "permit_id": first["permit_id"]}, {**OK, "permit_id": second["permit_id"]}]
    results = agent_client.post("/api/v1/outcomes", outcomes, format="json").json()["results"]
    assert results[1]["state"] == "closed"
    assert list(BreakerTransition.objects.order_by("id").values_list("to_state", flat=True)) == [
        "open",
        "half_open",
        "closed",
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"service": "svc", "success": True, "error": {"status_code": 500}}, "body"),
        ({"service": "svc"}, "success"),
        ({"service": "svc", "success": "maybe"}, "success"),
        ({"service": "svc", "success": True, "duration_ms": -1}, "duration_ms"),
        ({"service": "svc", "success": False, "error": {"status_code": 99}}, "error.status_code"),
        ({"service": "svc", "success": False, "error": {"service": "other", "status_code": 500}}, "body"),
        ({"success": True}, "service"),
        ([], "body"),
    ],
)
def test_it_refuses_bad_outcomes_and_counts_none(agent_client: Any, body: Any, field: str) -> None:
    response = agent_client.post(
        "/api/v1/outcomes", [OK, body] if isinstance(body, dict) else body, format="json"
    )
    assert response.status_code == 400
    prefix = "[1]." if isinstance(body, dict) else ""
    fields = [e["field"] for e in response.json()["errors"]]
    assert any(f in (f"{prefix}{field}", "[1]" if field == "body" else "", field) for f in fields), fields
    assert ErrorEvent.objects.count() == 0
    assert not Service.objects.filter(name="svc").exists()


def test_an_operator_forces_it_open_for_everyone_audited(agent_client: Any, operator_client: Any) -> None:
    small_breaker()
    until = (timezone.now() + timedelta(hours=1)).isoformat()
    response = operator_client.post(
        "/api/v1/breakers/svc/override",
        {"mode": "forced_open", "reason": "provider incident", "expires_at": until},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["state"] == "forced_open"
    service = Service.objects.get(name="svc")
    assert (service.override, service.override_reason) == ("forced_open", "provider incident")
    permit = agent_client.post("/api/v1/breakers/svc/permit").json()
    assert (permit["allowed"], permit["state"]) == (False, "forced_open")
    event = AuditEvent.objects.get(action="breaker.override")
    assert (event.reason, event.before["override"], event.after["override"]) == (
        "provider incident",
        "auto",
        "forced_open",
    )
    transition = BreakerTransition.objects.get()
    assert (transition.from_state, transition.to_state, transition.actor, transition.actor_user) == (
        "closed",
        "forced_open",
        "user",
        operator_client.user,
    )
    back = operator_client.post(
        "/api/v1/breakers/svc/override", {"mode": "auto", "reason": "resolved"}, format="json"
    )
    assert back.json()["state"] == "closed"
    assert agent_client.post("/api/v1/breakers/svc/permit").json()["allowed"] is True


def test_disabled_records_outcomes_but_never_blocks(agent_client: Any, operator_client: Any) -> None:
    small_breaker()
    operator_client.post(
        "/api/v1/breakers/svc/override", {"mode": "disabled", "reason": "noisy"}, format="json"
    )
    results = agent_client.post("/api/v1/outcomes", [FAIL_503] * 6, format="json").json()["results"]
    assert all(r["state"] == "disabled" for r in results)
    assert agent_client.post("/api/v1/breakers/svc/permit").json()["allowed"] is True
    view = agent_client.get("/api/v1/breakers/svc").json()
    assert (view["window"]["calls"], view["window"]["failures"], view["automatic_state"]) == (6, 6, "closed")


def test_an_expired_override_returns_to_automatic(agent_client: Any) -> None:
    service = small_breaker(
        override="forced_open", override_reason="x", override_until=timezone.now() - timedelta(seconds=1)
    )
    assert agent_client.post("/api/v1/breakers/svc/permit").json()["allowed"] is True
    assert breaker_services.expire_overrides() == 1
    service.refresh_from_db()
    assert (service.override, service.override_reason, service.override_until) == ("auto", "", None)
    transition = BreakerTransition.objects.get()
    assert (transition.from_state, transition.to_state, transition.actor) == (
        "forced_open",
        "closed",
        "automatic",
    )
    assert breaker_services.expire_overrides() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"mode": "forced_open"}, "reason"),
        ({"mode": "forced_open", "reason": "   "}, "reason"),
        ({"mode": "sideways", "reason": "x"}, "mode"),
        ({"mode": "forced_open", "reason": "x", "expires_at": "2000-01-01T00:00:00Z"}, "expires_at"),
        ({"mode": "forced_open", "reason": "x", "expires_at": "tomorrow"}, "expires_at"),
    ],
)
def test_it_refuses_bad_overrides(operator_client: Any, body: dict[str, Any], field: str) -> None:
    small_breaker()
    response = operator_client.post("/api/v1/breakers/svc/override", body, format="json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == field
    assert Service.objects.get(name="svc").override == "auto"
    assert not AuditEvent.objects.filter(action="breaker.override").exists()


def test_agents_and_viewers_cannot_override(agent_client: Any, viewer_client: Any) -> None:
    small_breaker()
    body = {"mode": "forced_open", "reason": "x"}
    assert agent_client.post("/api/v1/breakers/svc/override", body, format="json").status_code == 403
    assert viewer_client.post("/api/v1/breakers/svc/override", body, format="json").status_code == 403
    assert Service.objects.get(name="svc").override == "auto"


def test_an_operator_changes_settings_without_a_restart(agent_client: Any, operator_client: Any) -> None:
    small_breaker(minimum_calls=100)
    agent_client.post("/api/v1/outcomes", [FAIL_503] * 3, format="json")
    response = operator_client.patch(
        "/api/v1/services/svc",
        {"minimum_calls": 4, "criticality": "essential", "reason": "too lenient"},
        format="json",
    )
    assert response.status_code == 200
    service = Service.objects.get(name="svc")
    assert (service.minimum_calls, service.criticality) == (4, "essential")
    event = AuditEvent.objects.get(action="service.update")
    assert (event.before["minimum_calls"], event.after["minimum_calls"]) == (100, 4)
    result = agent_client.post("/api/v1/outcomes", FAIL_503, format="json").json()
    assert result["state"] == "open"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"failure_rate_threshold": 150, "reason": "x"}, "failure_rate_threshold"),
        ({"window_type": "forever", "reason": "x"}, "window_type"),
        ({"wait_multiplier": 0.5, "reason": "x"}, "wait_multiplier"),
        ({"override": "forced_open", "reason": "x"}, "override"),
        ({"minimum_calls": 5}, "reason"),
        ({"wait_duration_s": 600, "reason": "x"}, "body"),
    ],
)
def test_it_refuses_bad_settings(operator_client: Any, body: dict[str, Any], field: str) -> None:
    small_breaker()
    response = operator_client.patch("/api/v1/services/svc", body, format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["errors"][0]["field"] == field
    assert Service.objects.get(name="svc").minimum_calls == 4


def test_services_and_breakers_are_listed(agent_client: Any) -> None:
    small_breaker("a")
    small_breaker("b")
    assert [s["name"] for s in agent_client.get("/api/v1/services").json()] == ["a", "b"]
    assert agent_client.get("/api/v1/services/a").json()["minimum_calls"] == 4
    assert agent_client.get("/api/v1/services/zzz").status_code == 404
    breakers_list = agent_client.get("/api/v1/breakers").json()
    assert [(b["service"], b["state"]) for b in breakers_list] == [("a", "closed"), ("b", "closed")]
    assert agent_client.get("/api/v1/breakers/zzz").status_code == 404


def test_status_gives_the_fleet_at_a_glance(agent_client: Any) -> None:
    small_breaker("a")
    small_breaker("b")
    trip(agent_client, "b")
    status = agent_client.get("/api/v1/status").json()
    assert status["breakers"] == {"closed": 1, "open": 1}
    assert status["errors_last_5m"] == {"external_service": 4}
    assert status["errors_last_60m"] == {"external_service": 4}
    assert status["top_patterns"][0]["recent_60m"] == 4


def test_it_fails_open_or_closed_by_criticality_when_redis_is_unreachable(agent_client: Any) -> None:
    breaker_store.use_store(RedisStore(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)))
    small_breaker("core", criticality="essential")
    small_breaker("extra", criticality="non_critical")
    core = agent_client.post("/api/v1/breakers/core/permit").json()
    extra = agent_client.post("/api/v1/breakers/extra/permit").json()
    assert (core["allowed"], core["state"]) == (True, "unknown")
    assert (extra["allowed"], extra["state"]) == (False, "unknown")
    assert "unreachable: failing closed" in extra["reason"]
    outcome = agent_client.post("/api/v1/outcomes", {**FAIL_503, "service": "core"}, format="json")
    assert outcome.status_code == 200
    assert (outcome.json()["state"], outcome.json()["counted"]) == ("unknown", False)
    assert ErrorEvent.objects.count() == 1  # the error itself is still recorded
    assert agent_client.get("/api/v1/breakers/core").json()["state"] == "unknown"
    metrics = agent_client.get("/metrics").content.decode()
    assert 'breaker_store_errors_total{criticality="non_critical",decision="closed"}' in metrics


def test_it_exposes_breaker_metrics(agent_client: Any, django_capture_on_commit_callbacks: Any) -> None:
    small_breaker()
    with django_capture_on_commit_callbacks(execute=True):
        trip(agent_client)
    agent_client.post("/api/v1/breakers/svc/permit")
    text = agent_client.get("/metrics").content.decode()
    assert 'circuit_breaker_state{service="svc"} 2.0' in text
    assert 'breaker_transitions_total{from_state="closed",service="svc",to_state="open"}' in text
    assert 'breaker_permits_total{allowed="false",service="svc"}' in text


def test_long_poll_returns_transitions_after_an_id(agent_client: Any) -> None:
    small_breaker()
    trip(agent_client)
    body = agent_client.get("/api/v1/breakers/events?after=0").json()
    assert [e["to_state"] for e in body["events"]] == ["open"]
    again = agent_client.get(f"/api/v1/breakers/events?after={body['last_id']}&wait=0").json()
    assert again == {"events": [], "last_id": body["last_id"]}
    assert agent_client.get("/api/v1/breakers/events?after=x").status_code == 400


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_long_poll_wakes_when_a_breaker_trips(agent_client: Any) -> None:
    small_breaker()
    tripper = threading.Timer(
        0.5, lambda: (trip(agent_client), __import__("django.db").db.connection.close())
    )
    started = time.monotonic()
    tripper.start()
    body = agent_client.get("/api/v1/breakers/events?after=0&wait=10").json()
    tripper.join()
    assert [e["to_state"] for e in body["events"]] == ["open"]
    assert time.monotonic() - started < 5


@pytest.mark.slow
@override_settings(REBOUND=rebound_settings(BREAKER_STREAM_MAX_SECONDS=1.0))
def test_the_event_stream_sends_transitions_as_server_sent_events(agent_client: Any) -> None:
    small_breaker()
    trip(agent_client)
    response = agent_client.get("/api/v1/breakers/stream?after=0", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    text = b"".join(response.streaming_content).decode()
    assert text.startswith("retry: 1000\n\n")
    assert "event: transition\n" in text
    assert '"to_state": "open"' in text

"""Issue 12: health checks drive the fleet-wide breakers (services.health_verdict), and the built-in healing
action reset_breaker closes one (services.reset_breaker). Both stores, through the service layer: the
transition rows and their actor, what every process's next permit finds, the overrides that win, the audit."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import DatabaseError

from core.api.errors import InvalidInput, NotFound
from core.audit.models import AuditEvent
from core.audit.services import Actor
from recovery import metrics
from recovery.breakers import registry, signals
from recovery.breakers import services as breaker_services
from recovery.breakers import store as breaker_store
from recovery.breakers.models import BreakerState, BreakerTransition, Service
from recovery.breakers.store import BreakerStore, DatabaseStore, RedisStore
from tests.support import factories
from tests.support.admin_helpers import url

pytestmark = pytest.mark.django_db

FAILED = "GET http://127.0.0.1:9/health answered 503 in 12 ms"
PASSED = "GET http://127.0.0.1:9/health answered 200 in 3 ms"
FAIL_503 = {"service": "svc", "success": False, "error": {"status_code": 503}}


def new_store(kind: str) -> BreakerStore:
    """A store as another process has it: its own client (or none), nothing shared but Redis or the database."""
    if kind == "database":
        return DatabaseStore()
    return RedisStore(redis.Redis.from_url(settings.TEST_REDIS_URL))


@pytest.fixture(params=["database", pytest.param("redis", marks=pytest.mark.redis)])
def kind(request: Any) -> Iterator[str]:
    breaker_store.use_store(new_store(request.param))
    yield str(request.param)
    breaker_store.use_store(None)


def small_breaker(**values: Any) -> Service:
    return Service.objects.create(
        name="svc", **{"minimum_calls": 4, "window_size": 10, "consecutive_failures": 0, **values}
    )


def unhealthy(reason: str = FAILED) -> str:
    return breaker_services.health_verdict("svc", healthy=False, check="api-ping", reason=reason)


def healthy() -> str:
    return breaker_services.health_verdict("svc", healthy=True, check="api-ping", reason=PASSED)


def other_process_permit(kind: str) -> Any:
    """A permit as another process asks it: a fresh store, and a cache of the service read before."""
    service = Service.objects.get(name="svc")
    return new_store(kind).permit(service, registry.config_of(service), "other")


def operator_actor() -> Actor:
    return Actor(user=factories.operator())


# --- health checks drive breakers -----------------------------------------------------------------------


def test_it_opens_the_breaker_for_the_fleet_on_an_unhealthy_verdict(kind: str, agent_client: Any) -> None:
    small_breaker()
    assert unhealthy() == "opened"
    row = BreakerTransition.objects.get()
    assert (row.from_state, row.to_state, row.reason, row.actor, row.actor_name) == (
        "closed",
        "open",
        FAILED,
        "health_check",
        "api-ping",
    )
    assert row.actor_label == "health check api-ping"
    denied = other_process_permit(kind)
    assert (denied.allowed, denied.state) == (False, "open")
    permit = agent_client.post("/api/v1/breakers/svc/permit").json()
    assert (permit["allowed"], permit["state"]) == (False, "open")
    assert permit["retry_after_s"] > 86_000  # held open until the check says otherwise (capped)


def test_the_breakers_why_and_the_events_show_the_check(kind: str, agent_client: Any) -> None:
    small_breaker()
    unhealthy()
    why = agent_client.get("/api/v1/breakers/svc").json()["why"]
    assert (why["reason"], why["actor"], why["actor_name"], why["actor_label"]) == (
        FAILED,
        "health_check",
        "api-ping",
        "health check api-ping",
    )
    [event] = agent_client.get("/api/v1/breakers/events?after=0").json()["events"]
    assert (event["actor"], event["actor_name"], event["actor_label"], event["reason"]) == (
        "health_check",
        "api-ping",
        "health check api-ping",
        FAILED,
    )


def test_it_re_extends_an_open_breaker_without_a_second_row(kind: str) -> None:
    small_breaker()
    assert [unhealthy(), unhealthy(), unhealthy()] == ["opened", "already open", "already open"]
    assert BreakerTransition.objects.count() == 1


def test_it_moves_an_open_breaker_to_half_open_on_a_healthy_verdict(kind: str, agent_client: Any) -> None:
    small_breaker(half_open_max_calls=2)
    unhealthy()
    assert healthy() == "moved to half_open"
    rows = list(BreakerTransition.objects.order_by("id").values_list("from_state", "to_state", "actor_name"))
    assert rows == [("closed", "open", "api-ping"), ("open", "half_open", "api-ping")]
    assert BreakerTransition.objects.order_by("id").last().reason == PASSED  # type: ignore[union-attr]
    trials = [agent_client.post("/api/v1/breakers/svc/permit").json() for _ in range(3)]
    assert [(t["allowed"], t["state"]) for t in trials] == [
        (True, "half_open"),
        (True, "half_open"),
        (False, "half_open"),
    ]
    assert all(t["permit_id"] for t in trials[:2])


def test_a_healthy_verdict_leaves_a_closed_breaker_closed(kind: str) -> None:
    small_breaker()
    assert healthy() == "unchanged: closed"
    assert not BreakerTransition.objects.exists()
    assert other_process_permit(kind).allowed is True


@pytest.mark.parametrize("mode", ["forced_open", "forced_closed", "disabled"])
def test_an_operators_override_wins_over_the_verdict(kind: str, mode: str) -> None:
    small_breaker()
    breaker_services.set_override(
        name="svc", mode=mode, reason="incident", expires_at=None, actor=operator_actor()
    )
    rows_before = BreakerTransition.objects.count()
    assert unhealthy() == f"override {mode} in force: verdict not applied"
    assert healthy() == f"override {mode} in force: verdict not applied"
    assert BreakerTransition.objects.count() == rows_before  # the override's own row only
    assert other_process_permit(kind).state == mode
    breaker_services.set_override(
        name="svc", mode="auto", reason="over", expires_at=None, actor=operator_actor()
    )
    assert other_process_permit(kind).state == "closed"  # the verdict was never applied underneath


def test_a_verdict_registers_an_unknown_service(kind: str) -> None:
    assert breaker_services.health_verdict("brand-new", healthy=False, check="c", reason=FAILED) == "opened"
    service = Service.objects.get(name="brand-new")
    assert service.auto_registered is True
    assert BreakerTransition.objects.get().service == service


def test_a_verdict_on_a_name_that_is_no_slug_is_refused() -> None:
    with pytest.raises(InvalidInput) as error:
        breaker_services.health_verdict("Not A Slug", healthy=False, check="c", reason=FAILED)
    assert error.value.field == "service"


def test_a_verdict_is_announced_counted_and_signalled_like_any_transition(
    kind: str, django_capture_on_commit_callbacks: Any
) -> None:
    small_breaker()
    seen: list[list[BreakerTransition]] = []

    def receiver(sender: Any, rows: list[BreakerTransition], **kwargs: Any) -> None:
        seen.append(rows)

    signals.transitions_committed.connect(receiver, weak=False)
    counter = metrics.breaker_transitions_total.labels(service="svc", from_state="closed", to_state="open")
    before = counter._value.get()
    try:
        with django_capture_on_commit_callbacks(execute=True):
            unhealthy()
    finally:
        signals.transitions_committed.disconnect(receiver)
    assert [[row.actor_name for row in rows] for rows in seen] == [["api-ping"]]
    assert counter._value.get() == before + 1
    assert metrics.circuit_breaker_state.labels(service="svc")._value.get() == 2  # open
    assert breaker_store.current_store().pending(Service.objects.get(name="svc")) == []  # acknowledged


def test_a_verdict_whose_row_cannot_be_written_is_written_later_with_its_check(
    kind: str, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    service = small_breaker()
    manager_class = type(BreakerTransition.objects)
    real = manager_class.bulk_create
    refused: list[int] = []

    def bulk_create(manager: Any, objs: Any, *args: Any, **kwargs: Any) -> Any:
        if manager.model is BreakerTransition and not refused:
            refused.append(1)
            raise DatabaseError("forced: the database cannot be reached")
        return real(manager, objs, *args, **kwargs)

    monkeypatch.setattr(manager_class, "bulk_create", bulk_create)
    assert unhealthy() == "opened"
    assert not BreakerTransition.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        assert breaker_services.flush_pending([service], grace_ms=0) == 1
    row = BreakerTransition.objects.get()
    assert (row.actor, row.actor_name, row.reason) == ("health_check", "api-ping", FAILED)


def test_a_lost_state_is_rebuilt_before_the_verdict_is_applied(kind: str) -> None:
    service = small_breaker()
    unhealthy()
    breaker_services.flush_pending([service], grace_ms=0)  # acknowledged, as a committed row would be
    breaker_store.current_store().reset(service)  # a Redis restart without persistence; a lost row
    if kind == "redis":
        assert not redis.Redis.from_url(settings.TEST_REDIS_URL).exists("rebound:breaker:{svc}:state")
    else:
        assert not BreakerState.objects.filter(service=service).exists()
    assert unhealthy() == "already open"  # rebuilt from the check's row: open, not closed
    assert healthy() == "moved to half_open"
    assert list(BreakerTransition.objects.order_by("id").values_list("to_state", flat=True)) == [
        "open",
        "half_open",
    ]


def test_the_admin_names_the_check_as_the_actor(kind: str, operator: Any) -> None:
    small_breaker()
    unhealthy()
    transition = BreakerTransition.objects.get()
    listed = operator.get(url("recovery_breakertransition_changelist")).content.decode()
    shown = operator.get(url("recovery_breakertransition_change", transition.pk)).content.decode()
    assert "health check api-ping" in listed
    assert "health check api-ping" in shown and FAILED in shown


@pytest.mark.redis
def test_without_the_store_a_verdict_is_not_applied_and_says_so() -> None:
    small_breaker()
    breaker_store.use_store(RedisStore(redis.Redis(port=1, socket_connect_timeout=0.2)))
    try:
        assert unhealthy() == "breaker store unreachable: verdict not applied"
    finally:
        breaker_store.use_store(None)
    assert not BreakerTransition.objects.exists()


# --- reset_breaker --------------------------------------------------------------------------------------


def test_reset_breaker_closes_an_open_breaker_and_empties_its_window(kind: str, agent_client: Any) -> None:
    small_breaker()
    agent_client.post("/api/v1/outcomes", [FAIL_503] * 4, format="json")
    actor = operator_actor()
    assert breaker_services.reset_breaker("svc", reason="healing run 7", actor=actor) == "closed (was open)"
    row = BreakerTransition.objects.order_by("id").last()
    assert row is not None
    assert (row.from_state, row.to_state, row.reason, row.actor, row.actor_user) == (
        "open",
        "closed",
        "reset: healing run 7",
        "user",
        actor.user,
    )
    event = AuditEvent.objects.get(action="breaker.reset")
    assert (event.reason, event.before, event.after, event.target_id) == (
        "healing run 7",
        {"state": "open"},
        {"state": "closed", "override": "auto"},
        str(row.service_id),
    )
    live = agent_client.get("/api/v1/breakers/svc").json()
    assert (live["state"], live["window"]["calls"], live["window"]["failures"]) == ("closed", 0, 0)
    assert other_process_permit(kind).allowed is True


def test_reset_breaker_empties_the_window_of_a_closed_breaker(kind: str, agent_client: Any) -> None:
    small_breaker()
    agent_client.post("/api/v1/outcomes", [FAIL_503] * 3, format="json")
    answer = breaker_services.reset_breaker("svc", reason="run 8", actor=Actor(source="system"))
    assert answer == "already closed: window emptied"
    assert not BreakerTransition.objects.exists()
    assert agent_client.get("/api/v1/breakers/svc").json()["window"]["calls"] == 0
    assert AuditEvent.objects.filter(action="breaker.reset", actor_label="system").count() == 1
    agent_client.post("/api/v1/outcomes", [FAIL_503], format="json")
    assert agent_client.get("/api/v1/breakers/svc").json()["state"] == "closed"  # 1 of 4, not 4 of 4


def test_reset_breaker_leaves_an_override_in_force(kind: str) -> None:
    small_breaker()
    unhealthy()
    breaker_services.set_override(
        name="svc", mode="forced_open", reason="incident", expires_at=None, actor=operator_actor()
    )
    answer = breaker_services.reset_breaker("svc", reason="run 9", actor=Actor(source="system"))
    assert answer == "closed (was open); override forced_open still in force"
    assert other_process_permit(kind).state == "forced_open"
    assert Service.objects.get(name="svc").override == "forced_open"


def test_reset_breaker_refuses_an_unknown_service_and_a_blank_reason(kind: str) -> None:
    with pytest.raises(NotFound):
        breaker_services.reset_breaker("nobody", reason="x", actor=Actor(source="system"))
    assert not Service.objects.filter(name="nobody").exists()
    small_breaker()
    with pytest.raises(InvalidInput) as error:
        breaker_services.reset_breaker("svc", reason="  ", actor=Actor(source="system"))
    assert error.value.field == "reason"
    assert not AuditEvent.objects.filter(action="breaker.reset").exists()

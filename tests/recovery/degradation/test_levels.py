"""Graceful degradation against the real PostgreSQL and Redis: levels from real breakers through the rules, with
hysteresis; operators' forced levels (audited) and their expiry; one event per change, even under concurrent
evaluations; and the re-evaluation a breaker transition enqueues."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from core.api.errors import InvalidInput, NotFound
from core.audit.models import AuditEvent
from core.audit.services import Actor
from recovery import metrics
from recovery.breakers import selectors as breaker_selectors
from recovery.breakers import services as breaker_services
from recovery.breakers.models import Service
from recovery.degradation import selectors as degradation_selectors
from recovery.degradation import services as degradation_services
from recovery.degradation.models import DegradationEvent, DegradationRule, DegradationState
from recovery.degradation.services import Target, next_automatic
from recovery.degradation.tasks import evaluate_degradation
from recovery.errors.classification import ErrorReport
from recovery.errors.services import record_errors
from tests.support import factories
from tests.support.processes import PYTHON, process_env, start, stop, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
HOLD = 60
ESSENTIAL_RULE = "rule “essential breaker open” (degraded): 1 essential breaker(s) open (openai), threshold 1"
SERVICE_RULE = "rule “service breaker open” (degraded): the breaker of openai is open, threshold 1"


@pytest.fixture(autouse=True)
def _recovery_time() -> Any:
    with override_settings(REBOUND=factories.rebound_settings(DEGRADATION_RECOVERY_SECONDS=HOLD)):
        yield


def essential(name: str = "openai", **fields: Any) -> Service:
    """A service whose breaker opens after two failures and closes after one good trial call."""
    values = {
        "criticality": Service.Criticality.ESSENTIAL,
        "minimum_calls": 2,
        "window_size": 10,
        "consecutive_failures": 0,
        "wait_duration_s": 0.05,
        "success_threshold": 1,
        **fields,
    }
    return Service.objects.create(name=name, **values)


def trip(name: str = "openai") -> None:
    failure = breaker_services.OutcomeReport(name, "call", False, 120, None, "")
    breaker_services.record_outcomes([failure, failure], actor=Actor())
    assert breaker_selectors.effective_state(Service.objects.get(name=name)) == "open"


def close(name: str = "openai") -> None:
    time.sleep(0.1)  # past the breaker's wait: the next permit is a trial
    permit = breaker_services.request_permit(name, actor=Actor())
    assert (permit.state, permit.allowed) == ("half_open", True)
    success = breaker_services.OutcomeReport(name, "call", True, 80, None, permit.permit_id or "")
    breaker_services.record_outcomes([success], actor=Actor())
    assert breaker_selectors.effective_state(Service.objects.get(name=name)) == "closed"


def counted(level: str, source: str) -> float:
    return float(metrics.degradation_events_total.labels(level=level, source=source)._value.get())


def gauge(scope: str) -> float:
    return float(metrics.degradation_level.labels(scope=scope)._value.get())


def fleet_signals(open_: list[str], essential_open: list[str], rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "essential_breakers_open": len(essential_open),
        "breakers_open": len(open_),
        "errors_per_minute": 0.0,
        "open": open_,
        "essential_open": essential_open,
        "unknown": [],
        "rules": rules,
    }


def rule_hit(name: str, signal: str, value: float, threshold: float, level: str) -> dict[str, Any]:
    return {"rule": name, "signal": signal, "value": value, "threshold": threshold, "level": level}


def events(scope: str | None = None) -> list[DegradationEvent]:
    qs = DegradationEvent.objects.order_by("id")
    return list(qs.filter(scope=scope) if scope else qs)


# --- hysteresis, as a table ------------------------------------------------------------------------------

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("automatic", "pending", "pending_for", "target", "expected"),
    [
        # A rise applies at once, and cancels any fall in waiting.
        ("normal", "", None, "degraded", {"automatic_level": "degraded", "automatic_reason": "why"}),
        ("degraded", "normal", 30, "minimal", {"automatic_level": "minimal", "automatic_reason": "why"}),
        # The same level: nothing, or the fall in waiting is called off.
        ("degraded", "", None, "degraded", {}),
        ("degraded", "normal", 30, "degraded", {"pending_level": "", "pending_since": None}),
        # A fall waits: first seen, it becomes pending; then it applies once it has held for the hold.
        ("degraded", "", None, "normal", {"pending_level": "normal", "pending_since": T0}),
        ("degraded", "normal", HOLD - 1, "normal", {}),
        (
            "degraded",
            "normal",
            HOLD,
            "normal",
            {"automatic_level": "normal", "automatic_reason": f"why (lower for at least {HOLD} s)"},
        ),
        # Another lower target starts the wait again.
        ("minimal", "normal", HOLD - 1, "degraded", {"pending_level": "degraded", "pending_since": T0}),
    ],
)
def test_it_rises_at_once_and_falls_only_after_the_recovery_time(
    automatic: str, pending: str, pending_for: int | None, target: str, expected: dict[str, Any]
) -> None:
    state = DegradationState(
        scope="*",
        automatic_level=automatic,
        pending_level=pending,
        pending_since=T0 - timedelta(seconds=pending_for) if pending_for is not None else None,
    )
    changes = next_automatic(state, Target(target, "why", {}), T0, timedelta(seconds=HOLD))
    if "automatic_level" in expected:
        expected = {**expected, "pending_level": "", "pending_since": None}
    assert changes == expected


# --- automatic levels from real breakers -----------------------------------------------------------------


def _degrade(capture: Any) -> tuple[list[Any], Any, float]:
    """An essential breaker trips and the fleet is evaluated: what was written, when, and the counter before."""
    essential()
    trip()
    now = timezone.now()
    before = counted("degraded", "automatic")

    with capture(execute=True):
        written = degradation_services.evaluate(now=now)
    return written, now, before


@pytest.mark.django_db
def test_it_degrades_the_fleet_when_an_essential_breaker_opens(
    django_capture_on_commit_callbacks: Any,
) -> None:
    written, now, _ = _degrade(django_capture_on_commit_callbacks)

    fleet, service = events("*"), events("openai")
    assert written == [*fleet, *service]
    assert len(fleet) == 1 and len(service) == 1
    event = fleet[0]
    assert (event.scope, event.from_level, event.to_level, event.source) == (
        "*",
        "normal",
        "degraded",
        "automatic",
    )
    assert event.reason == ESSENTIAL_RULE
    assert (event.actor_user, event.expires_at, event.created_at) == (None, None, now)
    assert event.signals == fleet_signals(
        ["openai"],
        ["openai"],
        [rule_hit("essential breaker open", "essential_breakers_open", 1.0, 1.0, "degraded")],
    )


@pytest.mark.django_db
def test_it_degrades_the_service_whose_breaker_opened(django_capture_on_commit_callbacks: Any) -> None:
    _degrade(django_capture_on_commit_callbacks)
    other = events("openai")[0]
    assert (other.from_level, other.to_level, other.source, other.reason) == (
        "normal",
        "degraded",
        "automatic",
        SERVICE_RULE,
    )
    assert other.signals == {
        "service_breaker_open": 1,
        "errors_per_minute": 0.0,
        "breaker_state": "open",
        "rules": [rule_hit("service breaker open", "service_breaker_open", 1.0, 1.0, "degraded")],
    }


@pytest.mark.django_db
def test_it_stores_the_automatic_level_and_serves_it_as_current(
    django_capture_on_commit_callbacks: Any,
) -> None:
    _, now, _ = _degrade(django_capture_on_commit_callbacks)
    state = DegradationState.objects.get(scope="*")
    assert (state.automatic_level, state.automatic_reason) == ("degraded", ESSENTIAL_RULE)
    assert (state.pending_level, state.pending_since, state.changed_at) == ("", None, now)
    assert (state.forced_level, state.forced_reason, state.forced_until, state.forced_by) == (
        "",
        "",
        None,
        None,
    )
    assert degradation_selectors.current() == degradation_selectors.LevelView(
        "*", "degraded", "automatic", ESSENTIAL_RULE, None, now
    )


@pytest.mark.django_db
def test_it_counts_and_gauges_the_degradation(django_capture_on_commit_callbacks: Any) -> None:
    _, _, before = _degrade(django_capture_on_commit_callbacks)
    assert counted("degraded", "automatic") == before + 2
    assert (gauge("*"), gauge("openai")) == (1, 1)


@pytest.mark.django_db
def test_a_second_evaluation_writes_nothing(django_capture_on_commit_callbacks: Any) -> None:
    essential()
    trip()
    now = timezone.now()
    degradation_services.evaluate(now=now)
    stored = DegradationState.objects.get(scope="*")
    before = counted("degraded", "automatic")

    with django_capture_on_commit_callbacks(execute=True):
        assert degradation_services.evaluate(now=now + timedelta(seconds=10)) == []

    assert DegradationEvent.objects.count() == 2
    again = DegradationState.objects.get(scope="*")
    assert (again.automatic_level, again.pending_level, again.updated_at) == (
        "degraded",
        "",
        stored.updated_at,
    )
    assert counted("degraded", "automatic") == before


def _degrade_then_close(t0: Any) -> None:
    essential()
    trip()
    degradation_services.evaluate(now=t0)
    close()


@pytest.mark.django_db
def test_it_holds_the_level_while_the_recovery_time_runs() -> None:
    t0 = timezone.now()
    _degrade_then_close(t0)

    assert degradation_services.evaluate(now=t0 + timedelta(seconds=10)) == []
    state = DegradationState.objects.get(scope="*")
    assert (state.automatic_level, state.pending_level) == ("degraded", "normal")
    assert state.pending_since == t0 + timedelta(seconds=10)
    assert degradation_services.evaluate(now=t0 + timedelta(seconds=10 + HOLD - 1)) == []
    assert degradation_selectors.current().level == "degraded"


def _fall(t0: Any, capture: Any) -> tuple[list[Any], Any]:
    _degrade_then_close(t0)
    degradation_services.evaluate(now=t0 + timedelta(seconds=10))
    degradation_services.evaluate(now=t0 + timedelta(seconds=10 + HOLD - 1))
    fall = t0 + timedelta(seconds=10 + HOLD)
    with capture(execute=True):
        written = degradation_services.evaluate(now=fall)
    return written, fall


@pytest.mark.django_db
def test_it_falls_back_to_normal_only_after_the_recovery_time(
    django_capture_on_commit_callbacks: Any,
) -> None:
    written, fall = _fall(timezone.now(), django_capture_on_commit_callbacks)

    assert len(written) == 2  # the fleet and the service
    event = events("*")[-1]
    reason = f"no degradation rule applies (lower for at least {HOLD} s)"
    assert (event.from_level, event.to_level, event.source, event.reason) == (
        "degraded",
        "normal",
        "automatic",
        reason,
    )
    assert (event.created_at, event.actor_user, event.expires_at) == (fall, None, None)
    assert event.signals == fleet_signals([], [], [])


@pytest.mark.django_db
def test_it_stores_the_fall_to_normal_for_the_fleet_and_the_service(
    django_capture_on_commit_callbacks: Any,
) -> None:
    _, fall = _fall(timezone.now(), django_capture_on_commit_callbacks)
    reason = f"no degradation rule applies (lower for at least {HOLD} s)"
    state = DegradationState.objects.get(scope="*")
    assert (state.automatic_level, state.automatic_reason, state.changed_at) == ("normal", reason, fall)
    assert (state.pending_level, state.pending_since) == ("", None)
    assert [e.to_level for e in events("openai")] == ["degraded", "normal"]
    assert (gauge("*"), gauge("openai")) == (0, 0)


@pytest.mark.django_db
def test_a_breaker_opening_again_calls_off_the_fall() -> None:
    essential()
    trip()
    t0 = timezone.now()
    degradation_services.evaluate(now=t0)
    close()
    degradation_services.evaluate(now=t0 + timedelta(seconds=10))
    trip()

    assert degradation_services.evaluate(now=t0 + timedelta(seconds=20)) == []
    assert degradation_services.evaluate(now=t0 + timedelta(seconds=20 + HOLD)) == []

    state = DegradationState.objects.get(scope="*")
    assert (state.automatic_level, state.pending_level, state.pending_since) == ("degraded", "", None)
    assert len(events("*")) == 1


@pytest.mark.django_db
def test_two_essential_breakers_open_mean_minimal() -> None:
    essential("openai")
    essential("vector-db")
    trip("openai")
    t0 = timezone.now()
    degradation_services.evaluate(now=t0)
    trip("vector-db")

    degradation_services.evaluate(now=t0 + timedelta(seconds=10))

    rise = events("*")[-1]
    both = "2 essential breaker(s) open (openai, vector-db)"
    assert (rise.from_level, rise.to_level, rise.source) == ("degraded", "minimal", "automatic")
    assert rise.reason == (
        f"rule “essential breakers open” (minimal): {both}, threshold 2; "
        f"rule “essential breaker open” (degraded): {both}, threshold 1"
    )
    assert rise.signals == fleet_signals(
        ["openai", "vector-db"],
        ["openai", "vector-db"],
        [
            rule_hit("essential breakers open", "essential_breakers_open", 2.0, 2.0, "minimal"),
            rule_hit("essential breaker open", "essential_breakers_open", 2.0, 1.0, "degraded"),
        ],
    )
    assert [(e.scope, e.to_level) for e in events()] == [
        ("*", "degraded"),
        ("openai", "degraded"),
        ("*", "minimal"),
        ("vector-db", "degraded"),
    ]
    assert (
        degradation_selectors.current("vector-db").level == "minimal"
    )  # the worse of the fleet's and its own


@pytest.mark.django_db
def test_a_rule_on_a_services_errors_raises_only_that_service() -> None:
    Service.objects.create(name="search")
    factories.DegradationRuleFactory(
        name="search errors", threshold=2, level="minimal", service=Service.objects.get()
    )
    record_errors([ErrorReport(service="search", message="boom")] * 10, agent=None)
    now = timezone.now()

    degradation_services.evaluate(now=now)

    [event] = events()
    assert (event.scope, event.from_level, event.to_level) == ("search", "normal", "minimal")
    assert event.reason == (
        "rule “search errors” (minimal): 2 errors a minute on search over the last 5 minutes, threshold 2"
    )
    assert event.signals == {
        "service_breaker_open": 0,
        "errors_per_minute": 2.0,
        "breaker_state": "closed",
        "rules": [rule_hit("search errors", "errors_per_minute", 2.0, 2.0, "minimal")],
    }
    assert not DegradationState.objects.filter(scope="*").exists()  # the fleet stayed normal, with no row


@pytest.mark.django_db
def test_disabled_rules_do_not_apply() -> None:
    DegradationRule.objects.update(enabled=False)
    essential()
    trip()

    assert degradation_services.evaluate() == []
    assert not DegradationState.objects.exists()


# --- operators -------------------------------------------------------------------------------------------


def _force_emergency(capture: Any) -> tuple[Any, Any, Any, Any, float]:
    """The fleet degraded by a breaker, then forced to emergency for an hour by an operator."""
    operator = factories.operator()
    essential()
    trip()
    t0 = timezone.now()
    degradation_services.evaluate(now=t0)
    until = t0 + timedelta(hours=1)
    before = counted("emergency", "operator")

    with capture(execute=True):
        state = degradation_services.force(
            scope="*",
            level="emergency",
            reason="provider incident INC-42",
            expires_at=until,
            actor=Actor(user=operator),
            now=t0 + timedelta(seconds=1),
        )
    return operator, t0, until, state, before


@pytest.mark.django_db
def test_it_records_a_forced_level_as_an_operators_event(django_capture_on_commit_callbacks: Any) -> None:
    operator, t0, until, _, _ = _force_emergency(django_capture_on_commit_callbacks)
    event = events("*")[-1]
    label = f"user:{operator.username}"
    assert (event.from_level, event.to_level, event.source) == ("degraded", "emergency", "operator")
    assert event.reason == f"forced to emergency by {label}: provider incident INC-42"
    assert (event.actor_user, event.expires_at, event.signals) == (operator, until, {})
    assert event.created_at == t0 + timedelta(seconds=1)


@pytest.mark.django_db
def test_it_stores_a_forced_level_beside_the_automatic_one(django_capture_on_commit_callbacks: Any) -> None:
    operator, t0, until, state, _ = _force_emergency(django_capture_on_commit_callbacks)
    assert (state.forced_level, state.forced_reason, state.forced_until, state.forced_by) == (
        "emergency",
        "provider incident INC-42",
        until,
        operator,
    )
    assert (state.automatic_level, state.changed_at) == ("degraded", t0 + timedelta(seconds=1))


@pytest.mark.django_db
def test_it_audits_forcing_a_level(django_capture_on_commit_callbacks: Any) -> None:
    operator, _, until, state, _ = _force_emergency(django_capture_on_commit_callbacks)
    [audit] = AuditEvent.objects.filter(action="degradation.force")
    assert (audit.actor_user, audit.target_type, audit.target_id) == (
        operator,
        "recovery.degradationstate",
        str(state.pk),
    )
    assert audit.reason == "provider incident INC-42"
    assert audit.before == {
        "forced_level": "",
        "forced_reason": "",
        "forced_until": None,
        "forced_by": None,
        "level": "degraded",
    }
    assert audit.after == {
        "forced_level": "emergency",
        "forced_reason": "provider incident INC-42",
        "forced_until": json.loads(json.dumps(until, cls=DjangoJSONEncoder)),
        "forced_by": operator.pk,
        "level": "emergency",
    }


@pytest.mark.django_db
def test_it_puts_a_forced_level_in_force_over_the_automatic_one(
    django_capture_on_commit_callbacks: Any,
) -> None:
    _, t0, until, _, before = _force_emergency(django_capture_on_commit_callbacks)
    assert degradation_selectors.current() == degradation_selectors.LevelView(
        "*", "emergency", "operator", "provider incident INC-42", until, t0 + timedelta(seconds=1)
    )
    assert counted("emergency", "operator") == before + 1
    assert gauge("*") == 3


def _breakers_close_under_the_forced_level(t0: Any) -> None:
    close()
    degradation_services.evaluate(now=t0 + timedelta(minutes=2))
    degradation_services.evaluate(now=t0 + timedelta(minutes=4))


@pytest.mark.django_db
def test_it_keeps_following_the_breakers_under_a_forced_level(
    django_capture_on_commit_callbacks: Any,
) -> None:
    _, t0, _, state, _ = _force_emergency(django_capture_on_commit_callbacks)
    # Under the forced level the automatic one still follows the breakers, without changing what is in force.
    _breakers_close_under_the_forced_level(t0)
    state.refresh_from_db()
    assert (state.automatic_level, state.forced_level) == ("normal", "emergency")
    assert len(events("*")) == 2


def _expire(capture: Any) -> tuple[list[Any], Any, Any, Any, float]:
    _, t0, until, state, _ = _force_emergency(capture)
    _breakers_close_under_the_forced_level(t0)
    expiry = until + timedelta(seconds=5)
    expiries = counted("normal", "expiry")
    with capture(execute=True):
        written = degradation_services.evaluate(now=expiry)
    return written, until, expiry, state, expiries


@pytest.mark.django_db
def test_it_returns_to_the_automatic_level_when_a_forced_one_expires(
    django_capture_on_commit_callbacks: Any,
) -> None:
    written, until, expiry, _, _ = _expire(django_capture_on_commit_callbacks)
    expired = events("*")[-1]
    assert written == [expired]
    assert (expired.from_level, expired.to_level, expired.source) == ("emergency", "normal", "expiry")
    assert expired.reason == (
        "the level forced by an operator (provider incident INC-42) expired: back to the automatic level "
        f"(no degradation rule applies (lower for at least {HOLD} s))"
    )
    assert (expired.actor_user, expired.expires_at, expired.created_at) == (None, until, expiry)


@pytest.mark.django_db
def test_it_clears_an_expired_forced_level_and_counts_the_expiry(
    django_capture_on_commit_callbacks: Any,
) -> None:
    _, until, _, state, expiries = _expire(django_capture_on_commit_callbacks)
    state.refresh_from_db()
    assert (state.forced_level, state.forced_reason, state.forced_until, state.forced_by) == (
        "",
        "",
        None,
        None,
    )
    assert (state.automatic_level, state.changed_at) == ("normal", until)
    assert counted("normal", "expiry") == expiries + 1
    assert gauge("*") == 0


def _pin_normal() -> Any:
    operator = factories.operator()
    essential()
    trip()
    degradation_services.evaluate()

    degradation_services.force(
        scope="*", level="normal", reason="known noise", expires_at=None, actor=Actor(user=operator)
    )
    return operator


@pytest.mark.django_db
def test_it_pins_normal_against_the_automatic_level() -> None:
    _pin_normal()
    assert degradation_services.evaluate() == []
    assert degradation_selectors.current().level == "normal"


@pytest.mark.django_db
def test_it_clears_a_pinned_normal_back_to_the_automatic_level() -> None:
    operator = _pin_normal()
    degradation_services.evaluate()
    state = degradation_services.clear(scope="*", reason="noise gone", actor=Actor(user=operator))

    assert state is not None
    pinned, cleared = events("*")[-2:]
    label = f"user:{operator.username}"
    assert (pinned.from_level, pinned.to_level, pinned.source) == ("degraded", "normal", "operator")
    assert (cleared.from_level, cleared.to_level, cleared.source) == ("normal", "degraded", "operator")
    assert cleared.reason == f"cleared by {label}: noise gone"
    assert (cleared.actor_user, cleared.expires_at) == (operator, None)
    assert (state.forced_level, state.forced_reason, state.forced_by) == ("", "", None)


@pytest.mark.django_db
def test_it_audits_clearing_a_pinned_level() -> None:
    operator = _pin_normal()
    degradation_services.evaluate()
    degradation_services.clear(scope="*", reason="noise gone", actor=Actor(user=operator))
    [audit] = AuditEvent.objects.filter(action="degradation.clear")
    assert (audit.reason, audit.before["level"], audit.after["level"]) == ("noise gone", "normal", "degraded")  # type: ignore[index]
    assert (audit.before["forced_level"], audit.after["forced_level"]) == ("normal", "")  # type: ignore[index]


@pytest.mark.django_db
def test_forcing_the_level_in_force_is_audited_without_an_event() -> None:
    operator = factories.operator()
    Service.objects.create(name="search")

    state = degradation_services.force(
        scope="search", level="normal", reason="keep it on", expires_at=None, actor=Actor(user=operator)
    )

    assert (state.scope, state.forced_level, state.changed_at) == ("search", "normal", None)
    assert DegradationEvent.objects.count() == 0
    assert AuditEvent.objects.filter(action="degradation.force", target_id=str(state.pk)).count() == 1


@pytest.mark.django_db
def test_clearing_with_nothing_forced_changes_nothing() -> None:
    Service.objects.create(name="search")

    assert degradation_services.clear(scope="search", reason="tidy", actor=Actor()) is None
    assert not DegradationState.objects.exists()
    assert not AuditEvent.objects.filter(action="degradation.clear").exists()


@pytest.mark.django_db
def test_clearing_an_expired_level_records_its_expiry() -> None:
    operator = factories.operator()
    t0 = timezone.now()
    degradation_services.force(
        scope="*",
        level="minimal",
        reason="drill",
        expires_at=t0 + timedelta(minutes=1),
        actor=Actor(user=operator),
    )

    degradation_services.clear(
        scope="*", reason="drill over", actor=Actor(user=operator), now=t0 + timedelta(minutes=2)
    )

    assert [(e.from_level, e.to_level, e.source) for e in events("*")] == [
        ("normal", "minimal", "operator"),
        ("minimal", "normal", "expiry"),
    ]
    assert not AuditEvent.objects.filter(action="degradation.clear").exists()  # nothing was left to clear


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("changes", "error", "field"),
    [
        ({"level": "apocalypse"}, InvalidInput, "level"),
        ({"scope": "nope"}, NotFound, "scope"),
        ({"reason": "  "}, InvalidInput, "reason"),
        ({"expires_at": datetime(2020, 1, 1, tzinfo=UTC)}, InvalidInput, "expires_at"),
    ],
)
def test_it_refuses_a_bad_force(changes: dict[str, Any], error: type[Exception], field: str) -> None:
    arguments = {"scope": "*", "level": "minimal", "reason": "drill", "expires_at": None, **changes}

    with pytest.raises(error) as raised:
        degradation_services.force(**arguments, actor=Actor())

    assert raised.value.field == field  # type: ignore[attr-defined]
    assert not DegradationState.objects.exists()
    assert not DegradationEvent.objects.exists()
    assert not AuditEvent.objects.filter(action="degradation.force").exists()


@pytest.mark.django_db
def test_rule_changes_are_audited() -> None:
    operator = factories.operator()
    rule = DegradationRule.objects.get(name="essential breaker open")
    actor = Actor(user=operator, source="admin")

    degradation_services.update_rule(rule_id=rule.pk, data={"threshold": 3}, actor=actor, reason="too eager")
    created = degradation_services.create_rule(
        data={"name": "error storm", "signal": "errors_per_minute", "threshold": 100, "level": "emergency"},
        actor=actor,
        reason="cap the damage",
    )

    rule.refresh_from_db()
    assert rule.threshold == 3
    update, create = AuditEvent.objects.filter(action__startswith="degradation_rule.").order_by("id")
    assert (update.action, update.reason, update.before["threshold"], update.after["threshold"]) == (  # type: ignore[index]
        "degradation_rule.update",
        "too eager",
        1.0,
        3.0,
    )
    assert (create.action, create.target_id, create.after["level"]) == (  # type: ignore[index]
        "degradation_rule.create",
        str(created.pk),
        "emergency",
    )
    with pytest.raises(InvalidInput):
        degradation_services.update_rule(rule_id=rule.pk, data={"level": "normal"}, actor=actor, reason="x")
    with pytest.raises(InvalidInput):
        degradation_services.update_rule(rule_id=rule.pk, data={"threshold": 4}, actor=actor, reason=" ")
    rule.refresh_from_db()
    assert (rule.level, rule.threshold) == ("degraded", 3)


# --- concurrency and tasks -------------------------------------------------------------------------------

THREADS = 8


@pytest.mark.django_db(transaction=True)
def test_concurrent_evaluations_write_each_change_once() -> None:
    essential()
    trip()
    now = timezone.now()
    barrier = threading.Barrier(THREADS)
    written: list[int] = []
    errors: list[BaseException] = []

    def evaluate() -> None:
        try:
            barrier.wait()
            written.append(len(degradation_services.evaluate(now=now)))
        except BaseException as error:  # asserted on below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=evaluate) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert sum(written) == 2
    assert sorted((e.scope, e.from_level, e.to_level) for e in events()) == [
        ("*", "normal", "degraded"),
        ("openai", "normal", "degraded"),
    ]
    assert DegradationState.objects.count() == 2


@pytest.mark.django_db
def test_a_breaker_transition_enqueues_an_evaluation_once_committed(
    django_capture_on_commit_callbacks: Any,
) -> None:
    essential()
    queue = redis.Redis.from_url(settings.TEST_REDIS_URL)  # type: ignore[misc]

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        trip()
    assert queue.llen("celery") == 0  # nothing before the commit
    for callback in callbacks:
        callback()

    queued: list[bytes] = queue.lrange("celery", 0, -1)  # type: ignore[assignment]
    messages = [json.loads(raw) for raw in queued]
    assert [m["headers"]["task"] for m in messages] == ["recovery.degradation_tasks.evaluate_degradation"]


@pytest.mark.django_db
def test_the_task_evaluates() -> None:
    essential()
    trip()

    assert evaluate_degradation.apply().get() == 2
    assert evaluate_degradation.apply().get() == 0
    assert degradation_selectors.current().level == "degraded"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_degrades_the_fleet_after_a_breaker_trips(tmp_path: Path) -> None:
    essential(wait_duration_s=30)
    worker = start(
        [PYTHON, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "-l", "INFO"],
        process_env(tmp_path),
        tmp_path / "worker.log",
    )
    try:
        trip()  # no beat runs: only the task the transition enqueued can evaluate
        assert wait_for(lambda: DegradationEvent.objects.filter(scope="*").exists(), timeout=60), (
            tmp_path / "worker.log"
        ).read_text()[-3000:]
    finally:
        stop(worker)
    event = DegradationEvent.objects.get(scope="*")
    assert (event.from_level, event.to_level, event.source, event.reason) == (
        "normal",
        "degraded",
        "automatic",
        ESSENTIAL_RULE,
    )

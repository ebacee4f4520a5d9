"""Graceful degradation, the writes: each scope's automatic level from the rules (with hysteresis), the level an
operator forces (audited) and its expiry, and the rules themselves.

Every change of a scope's effective level is one DegradationEvent. Several processes evaluate at once (beat,
and a task per breaker transition), so every change is a compare-and-set on the scope's row, filtered on the
values that were read; the event is written in the same transaction, by the one process whose update won.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from core.api.errors import Conflict, InvalidInput, NotFound
from core.audit import services as audit
from core.audit.services import Actor, audited_save
from core.infra.conf import rebound
from recovery import metrics
from recovery.breakers import selectors as breaker_selectors
from recovery.breakers.models import Service
from recovery.degradation.models import (
    GLOBAL_SCOPE,
    LEVEL_RANK,
    DegradationEvent,
    DegradationLevel,
    DegradationRule,
    DegradationState,
)
from recovery.degradation.selectors import forced_in_force, view_of
from recovery.errors.models import ErrorEvent

log = logging.getLogger(__name__)
NORMAL = DegradationLevel.NORMAL.value
Signal = DegradationRule.Signal
Source = DegradationEvent.Source
ERROR_WINDOW_MINUTES = 5
# A breaker agents cannot rely on: open, still probing (half-open), or forced open by an operator. The level
# falls once the breaker has closed again, not while its first trial calls are out.
DOWN_STATES = frozenset({"open", "half_open", Service.Override.FORCED_OPEN.value})
# A lost compare-and-set is retried on a fresh read; more losses in a row than this mean a storm of writers,
# and the next evaluation (at most 10 s away) settles it.
CAS_ATTEMPTS = 5
# What a compare-and-set checks: whoever changed any of these since we read the row has won.
CAS_FIELDS = [
    "automatic_level",
    "pending_level",
    "pending_since",
    "forced_level",
    "forced_reason",
    "forced_until",
    "forced_by_id",
]
FORCE_FIELDS = ["forced_level", "forced_reason", "forced_until", "forced_by"]
CLEARED: dict[str, Any] = {"forced_level": "", "forced_reason": "", "forced_until": None, "forced_by": None}
RULE_FIELDS = ["name", "description", "enabled", "signal", "threshold", "level", "service"]


# --- signals ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signals:
    """What the rules look at, read once per evaluation."""

    states: dict[str, str]  # every service's effective breaker state
    essential: frozenset[str]
    errors: dict[str, int]  # errors per service over the window
    total_errors: int

    @property
    def down(self) -> list[str]:
        return sorted(name for name, state in self.states.items() if state in DOWN_STATES)

    @property
    def essential_down(self) -> list[str]:
        return [name for name in self.down if name in self.essential]

    def value(self, signal: str, scope: str) -> float:
        if signal == Signal.ESSENTIAL_BREAKERS_OPEN:
            return float(len(self.essential_down))
        if signal == Signal.BREAKERS_OPEN:
            return float(len(self.down))
        if signal == Signal.SERVICE_BREAKER_OPEN:
            return 1.0 if self.states.get(scope) in DOWN_STATES else 0.0
        count = self.total_errors if scope == GLOBAL_SCOPE else self.errors.get(scope, 0)
        return round(count / ERROR_WINDOW_MINUTES, 2)

    def words(self, signal: str, scope: str) -> str:
        value = self.value(signal, scope)
        if signal == Signal.ESSENTIAL_BREAKERS_OPEN:
            return f"{value:g} essential breaker(s) open ({', '.join(self.essential_down)})"
        if signal == Signal.BREAKERS_OPEN:
            return f"{value:g} breaker(s) open ({', '.join(self.down)})"
        if signal == Signal.SERVICE_BREAKER_OPEN:
            return f"the breaker of {scope} is {self.states.get(scope, 'unknown')}"
        where = "" if scope == GLOBAL_SCOPE else f" on {scope}"
        return f"{value:g} errors a minute{where} over the last {ERROR_WINDOW_MINUTES} minutes"

    def of_scope(self, scope: str) -> dict[str, Any]:
        """The signals of a scope, as its events keep them."""
        if scope == GLOBAL_SCOPE:
            return {
                Signal.ESSENTIAL_BREAKERS_OPEN.value: len(self.essential_down),
                Signal.BREAKERS_OPEN.value: len(self.down),
                Signal.ERRORS_PER_MINUTE.value: self.value(Signal.ERRORS_PER_MINUTE, scope),
                "open": self.down,
                "essential_open": self.essential_down,
                "unknown": sorted(n for n, s in self.states.items() if s == "unknown"),
            }
        return {
            Signal.SERVICE_BREAKER_OPEN.value: int(self.value(Signal.SERVICE_BREAKER_OPEN, scope)),
            Signal.ERRORS_PER_MINUTE.value: self.value(Signal.ERRORS_PER_MINUTE, scope),
            "breaker_state": self.states.get(scope, "unknown"),
        }


def read_signals(now: datetime) -> Signals:
    """Every service's breaker (one store read each; an override counts as the state it forces) and the error
    counts of the last minutes (one grouped query)."""
    services = list(Service.objects.all())
    since = now - timedelta(minutes=ERROR_WINDOW_MINUTES)
    rows = ErrorEvent.objects.filter(occurred_at__gte=since).values("service").annotate(n=Count("id"))
    errors = {row["service"]: row["n"] for row in rows}
    return Signals(
        states={service.name: breaker_selectors.effective_state(service) for service in services},
        essential=frozenset(s.name for s in services if s.criticality == Service.Criticality.ESSENTIAL),
        errors=errors,
        total_errors=sum(errors.values()),
    )


# --- rules -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The level the rules ask of a scope now, why, and the signals behind it."""

    level: str
    reason: str
    signals: dict[str, Any]


def rule_scopes(rule: DegradationRule, services: list[str]) -> list[str]:
    """A rule applies to its service, or to the fleet; service_breaker_open without a service to each service."""
    if rule.service is not None:
        return [rule.service.name]
    return services if rule.signal == Signal.SERVICE_BREAKER_OPEN else [GLOBAL_SCOPE]


def targets(rules: list[DegradationRule], signals: Signals) -> dict[str, Target]:
    """The target level of the fleet and of every service: the highest level among the rules whose signal has
    reached their threshold, normal when none has."""
    services = sorted(signals.states)
    hits: dict[str, list[tuple[DegradationRule, float]]] = {scope: [] for scope in [GLOBAL_SCOPE, *services]}
    for rule in rules:
        for scope in rule_scopes(rule, services):
            value = signals.value(rule.signal, scope)
            if value >= rule.threshold:
                hits.setdefault(scope, []).append((rule, value))
    return {scope: _target(scope, matched, signals) for scope, matched in hits.items()}


def _target(scope: str, matched: list[tuple[DegradationRule, float]], signals: Signals) -> Target:
    matched = sorted(matched, key=lambda hit: (-LEVEL_RANK[hit[0].level], hit[0].name))
    level = matched[0][0].level if matched else NORMAL
    if matched:
        reason = "; ".join(
            f"rule “{rule.name}” ({rule.level}): {signals.words(rule.signal, scope)}, "
            f"threshold {rule.threshold:g}"
            for rule, _ in matched
        )
    else:
        reason = "no degradation rule applies"
    detail = signals.of_scope(scope)
    detail["rules"] = [
        {
            "rule": rule.name,
            "signal": rule.signal,
            "value": value,
            "threshold": rule.threshold,
            "level": rule.level,
        }
        for rule, value in matched
    ]
    return Target(level, reason, detail)


# --- the automatic level, with hysteresis ----------------------------------------------------------------


def next_automatic(state: DegradationState, target: Target, now: datetime, hold: timedelta) -> dict[str, Any]:
    """The changes to a scope's row that the target asks for now (empty: none).

    A rise applies at once. A fall applies only once the lower target has held for `hold`: the first time it
    is seen it becomes pending, and a rise or another target resets that.
    """
    current, pending = state.automatic_level, state.pending_level
    settled = {"automatic_level": target.level, "pending_level": "", "pending_since": None}
    if LEVEL_RANK[target.level] > LEVEL_RANK[current]:
        return {**settled, "automatic_reason": target.reason}
    if target.level == current:
        return {"pending_level": "", "pending_since": None} if pending or state.pending_since else {}
    if pending != target.level or state.pending_since is None:
        return {"pending_level": target.level, "pending_since": now}
    if now - state.pending_since >= hold:
        held = f"{hold.total_seconds():g} s"
        return {**settled, "automatic_reason": f"{target.reason} (lower for at least {held})"}
    return {}


def evaluate(now: datetime | None = None) -> list[DegradationEvent]:
    """Apply the rules to the signals of now: expire forced levels, then move each scope's automatic level.
    Idempotent; safe to run in several processes at once. Returns the events written here."""
    now = now or timezone.now()
    written = expire_forced(now)
    signals = read_signals(now)
    rules = list(DegradationRule.objects.filter(enabled=True).select_related("service"))
    wanted = targets(rules, signals)
    rows = {state.scope: state for state in DegradationState.objects.all()}
    for scope in sorted(set(wanted) | set(rows)):
        target = wanted.get(scope) or Target(NORMAL, "no degradation rule applies", {})
        written += _settle(scope, rows.get(scope), target, now)
    publish_levels(now)
    return written


def _settle(
    scope: str, state: DegradationState | None, target: Target, now: datetime
) -> list[DegradationEvent]:
    hold = timedelta(seconds=float(rebound("DEGRADATION_RECOVERY_SECONDS")))
    for _ in range(CAS_ATTEMPTS):
        if state is None:
            if target.level == NORMAL:
                return []  # no row is normal: nothing to write
            state = _row(scope)
        if _expired(state, now):
            # Its expiry event first, so that each event starts where the one before ended.
            written = _expire_one(state, now)
            state = _fresh(scope)
            if written is not None:
                return [written, *_settle(scope, state, target, now)]
            continue
        changes = next_automatic(state, target, now, hold)
        if not changes:
            return []
        event = _event(
            state, changes, now, Source.AUTOMATIC, changes.get("automatic_reason", ""), target.signals
        )
        if _apply(state, changes, event):
            return [event] if event else []
        state = _fresh(scope)
    log.warning("degradation: gave up settling %s after %d lost races", scope, CAS_ATTEMPTS)
    return []


# --- expiry of forced levels -----------------------------------------------------------------------------


def _expired(state: DegradationState, now: datetime) -> bool:
    return bool(state.forced_level) and not forced_in_force(state, now)


def expire_forced(now: datetime | None = None) -> list[DegradationEvent]:
    """Clear the forced levels whose end has passed; an event (source expiry) where the level in force changed."""
    now = now or timezone.now()
    written = []
    for state in DegradationState.objects.exclude(forced_level="").filter(forced_until__lte=now):
        event = _expire_one(state, now)
        if event is not None:
            written.append(event)
    return written


def _expire_one(state: DegradationState, now: datetime) -> DegradationEvent | None:
    # The forced level was in force until its end, whatever view_of says after it: compare with it, not with
    # the level in force now.
    changes = dict(CLEARED)
    event = None
    if state.forced_level != state.automatic_level:
        changes["changed_at"] = state.forced_until
        event = DegradationEvent(
            scope=state.scope,
            from_level=state.forced_level,
            to_level=state.automatic_level,
            source=Source.EXPIRY,
            reason=f"the level forced by an operator ({state.forced_reason}) expired: back to the automatic "
            f"level ({state.automatic_reason or 'no degradation rule applies'})",
            expires_at=state.forced_until,
            signals={},
            created_at=now,
        )
    # A lost race: whoever won cleared it, or forced again, and wrote what was due.
    return event if _apply(state, changes, event) else None


# --- operators -------------------------------------------------------------------------------------------


def force(
    *,
    scope: str,
    level: str,
    reason: str,
    expires_at: datetime | None,
    actor: Actor,
    now: datetime | None = None,
) -> DegradationState:
    """Force a scope's level (normal pins it at normal) until `expires_at` or until cleared. Audited."""
    reason = audit.require_reason(reason)
    if level not in DegradationLevel.values:
        raise InvalidInput(f"level must be one of {', '.join(DegradationLevel.values)}", field="level")
    now = now or timezone.now()
    if expires_at is not None and expires_at <= now:
        raise InvalidInput("expires_at must be in the future", field="expires_at")
    known_scope(scope)
    user = actor.user if actor.user is not None and actor.user.pk else None
    changes = {"forced_level": level, "forced_reason": reason, "forced_until": expires_at, "forced_by": user}
    event_reason = f"forced to {level} by {actor.label}: {reason}"
    state = _operator_change(scope, changes, "degradation.force", reason, event_reason, actor, now)
    assert state is not None  # forcing always has a row
    return state


def clear(*, scope: str, reason: str, actor: Actor, now: datetime | None = None) -> DegradationState | None:
    """End an operator's level: the scope returns to its automatic level. Audited; nothing to clear, no-op."""
    reason = audit.require_reason(reason)
    known_scope(scope)
    now = now or timezone.now()
    if not DegradationState.objects.filter(scope=scope).exists():
        return None
    event_reason = f"cleared by {actor.label}: {reason}"
    return _operator_change(scope, dict(CLEARED), "degradation.clear", reason, event_reason, actor, now)


def known_scope(scope: str) -> None:
    if scope != GLOBAL_SCOPE and not Service.objects.filter(name=scope).exists():
        raise NotFound(f"Unknown service {scope!r}: a scope is '*' (the fleet) or a service.", field="scope")


def _operator_change(
    scope: str,
    changes: dict[str, Any],
    action: str,
    reason: str,
    event_reason: str,
    actor: Actor,
    now: datetime,
) -> DegradationState | None:
    user = actor.user if actor.user is not None and actor.user.pk else None
    clearing = action == "degradation.clear"
    for _ in range(CAS_ATTEMPTS):
        state = _fresh(scope) if clearing else _row(scope)
        if state is None:
            return None
        if _expired(state, now):
            _expire_one(state, now)
            continue
        if clearing and not state.forced_level:
            return state  # nothing forced: no change, nothing to audit
        before = {**audit.snapshot(state, FORCE_FIELDS), "level": view_of(state, scope, now).level}
        after_state = _with(state, changes)
        after = {**audit.snapshot(after_state, FORCE_FIELDS), "level": view_of(after_state, scope, now).level}
        expires_at = changes["forced_until"]
        event = _event(state, changes, now, Source.OPERATOR, event_reason, {}, user, expires_at)

        def audited(
            target: DegradationState = after_state,
            before: dict[str, Any] = before,
            after: dict[str, Any] = after,
        ) -> None:
            audit.record(actor, action, target, reason=reason, before=before, after=after)

        if _apply(state, changes, event, audited):
            state.refresh_from_db()
            return state
    raise Conflict(f"The degradation level of {scope!r} kept changing; try again.", field="scope")


# --- rows, events, compare-and-set -----------------------------------------------------------------------


def _row(scope: str) -> DegradationState:
    # get_or_create tolerates a race: the loser's insert fails on the unique scope and it reads the winner's.
    return DegradationState.objects.get_or_create(scope=scope)[0]


def _fresh(scope: str) -> DegradationState | None:
    return DegradationState.objects.filter(scope=scope).first()


def _with(state: DegradationState, changes: dict[str, Any]) -> DegradationState:
    """A detached copy of the row with the changes applied: what it will be if the update wins."""
    copy = DegradationState(**{f.attname: getattr(state, f.attname) for f in state._meta.concrete_fields})
    for name, value in changes.items():
        setattr(copy, name, value)
    return copy


def _event(
    state: DegradationState,
    changes: dict[str, Any],
    now: datetime,
    source: str,
    reason: str,
    signals: dict[str, Any],
    user: Any = None,
    expires_at: datetime | None = None,
) -> DegradationEvent | None:
    """The event of these changes, if they change the level in force (and then `changed_at` too)."""
    before = view_of(state, state.scope, now).level
    after = view_of(_with(state, changes), state.scope, now).level
    if before == after:
        return None
    changes["changed_at"] = now
    return DegradationEvent(
        scope=state.scope,
        from_level=before,
        to_level=after,
        source=source,
        reason=reason,
        actor_user=user,
        expires_at=expires_at,
        signals=signals,
        created_at=now,
    )


def _apply(
    state: DegradationState,
    changes: dict[str, Any],
    event: DegradationEvent | None,
    also: Callable[[], None] | None = None,
) -> bool:
    """Compare-and-set: update the row only if it still holds what we read; the event (and `also`, the audit)
    in the same transaction. False: another process changed the row first."""
    expected = {name: getattr(state, name) for name in CAS_FIELDS}
    with transaction.atomic():
        won = DegradationState.objects.filter(pk=state.pk, **expected).update(
            **changes, updated_at=timezone.now()
        )
        if not won:
            return False
        if event is not None:
            event.save()
            transaction.on_commit(lambda: _announce(event))
        if also is not None:
            also()
    return True


def _announce(event: DegradationEvent) -> None:
    metrics.degradation_events_total.labels(level=event.to_level, source=event.source).inc()
    metrics.degradation_level.labels(scope=event.scope).set(metrics.DEGRADATION_LEVEL_VALUES[event.to_level])
    log.info(
        "degradation of %s: %s → %s (%s): %s",
        event.scope,
        event.from_level,
        event.to_level,
        event.source,
        event.reason,
    )


def publish_levels(now: datetime | None = None) -> None:
    """Set the degradation_level gauge of every scope, so that a process started after a change shows it too."""
    now = now or timezone.now()
    rows: dict[str, DegradationState | None] = {GLOBAL_SCOPE: None}
    rows.update((state.scope, state) for state in DegradationState.objects.all())
    for scope, state in rows.items():
        level = view_of(state, scope, now).level
        metrics.degradation_level.labels(scope=scope).set(metrics.DEGRADATION_LEVEL_VALUES[level])


# --- the rules themselves --------------------------------------------------------------------------------


def create_rule(*, data: dict[str, Any], actor: Actor, reason: str) -> DegradationRule:
    rule = DegradationRule(**{k: v for k, v in data.items() if k in RULE_FIELDS})
    return audited_save(rule, RULE_FIELDS, actor=actor, reason=reason, action="degradation_rule")


def update_rule(*, rule_id: int, data: dict[str, Any], actor: Actor, reason: str) -> DegradationRule:
    rule = DegradationRule.objects.get(pk=rule_id)
    for key, value in data.items():
        if key in RULE_FIELDS:
            setattr(rule, key, value)
    return audited_save(rule, RULE_FIELDS, actor=actor, reason=reason, action="degradation_rule")

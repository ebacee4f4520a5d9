"""The escalation triggers of errors (triggers 1 to 5 of the queue): raised from the event that causes them, as
error intake stores errors (recovery.errors.signals.errors_stored, both write paths) and as the breakers count
outcomes (recovery.breakers.signals.outcomes_recorded); resolved by the system when their condition clears
(sweep_rates, from the beat sweep, and the error rate on outcomes too). Connected in healing/apps.py.

1. critical_error: an error of severity critical or fatal from an essential service.
2. security: authentication or permission errors; the rule's repeat_level once `count` of them within
   `window_s`.
3. data_integrity: errors a classification rule marks as constraint violations.
4. repeated_pattern: more than `count` events of one pattern within `window_s` that Rebound is not handling:
   the errors whose recovery plan worked, is still being followed or failed with attempts left (the agent
   asks again) are the recovery's, not a human's (a transient error that retries fix, a dead dependency the
   fleet falls back from); errors reported without a plan all count. A failing recovery shows itself through
   the plans (escalate, nothing left to fall back on).
5. error_rate: a service's failed calls above `rate_percent` of at least `min_calls` over `window_s`.

This is the intake's path: a batch that concerns no trigger costs set look-ups and the cached rules, plus, while
repeated_pattern is enabled, one small count (a LIMIT query) per pattern of the batch that had more than its
threshold in all its life but is not known to be over it now (_seen). A key this process raised a moment ago
at the same level is not written again for QUIET_S (a storm of one error must not turn every report into a
write on one escalation row): its errors are folded into the key's next raise from this process, so an
escalation's occurrences count its errors, late by at most QUIET_S (those of a process that stops in between
are lost), and a service's error rate is read at most
once every RATE_EVERY_S per process. Receivers never raise: a trigger that fails is logged, never the intake's
or the outcomes' failure."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from core.infra.conf import rebound
from healing.escalations import selectors
from healing.escalations import services as escalations
from healing.escalations.models import LEVEL_RANK, EscalationTrigger, TriggerKind, higher
from healing.escalations.services import Raise
from recovery.breakers import selectors as breaker_selectors
from recovery.breakers import traffic
from recovery.decisions import selectors as decision_selectors
from recovery.errors import selectors as error_selectors
from recovery.errors.signals import Sighting
from recovery.errors.taxonomy import ErrorClass, ErrorKind, Severity

log = logging.getLogger(__name__)

# The dispatch_uid of each connection (healing/apps.py): connecting twice is one receiver.
ERRORS_UID = "escalations-errors-stored"
OUTCOMES_UID = "escalations-outcomes-recorded"

CRITICAL_SEVERITIES = frozenset({Severity.CRITICAL, Severity.FATAL})
SECURITY_KINDS = frozenset({ErrorKind.AUTHENTICATION_FAILED, ErrorKind.PERMISSION_DENIED})
INTEGRITY_KINDS = frozenset({ErrorKind.CONSTRAINT_VIOLATION})
# Defaults where an operator blanked a threshold (the built-in rows carry them: migration 0007).
DEFAULT_COUNT, DEFAULT_WINDOW_S, DEFAULT_RATE, DEFAULT_MIN_CALLS = 5, 300, 50.0, 20

QUIET_S = 5.0  # a repeat of a key this process raised at that level less than this ago is skipped
RATE_EVERY_S = 5.0  # a service's error rate is read at most this often per process
MEMORY_MAX = 10_000  # remembered keys and services per process, beyond which the memory starts again

_lock = threading.Lock()
_raised: dict[str, tuple[float, str]] = {}  # key -> (monotonic time, level) of this process's last raise
_folded: dict[str, int] = {}  # key -> errors of quiet repeats not yet counted into the escalation
_rate_read: dict[str, float] = {}  # service -> monotonic time of this process's last rate evaluation
# key -> monotonic time this process last found a repeated pattern handled by recovery plans: not counted again
# for QUIET_S, so that a storm of recovered errors costs its counts once per QUIET_S, not once per batch
_handled: dict[str, float] = {}
_essential: tuple[float, frozenset[str]] = (0.0, frozenset())  # (expires, names)


def forget() -> None:
    """Drop this process's memory (core.infra.caches: tests and a fresh deployment)."""
    global _essential
    with _lock:
        _raised.clear()
        _folded.clear()
        _rate_read.clear()
        _handled.clear()
        _essential = (0.0, frozenset())


# --- receivers ----------------------------------------------------------------------------------------------


def on_errors_stored(sender: object, *, sightings: list[Sighting], **_: Any) -> None:
    """recovery.errors.signals.errors_stored: errors were committed (sent after the commit)."""
    for sighting in sightings:
        for check in (_critical_error, _security, _data_integrity):
            _guarded(check, sighting)
    _guarded(_repeated_patterns, sightings)


def on_outcomes(
    sender: object, *, reports: list[Any], services: dict[str, Any], actor: Any, **_: Any
) -> None:
    """recovery.breakers.signals.outcomes_recorded: a batch of outcomes was counted (traffic included)."""
    try:
        failing = [
            name for name in dict.fromkeys(r.service for r in reports if not r.success) if _rate_due(name)
        ]
        rule = selectors.trigger(TriggerKind.ERROR_RATE) if failing else None
    except Exception as error:
        log.warning("escalation trigger error_rate: could not look at outcomes: %s", error)
        return
    if rule is not None:
        for name in failing:
            _guarded(_evaluate_rate, rule, name)


def _guarded(check: Callable[..., object], *args: Any) -> None:
    try:
        check(*args)
    except Exception as error:
        log.warning(
            "escalation trigger %s failed: %s: %s", check.__name__.strip("_"), type(error).__name__, error
        )


# --- 1 to 4: errors -----------------------------------------------------------------------------------------


def _critical_error(s: Sighting) -> None:
    if s.severity not in CRITICAL_SEVERITIES:
        return
    rule = selectors.trigger(TriggerKind.CRITICAL_ERROR)
    if rule is None or not is_essential(s.service):
        return
    _raise(
        s,
        TriggerKind.CRITICAL_ERROR,
        f"critical_error:{s.service}:{s.fingerprint}",
        rule.level,
        f"{s.severity.capitalize()} error ({s.error_class}) in essential service {s.service}: {s.message}",
        f"{_errors(s.count)} of class {s.error_class} and severity {s.severity} from the essential service "
        f"{s.service}{_op(s)}.",
    )


def _security(s: Sighting) -> None:
    if s.error_class != ErrorClass.AUTHENTICATION and s.kind not in SECURITY_KINDS:
        return
    rule = selectors.trigger(TriggerKind.SECURITY)
    if rule is None:
        return
    key = f"security:{s.service}:{s.fingerprint}"
    count, window_s = rule.count, rule.window_s
    repeated = False
    if rule.repeat_level and count and window_s and not _quiet(key, higher(rule.level, rule.repeat_level)):
        repeated = _seen(s, since=timezone.now() - timedelta(seconds=window_s), at_most=count) >= count
    level = higher(rule.level, rule.repeat_level) if repeated else rule.level
    what = s.kind.replace("_", " ") if s.kind in SECURITY_KINDS else f"{s.error_class} error"
    summary = f"{_errors(s.count)} ({what}) from {s.service}{_op(s)}."
    if repeated:
        summary += f" At least {count} within {_span(window_s or 0)}: raised to {level}."
    extra = {"repeated": repeated, "repeat_count": count, "window_s": window_s}
    _raise(
        s, TriggerKind.SECURITY, key, level, f"Security: {what} in {s.service}: {s.message}", summary, extra
    )


def _data_integrity(s: Sighting) -> None:
    if s.kind not in INTEGRITY_KINDS:
        return
    rule = selectors.trigger(TriggerKind.DATA_INTEGRITY)
    if rule is None:
        return
    _raise(
        s,
        TriggerKind.DATA_INTEGRITY,
        f"data_integrity:{s.service}:{s.fingerprint}",
        rule.level,
        f"Data integrity: constraint violation in {s.service}: {s.message}",
        f"{_errors(s.count)} a classification rule marks as constraint violations, from {s.service}{_op(s)}.",
    )


def _repeated_patterns(sightings: list[Sighting]) -> None:
    rule = selectors.trigger(TriggerKind.REPEATED_PATTERN)
    if rule is None:
        return
    count, window_s = rule.count or DEFAULT_COUNT, rule.window_s or DEFAULT_WINDOW_S
    since = timezone.now() - timedelta(seconds=window_s)
    for s in sightings:
        key = f"repeated_pattern:{s.fingerprint}"
        if _quiet(key, rule.level) or _handled_lately(key):
            continue
        seen = _seen(s, since=since, at_most=count + 1)
        if seen <= count:
            continue
        seen, handled = _unhandled(s, since=since, count=count, seen=seen)
        if seen - handled <= count:
            _remember_handled(key)
            continue
        handling = f", {handled} of them recovered or being recovered" if handled else ""
        _raise(
            s,
            TriggerKind.REPEATED_PATTERN,
            key,
            rule.level,
            f"Repeated error in {s.service}: more than {count} in {_span(window_s)}: {s.message}",
            f"The same {s.error_class} error (severity {s.severity}) more than {count} times within "
            f"{_span(window_s)} from {s.service}{_op(s)}{handling}.",
            {"threshold": count, "window_s": window_s, "seen_at_least": seen, "handled": handled},
        )


def _unhandled(s: Sighting, *, since: datetime, count: int, seen: int) -> tuple[int, int]:
    """(events, handled): the pattern's events since then, and how many of them Rebound's recovery plans are
    handling (succeeded or still followed). Events are counted past the threshold by the handled ones, so that a
    storm of recovered errors with a few unrecovered ones still counts the unrecovered ones in full."""
    handled = decision_selectors.recovering_plans(s.service, s.fingerprint, since=since)
    if handled == 0:
        return seen, 0
    seen = error_selectors.pattern_event_count(s.pattern_id, since=since, at_most=count + 1 + handled)
    return seen, min(handled, seen)


def _seen(s: Sighting, *, since: datetime, at_most: int) -> int:
    """The pattern's events since then, counted up to `at_most`: without a query when this write alone reaches
    it, or when the pattern never had that many (a new pattern: most of what comes); else one LIMIT query on
    the (pattern, occurred_at) index. A pattern under the threshold costs that query at most `at_most` times
    per window; one over it is raised, then quiet (QUIET_S)."""
    if s.count >= at_most:
        return s.count
    if 0 < s.total < at_most:
        return s.total
    return error_selectors.pattern_event_count(s.pattern_id, since=since, at_most=at_most)


def _raise(
    s: Sighting,
    trigger: str,
    key: str,
    level: str,
    title: str,
    summary: str,
    extra: dict[str, Any] | None = None,
) -> None:
    if _quiet(key, level):
        _fold(key, s.count)
        return
    context = {
        "pattern_id": s.pattern_id,
        "fingerprint": s.fingerprint,
        "service": s.service,
        "operation": s.operation,
        "error_class": s.error_class,
        "severity": s.severity,
        "kind": s.kind,
        "count": s.count,
        "message": s.message[:500],
        **(extra or {}),
    }
    escalations.raise_escalation(
        Raise(
            trigger=trigger,
            dedup_key=key[:300],
            level=level,
            title=title[:200],
            summary=f"{summary}\n\nMessage: {s.message[:1000]}",
            service=s.service,
            error_class=s.error_class,
            context=context,
            links={"pattern_id": s.pattern_id},
            occurrences=s.count + _unfold(key),
        )
    )
    _remember(key, level)


# --- 5: error rate ------------------------------------------------------------------------------------------


def _rate(rule: EscalationTrigger) -> tuple[int, float, int]:
    return (
        rule.window_s or DEFAULT_WINDOW_S,
        DEFAULT_RATE if rule.rate_percent is None else float(rule.rate_percent),
        rule.min_calls or DEFAULT_MIN_CALLS,
    )


def _evaluate_rate(rule: EscalationTrigger, name: str) -> None:
    """Raise the service's error_rate escalation when the rate is over, resolve it when back under."""
    window_s, percent, min_calls = _rate(rule)
    calls, failures = traffic.window(name, window_s)
    rate = 100.0 * failures / calls if calls else 0.0
    key = f"error_rate:{name}"
    if calls >= min_calls and rate > percent:
        if _quiet(key, rule.level):
            return
        escalations.raise_escalation(
            Raise(
                trigger=TriggerKind.ERROR_RATE,
                dedup_key=key[:300],
                level=rule.level,
                title=f"Error rate of {name} at {rate:.0f}% ({failures} of {calls} calls in {_span(window_s)})"[
                    :200
                ],
                summary=f"{failures} of the {calls} calls of {name} in the last {_span(window_s)} failed "
                f"({rate:.1f}%), above the {percent:g}% the trigger allows (with at least {min_calls} calls).",
                service=name,
                context={
                    "calls": calls,
                    "failures": failures,
                    "rate_percent": round(rate, 2),
                    "threshold_percent": percent,
                    "min_calls": min_calls,
                    "window_s": window_s,
                },
            )
        )
        _remember(key, rule.level)
    elif rate <= percent:
        escalations.auto_resolve([key], reason=_rate_cleared(calls, failures, window_s, percent))


def _rate_cleared(calls: int, failures: int, window_s: int, percent: float) -> str:
    rate = 100.0 * failures / calls if calls else 0.0
    return (
        f"error rate back under {percent:g}%: {rate:.1f}% ({failures} of {calls} calls in the last "
        f"{_span(window_s)})"
    )


# --- auto-resolve (the beat sweep) ------------------------------------------------------------------------


def sweep_rates(now: datetime | None = None) -> int:
    """Resolve the repeated_pattern and error_rate escalations whose condition cleared: the pattern's events
    in the window back to at most `count`, the service's error rate back to at most `rate_percent` (or no calls
    left). Idempotent (beat, through sweeps.sweep()); a disabled trigger's escalations are left to humans.
    Returns how many were resolved."""
    now = now or timezone.now()
    resolved = 0
    for part in (_sweep_patterns, _sweep_rates):
        try:
            resolved += part(now)
        except Exception as error:  # the other part still runs
            log.warning(
                "escalation sweep: %s failed: %s: %s", part.__name__.strip("_"), type(error).__name__, error
            )
    return resolved


def _sweep_patterns(now: datetime) -> int:
    rule = selectors.trigger(TriggerKind.REPEATED_PATTERN)
    if rule is None:
        return 0
    count, window_s = rule.count or DEFAULT_COUNT, rule.window_s or DEFAULT_WINDOW_S
    since = now - timedelta(seconds=window_s)
    resolved = 0
    for escalation in selectors.open_escalations(trigger=TriggerKind.REPEATED_PATTERN):
        seen = (
            error_selectors.pattern_event_count(
                escalation.pattern_id, since=since, until=now, at_most=count + 1
            )
            if escalation.pattern_id
            else 0
        )
        handled = 0
        pattern = escalation.pattern if seen > count else None
        if pattern is not None:
            handled = decision_selectors.recovering_plans(
                escalation.service, pattern.fingerprint, since=since
            )
            if handled:
                events = error_selectors.pattern_event_count(
                    pattern.pk, since=since, until=now, at_most=count + 1 + handled
                )
                seen = events - min(handled, events)
        if seen <= count:
            errors = "errors not recovered" if handled else "errors"
            reason = f"the pattern came back to {seen} {errors} within {_span(window_s)} (at most {count})"
            resolved += escalations.auto_resolve([escalation.dedup_key], reason=reason)
    return resolved


def _sweep_rates(now: datetime) -> int:
    rule = selectors.trigger(TriggerKind.ERROR_RATE)
    if rule is None:
        return 0
    window_s, percent, _ = _rate(rule)
    resolved = 0
    for escalation in selectors.open_escalations(trigger=TriggerKind.ERROR_RATE):
        calls, failures = traffic.window(escalation.service, window_s, now=now)
        if (100.0 * failures / calls if calls else 0.0) <= percent:
            reason = _rate_cleared(calls, failures, window_s, percent)
            resolved += escalations.auto_resolve([escalation.dedup_key], reason=reason)
    return resolved


# --- this process's memory ------------------------------------------------------------------------------


def _quiet(key: str, level: str) -> bool:
    """Did this process raise the key at this level or higher less than QUIET_S ago?"""
    last = _raised.get(key)
    return (
        last is not None
        and time.monotonic() - last[0] < QUIET_S
        and LEVEL_RANK.get(last[1], -1) >= LEVEL_RANK.get(level, 0)
    )


def _handled_lately(key: str) -> bool:
    last = _handled.get(key)
    return last is not None and time.monotonic() - last < QUIET_S


def _remember_handled(key: str) -> None:
    with _lock:
        if len(_handled) >= MEMORY_MAX:
            _handled.clear()
        _handled[key] = time.monotonic()


def _fold(key: str, count: int) -> None:
    """A quiet repeat's errors, carried into the key's next raise from this process (not lost, only late)."""
    with _lock:
        if len(_folded) >= MEMORY_MAX:
            _folded.clear()
        _folded[key] = _folded.get(key, 0) + max(count, 1)


def _unfold(key: str) -> int:
    with _lock:
        return _folded.pop(key, 0)


def _remember(key: str, level: str) -> None:
    with _lock:
        if len(_raised) >= MEMORY_MAX:
            _raised.clear()
        _raised[key] = (time.monotonic(), level)


def _rate_due(name: str) -> bool:
    """May this process read the service's error rate now (at most once every RATE_EVERY_S)?"""
    now = time.monotonic()
    with _lock:
        if now - _rate_read.get(name, float("-inf")) < RATE_EVERY_S:
            return False
        if len(_rate_read) >= MEMORY_MAX:
            _rate_read.clear()
        _rate_read[name] = now
    return True


def is_essential(name: str) -> bool:
    """Is the service essential? The names are read once per BREAKER_CONFIG_CACHE_SECONDS per process, and
    only when a critical or fatal error comes: an unknown service is not essential (an operator makes it so)."""
    global _essential
    expires, names = _essential
    now = time.monotonic()
    if expires <= now:
        names = frozenset(breaker_selectors.essential_services().values_list("name", flat=True))
        _essential = (now + float(rebound("BREAKER_CONFIG_CACHE_SECONDS")), names)
    return name in names


# --- words --------------------------------------------------------------------------------------------------


def _errors(n: int) -> str:
    return "1 error" if n == 1 else f"{n} errors"


def _op(s: Sighting) -> str:
    return f" ({s.operation})" if s.operation else ""


def _span(seconds: int) -> str:
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds and seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"

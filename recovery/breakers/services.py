"""Writes of the fleet-wide breakers: permits, outcomes, overrides and service settings, and the transitions
they cause (each a BreakerTransition row, published to subscribers once committed)."""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import chain, repeat
from typing import Any, cast

import redis
from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Count
from django.utils import timezone

from core.api.errors import InvalidInput, NotFound, ServiceUnavailable
from core.audit import services as audit
from core.audit.services import Actor
from core.infra import redisconn
from core.infra.conf import rebound
from core.slugs import service_slug
from recovery import metrics
from recovery.breakers import logic, registry, signals, traffic
from recovery.breakers import metrics as breaker_metrics
from recovery.breakers.models import SETTINGS_FIELDS, BreakerTransition, Service
from recovery.breakers.schemas import (
    OutcomeBatchOutDict,
    OutcomeIn,
    OutcomeOutDict,
    OutcomeRunIn,
    TransitionOut,
    parse_outcome_body,
)
from recovery.breakers.store import Peek, current_store
from recovery.errors import intake
from recovery.errors.classification import ErrorReport, retry_after_from_headers
from recovery.errors.models import ErrorEvent
from recovery.errors.schemas import ErrorIn
from recovery.errors.services import Classified, Recorded, record_errors
from recovery.errors.taxonomy import ErrorClass

log = logging.getLogger(__name__)
CHANNEL = "rebound:breaker-transitions"


# --- permits ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PermitAnswer:
    service: str
    allowed: bool
    state: str
    retry_after_s: float | None
    permit_id: str | None
    reason: str


def request_permit(name: str, *, actor: Actor) -> PermitAnswer:
    """May a call go now? The store answers, with the operator's override where every process's permit looks:
    an override is in force at the very next permit everywhere, whatever a process's cached settings say."""
    service = registry.get(name)
    try:
        result = current_store().permit(service, registry.config_of(service), uuid.uuid4().hex)
    except redis.RedisError as error:
        return _without_store(service, error)
    if result.transitions or result.pending:
        _write_transitions(service, [result], actor)
    if result.override:
        _count_permit(name, result.override, result.allowed)
        return PermitAnswer(name, result.allowed, result.override, None, None, result.reason)
    _count_permit(name, result.state, result.allowed)
    return PermitAnswer(
        service=name,
        allowed=result.allowed,
        state=result.state,
        retry_after_s=result.retry_after_ms / 1000 if not result.allowed else None,
        permit_id=result.permit_id or None,
        reason=result.reason,
    )


def fail_mode(service: Service) -> str:
    key = "ESSENTIAL" if service.criticality == Service.Criticality.ESSENTIAL else "NON_CRITICAL"
    return str(settings.REBOUND[f"BREAKER_FAIL_MODE_{key}"])


def _without_store(service: Service, error: Exception) -> PermitAnswer:
    # Without the store, the override this process last read from the database still decides.
    override = registry.override_in_force(service)
    if override != Service.Override.AUTO:
        allowed = override != Service.Override.FORCED_OPEN
        reason = f"{override} by an operator: {service.override_reason}"
        return PermitAnswer(service.name, allowed, override, None, None, reason)
    mode = fail_mode(service)
    allowed = mode == "open"
    metrics.breaker_store_errors_total.labels(criticality=service.criticality, decision=mode).inc()
    log.warning("breaker store unreachable, failing %s for %s: %s", mode, service.name, error)
    return PermitAnswer(
        service.name,
        allowed,
        "unknown",
        None if allowed else 1.0,
        None,
        f"the breaker store is unreachable: failing {mode} for {service.criticality} services",
    )


def _count_permit(name: str, state: str, allowed: bool) -> None:
    metrics.breaker_permits_total.labels(service=name, allowed=str(allowed).lower()).inc()
    metrics.circuit_breaker_state.labels(service=name).set(metrics.BREAKER_STATE_VALUES.get(state, 0))


# --- outcomes --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutcomeReport:
    service: str
    operation: str
    success: bool
    duration_ms: float | None
    error: ErrorReport | None
    permit_id: str
    # Recovery (recovery.decisions.services.after_outcomes): the plan this call followed, and a success's result to cache.
    plan_id: str = ""
    cache_key: str = ""
    result: Any = None
    has_result: bool = False
    # The Retry-After the error gave, before the error's own cap: whether the breaker's wait was cut to
    # MAX_RETRY_AFTER_S is told in the answer (None: as in `error`).
    asked_retry_after_s: float | None = None
    # A run of this many identical outcomes in a row (a run of successes of the compact form, cut where slow
    # calls start or end): counted as many times, applied to the breaker at once.
    count: int = 1


def record_outcomes(reports: list[OutcomeReport], *, actor: Actor) -> list[OutcomeOutDict]:
    """Count each outcome into its service's breaker; failures with an error are classified and recorded too."""
    services = {name: registry.get(name) for name in dict.fromkeys(r.service for r in reports)}
    failed = [i for i, r in enumerate(reports) if r.error is not None]
    errors = [r.error for r in reports if r.error is not None]
    recorded = record_errors(errors, agent=actor.agent) if errors else []
    verdicts = {i: rec.classified for i, rec in zip(failed, recorded, strict=True)}
    items = []
    for i, report in enumerate(reports):
        service = services[report.service]
        cfg = registry.config_of(service)
        outcome = _as_outcome(report, cfg, verdicts.get(i))
        items.append((service, cfg, replace(outcome, count=report.count) if report.count > 1 else outcome))
    try:
        results: list[logic.Result | None] = list(current_store().record_many(items))
    except redis.RedisError as error:
        metrics.breaker_store_errors_total.labels(criticality="any", decision="unrecorded").inc(len(items))
        log.warning("breaker store unreachable, %d outcomes not counted: %s", len(items), error)
        results = [None] * len(items)
    # Buffered intake: this batch's errors are not in the database yet, but they are why a breaker trips now.
    queued = _queued_patterns(reports, verdicts, recorded, failed) if intake.enabled() else {}
    transitions = _write_transitions_many(
        [(s, r) for (s, _, _), r in zip(items, results, strict=True) if r], actor, queued
    )
    answers: list[OutcomeOutDict] = []
    for i, (service, _, outcome) in enumerate(items):
        result = results[i]
        if result is not None:
            state = result.override or result.state
        else:  # without the store: the override this process last read, if any
            override = registry.override_in_force(service)
            state = override if override != Service.Override.AUTO else "unknown"
        metrics.circuit_breaker_state.labels(service=service.name).set(
            metrics.BREAKER_STATE_VALUES.get(state, 0)
        )
        classified = verdicts.get(i)
        answers.append(
            {
                "service": service.name,
                "state": state,
                "transition": transitions.get(i),
                "error_class": classified.verdict.error_class if classified else None,
                "counted": bool(result) and not outcome.ignored,
                "retry_after_capped": outcome.asked_s > 0,
            }
        )
    # Calls and failures per minute, which a service's error rate is read from (before the signal: the error
    # rate trigger listens to it).
    traffic.count_runs((r.service, not r.success, r.count) for r in reports)
    # The recovery side (budget calls, cached results, plan results) listens above: see signals.py. Its
    # receivers count one call per report, so a run is handed over as that many (references to one report).
    if any(r.count > 1 for r in reports):
        reports = list(chain.from_iterable(repeat(replace(r, count=1), r.count) for r in reports))
    signals.outcomes_recorded.send(sender=OutcomeReport, reports=reports, services=services, actor=actor)
    return answers


def report_outcomes(data: object, *, actor: Actor) -> OutcomeOutDict | OutcomeBatchOutDict:
    """POST /outcomes: a body of any form the API takes (one outcome, a list, `{"outcomes": [...]}` with runs
    of successes among them, and the sender's count of dropped outcomes), validated whole before anything is
    counted (400 naming the field), then counted. One outcome is answered with one result; a list or a batch
    with one result per item, a run's being the state after its last success and the last transition it made."""
    parsed = parse_outcome_body(data, int(rebound("OUTCOMES_BATCH_MAX")))
    if parsed.dropped:
        breaker_metrics.sdk_outcomes_dropped_total.inc(parsed.dropped)
    reports, spans = _reports(parsed.items)
    results = record_outcomes(reports, actor=actor)
    if not parsed.is_batch:
        return results[0]
    return {"results": [_run_answer(results[start:end]) for start, end in spans]}


def _reports(items: list[OutcomeIn | OutcomeRunIn]) -> tuple[list[OutcomeReport], list[tuple[int, int]]]:
    """The reports the items make, and for each item the span of them that is its own: a run of successes is
    cut into runs of fast and of slow calls (by its service's `slow_call_ms`), one report each."""
    reports: list[OutcomeReport] = []
    spans = []
    for item in items:
        start = len(reports)
        if isinstance(item, OutcomeRunIn):
            reports += _run_reports(item)
        else:
            reports.append(_report(item))
        spans.append((start, len(reports)))
    return reports, spans


def _report(item: OutcomeIn) -> OutcomeReport:
    return OutcomeReport(
        item.service,
        item.operation,
        item.success,
        item.duration_ms,
        item.error.to_report() if item.error else None,
        item.permit_id,
        plan_id=str(item.plan_id) if item.plan_id else "",
        cache_key=item.cache_key,
        result=item.result,
        has_result="result" in item.model_fields_set,
        asked_retry_after_s=_asked_retry_after(item.error),
    )


def _asked_retry_after(error: ErrorIn | None) -> float | None:
    """The Retry-After an outcome's error gave, before any cap (the error's own report keeps the capped one)."""
    if error is None:
        return None
    given = error.retry_after
    return given if isinstance(given, float) else retry_after_from_headers(error.headers)


def _run_reports(run: OutcomeRunIn) -> list[OutcomeReport]:
    """A run of successes as runs of the same slowness: one report without a slow-call setting or durations,
    else one per stretch of fast or slow calls, whose duration is the stretch's longest (slow exactly when each
    of its calls is)."""
    slow_ms = registry.config_of(registry.get(run.service)).slow_ms
    durations = run.durations_ms
    if not slow_ms or not durations:
        longest = max(durations) if durations else None
        return [OutcomeReport(run.service, run.operation, True, longest, None, "", count=run.successes)]
    reports, start = [], 0
    for end in range(1, len(durations) + 1):
        if end == len(durations) or (durations[end] >= slow_ms) != (durations[start] >= slow_ms):
            longest = max(durations[start:end])
            reports.append(
                OutcomeReport(run.service, run.operation, True, longest, None, "", count=end - start)
            )
            start = end
    return reports


def _run_answer(answers: list[OutcomeOutDict]) -> OutcomeOutDict:
    """One item's answer from those of its reports (one, or a run's stretches): the state after the last, the
    last transition any of them made."""
    if len(answers) == 1:
        return answers[0]
    last = dict(answers[-1])
    last["transition"] = next((a["transition"] for a in reversed(answers) if a["transition"]), None)
    last["counted"] = any(a["counted"] for a in answers)
    return cast(OutcomeOutDict, last)


def _as_outcome(report: OutcomeReport, cfg: logic.Config, classified: Classified | None) -> logic.Outcome:
    # An operator's override is applied by the store, from the state every process shares.
    if report.success:
        slow = bool(cfg.slow_ms and report.duration_ms is not None and report.duration_ms >= cfg.slow_ms)
        return logic.Outcome(failure=slow, permit_id=report.permit_id)
    if classified is None:
        return logic.Outcome(failure=True, permit_id=report.permit_id)
    verdict = classified.verdict
    retry_after = None
    if verdict.error_class == ErrorClass.RATE_LIMIT:
        kept = classified.report.retry_after_s
        retry_after = report.asked_retry_after_s if kept and report.asked_retry_after_s else kept
    retry_after_ms, asked_s = capped_retry_after(retry_after, cfg.cap_ms)
    return logic.Outcome(
        failure=verdict.counts_toward_breaker,
        ignored=not verdict.counts_toward_breaker,
        permit_id=report.permit_id,
        retry_after_ms=retry_after_ms,
        asked_s=asked_s,
    )


def capped_retry_after(seconds: float | None, cap_ms: int) -> tuple[int, float]:
    """A Retry-After in ms, at most the cap (MAX_RETRY_AFTER_S), and what it asked for when that was more (else
    0): a remote's `Retry-After: 1000000000000` must not shut a service for 30,000 years."""
    if not seconds or not math.isfinite(seconds) or seconds <= 0:
        return 0, 0.0
    if seconds * 1000 > cap_ms:
        return cap_ms, float(seconds)
    return int(seconds * 1000), 0.0


# --- transitions -----------------------------------------------------------------------------------------


PATTERNS_SHOWN = 3


def recent_patterns(service: str, queued: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The patterns behind a service's failures of the last five minutes, written or still queued: the 'why'
    of a trip."""
    since = timezone.now() - timedelta(minutes=5)
    rows = (
        ErrorEvent.objects.filter(service=service, occurred_at__gte=since)
        .values(
            "pattern_id",
            "pattern__fingerprint",
            "pattern__error_class",
            "pattern__message_template",
            "pattern__type_name",
        )
        .annotate(count=Count("id"))
        .order_by("-count")[: PATTERNS_SHOWN * 2]
    )
    merged: dict[str, dict[str, Any]] = {
        r["pattern__fingerprint"]: {
            "pattern": r["pattern_id"],
            "error_class": r["pattern__error_class"],
            "type_name": r["pattern__type_name"],
            "message_template": r["pattern__message_template"],
            "count": r["count"],
        }
        for r in rows
    }
    for item in queued or []:
        known = merged.setdefault(
            item["fingerprint"], {k: v for k, v in item.items() if k != "fingerprint"} | {"count": 0}
        )
        known["count"] += item["count"]
    return sorted(merged.values(), key=lambda p: -p["count"])[:PATTERNS_SHOWN]


def _queued_patterns(
    reports: list[OutcomeReport], verdicts: dict[int, Classified], recorded: list[Recorded], failed: list[int]
) -> dict[str, list[dict[str, Any]]]:
    """This batch's errors by service and pattern, for transitions written before the errors' rows are."""
    by_service: dict[str, dict[str, dict[str, Any]]] = {}
    pattern_ids = {i: rec.pattern_id for i, rec in zip(failed, recorded, strict=True)}
    for i, classified in verdicts.items():
        patterns = by_service.setdefault(reports[i].service, {})
        entry = patterns.setdefault(
            classified.fingerprint,
            {
                "fingerprint": classified.fingerprint,
                "pattern": pattern_ids.get(i),
                "error_class": classified.verdict.error_class,
                "type_name": classified.report.type_name,
                "message_template": classified.template,
                "count": 0,
            },
        )
        entry["count"] += 1
    return {service: list(patterns.values()) for service, patterns in by_service.items()}


def _clean(value: Any) -> Any:
    """Text a row can always hold: no NUL (PostgreSQL refuses it in text and JSON) and no lone surrogate (not
    UTF-8). A transition's row must never fail on what an agent's error said: its state has already changed."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def _window(facts: logic.Facts, patterns: list[dict[str, Any]]) -> dict[str, Any]:
    """The window a transition saw (before an opening emptied it), the patterns behind it, and what the store
    needs to rebuild the state from this row: its seq, and for an opening when it ends."""
    rate = round(100.0 * facts.failures / facts.calls, 2) if facts.calls else 0.0
    window: dict[str, Any] = {
        "calls": facts.calls,
        "failures": facts.failures,
        "rate": rate,
        "consecutive": facts.consecutive,
        "patterns": patterns,
    }
    if facts.seq:
        window["seq"] = facts.seq
    if facts.open_until:
        window["open_until"] = _iso(facts.open_until)
        window["wait_ms"] = facts.wait_ms
    return _clean(window)


def _actor_fields(actor: Actor, check: str = "") -> dict[str, Any]:
    if check:  # a health check's verdict made it, whoever passed it on
        return {"actor": BreakerTransition.Actor.HEALTH_CHECK, "actor_name": _clean(check)[:100]}
    if actor.user is not None:
        return {"actor": BreakerTransition.Actor.USER, "actor_user": actor.user}
    if actor.agent is not None:
        return {"actor": BreakerTransition.Actor.AGENT, "actor_agent": actor.agent}
    return {"actor": BreakerTransition.Actor.AUTOMATIC}


@dataclass(frozen=True)
class Move:
    """One transition the store made, on its way to its row."""

    index: int  # of the (service, result) pair it came from
    service: Service
    from_state: str
    to_state: str
    reason: str
    facts: logic.Facts


def _write_transitions(service: Service, results: list[logic.Result], actor: Actor) -> None:
    _write_transitions_many([(service, r) for r in results], actor)


def _write_transitions_many(
    pairs: list[tuple[Service, logic.Result]],
    actor: Actor,
    queued: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[int, dict[str, Any]]:
    """Write one row per transition the store made; returns, by index of the pair, the last transition as the
    API shows it.

    The store keeps each transition pending (in Redis, with the state it changed) until its row is written:
    when the database refuses or cannot be reached, the transition stays pending and is written by the next
    call that finds it there, or by beat (flush_pending); state and history never disagree for long, and a
    transition is never lost or written twice (its seq names it)."""
    moves = [
        Move(index, service, *move, facts)
        for index, (service, result) in enumerate(pairs)
        for move, facts in zip(result.transitions, result.facts, strict=True)
    ]
    # Older transitions still pending first, so that the feed's ids keep the order in which they happened.
    behind = {s.pk: s for s, r in pairs if r.pending > len(r.transitions)}
    if behind:
        flush_pending(list(behind.values()))
    written: dict[int, dict[str, Any]] = {}
    if moves:
        try:
            for move, row in _record(moves, actor, queued or {}):
                written[move.index] = TransitionOut.of(row).model_dump()
        except DatabaseError as error:
            metrics.breaker_store_errors_total.labels(criticality="any", decision="transition_pending").inc(
                len(moves)
            )
            log.error("%d breaker transitions not written yet (kept pending): %s", len(moves), error)
    return written


def _record(
    moves: list[Move], actor: Actor, queued: dict[str, list[dict[str, Any]]]
) -> list[tuple[Move, BreakerTransition]]:
    """The rows of these transitions, written once: under a lock on their services, a seq already written (by
    another process flushing the pending list) is read back instead of written again. The store forgets them
    once the rows are committed."""
    patterns: dict[str, list[dict[str, Any]]] = {}
    for move in moves:
        if move.service.name not in patterns:
            patterns[move.service.name] = recent_patterns(move.service.name, queued.get(move.service.name))
    now = timezone.now()
    rows = [
        BreakerTransition(
            service=move.service,
            from_state=move.from_state,
            to_state=move.to_state,
            reason=_clean(move.reason),
            window=_window(move.facts, patterns[move.service.name]),
            created_at=datetime.fromtimestamp(move.facts.at / 1000, tz=UTC) if move.facts.at else now,
            **_actor_fields(actor, move.facts.check),
        )
        for move in moves
    ]
    ids = sorted({move.service.pk for move in moves})
    seqs = [move.facts.seq for move in moves]
    with transaction.atomic():
        list(Service.objects.select_for_update().filter(pk__in=ids).order_by("pk").values_list("pk"))
        existing = {
            (row.service_id, row.window.get("seq")): row
            for row in BreakerTransition.objects.select_related("service").filter(
                service_id__in=ids, window__seq__in=seqs
            )
        }
        fresh = [row for row in rows if (row.service.pk, row.window.get("seq")) not in existing]
        created = BreakerTransition.objects.bulk_create(fresh)
        transaction.on_commit(lambda: announce(created))
        transaction.on_commit(lambda: _acknowledge(moves))
    done = {(row.service.pk, row.window.get("seq")): row for row in created} | existing
    return [(move, done[(move.service.pk, move.facts.seq)]) for move in moves]


def _acknowledge(moves: list[Move]) -> None:
    """Tell the store these transitions have their rows (best effort: a later flush finds the rows and says it
    again)."""
    by_service: dict[int, tuple[Service, set[str]]] = {}
    for move in moves:
        by_service.setdefault(move.service.pk, (move.service, set()))[1].add(move.facts.seq)
    try:
        for service, seqs in by_service.values():
            current_store().acknowledge(service, seqs)
    except redis.RedisError as error:
        log.warning("could not acknowledge written breaker transitions: %s", error)


# A transition younger than this is still being written by the process that made it: a flush leaves it to it.
PENDING_GRACE_MS = 2000


def flush_pending(services: list[Service] | None = None, grace_ms: int | None = None) -> int:
    """Write the rows of transitions the store still holds as pending (their first write failed, or the
    process that made them died before it): beat runs it, and so does any call that finds some. Returns how
    many transitions were settled."""
    store = current_store()
    targets = services if services is not None else list(Service.objects.all())
    grace_ms = PENDING_GRACE_MS if grace_ms is None else grace_ms
    now = int(time.time() * 1000)
    count = 0
    for service in targets:
        try:
            entries = [e for e in store.pending(service) if now - _int(e.get("at")) >= grace_ms]
        except redis.RedisError as error:
            log.warning("could not read the pending breaker transitions of %s: %s", service.name, error)
            continue
        if not entries:
            continue
        moves = [Move(0, service, e["from"], e["to"], e["why"], _facts(e)) for e in entries]
        try:
            rows = _record(moves, Actor(source="system"), {})
        except DatabaseError as error:
            log.error("pending breaker transitions of %s still not written: %s", service.name, error)
            continue
        count += len(rows)
        log.warning("wrote the rows of %d pending breaker transitions of %s", len(rows), service.name)
    return count


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and math.isfinite(value) else 0


def _facts(entry: dict[str, Any]) -> logic.Facts:
    return logic.Facts(
        seq=entry["seq"],
        at=_int(entry.get("at")),
        calls=_int(entry.get("calls")),
        failures=_int(entry.get("failures")),
        consecutive=_int(entry.get("consecutive")),
        open_until=_int(entry.get("open_until")),
        wait_ms=_int(entry.get("wait_ms")),
        check=entry["check"] if isinstance(entry.get("check"), str) else "",
    )


def announce(rows: list[BreakerTransition]) -> None:
    """Publish and count committed transitions. Publishing comes first, because every waiting agent is woken by
    it and the rest can wait a millisecond; it is best effort: long-poll readers fall back to the table."""
    if not rows:
        return
    _publish(rows)
    for row in rows:
        metrics.breaker_transitions_total.labels(
            service=row.service.name, from_state=row.from_state, to_state=row.to_state
        ).inc()
    # The degradation levels follow the breakers: they are evaluated again now the transitions are in.
    signals.transitions_committed.send(sender=BreakerTransition, rows=rows)


def _publish(rows: list[BreakerTransition]) -> None:
    if not settings.REDIS_URL:
        return
    try:
        client = redisconn.client()
        pipe = client.pipeline(transaction=False)
        for row in rows:
            pipe.publish(CHANNEL, json.dumps(TransitionOut.of(row).model_dump()))
        pipe.execute()
    except redis.RedisError as error:
        log.warning("could not publish %d breaker transitions: %s", len(rows), error)


# --- health checks and healing actions (healing/ calls these) ----------------------------------------------


def health_verdict(name: str, *, healthy: bool, check: str, reason: str) -> str:
    """A health check's verdict on a service, applied to its breaker for the whole fleet; returns the effect.

    Unhealthy: a closed or half-open breaker opens ("opened"), held open for MAX_RETRY_AFTER_S since the check,
    not a wait, says when it is over; an open one is held so again ("already open", no new transition), so a
    check may re-assert its verdict at every failing run. Healthy: an open breaker half-opens ("moved to
    half_open") so that real trial calls confirm recovery; otherwise "unchanged: closed" or "unchanged:
    half_open". The transition's actor is the health check and its reason `reason` (the failing result), so the
    breaker's `why` shows it. An operator's override in force wins: nothing changes, and the answer says so
    ("override forced_closed in force: verdict not applied") for the caller to record beside its verdict.
    Without the breaker store: "breaker store unreachable: verdict not applied". Registers an unknown service
    (as an agent's first call does); a name that is no slug is a 400 (InvalidInput, field "service"). Call it
    outside transaction.atomic(): it talks to the breaker store (Redis), and writes its rows in their own."""
    service = registry.get(service_slug(name))
    cfg = registry.config_of(service)
    check = check.strip()
    why = reason.strip() or (
        f"health check {check} passed: trial calls allowed" if healthy else f"health check {check} failed"
    )
    try:
        result = current_store().health_verdict(service, cfg, healthy=healthy, check=check, why=why)
    except redis.RedisError as error:
        metrics.breaker_store_errors_total.labels(
            criticality=service.criticality, decision="verdict_not_applied"
        ).inc()
        log.warning(
            "breaker store unreachable: verdict of health check %s on %s not applied: %s", check, name, error
        )
        return "breaker store unreachable: verdict not applied"
    if result.transitions or result.pending:
        # Outside any transaction (the store's call is network I/O); the rows are written in their own.
        _write_transitions(service, [result], Actor(source="system"))
    _set_state_gauge(service.name, result.override or result.state)
    return result.reason


def reset_breaker(name: str, *, reason: str, actor: Actor) -> str:
    """Close a breaker's automatic state and empty its window (the built-in healing action `reset_breaker`):
    a transition to closed with the actor, and the audit event `breaker.reset`. An operator's override in force
    stays in force (the operator lifts it); the answer says so. Returns the effect: "closed (was open)",
    "closed (was half_open)" or "already closed: window emptied", with "; override forced_open still in force"
    when one is. 404 for an unknown service; 503 when the breaker store cannot be reached (nothing changed).
    Call it outside transaction.atomic(), as health_verdict."""
    reason = audit.require_reason(reason)
    service = Service.objects.filter(name=service_slug(name)).first()
    if service is None:
        raise NotFound(f"Unknown service {name!r}.", field="service")
    cfg = registry.config_of(service)
    try:
        result = current_store().close(service, cfg, f"reset: {reason}")
    except redis.RedisError as error:
        log.warning("breaker store unreachable: %s not reset: %s", name, error)
        raise ServiceUnavailable(
            "The breaker store cannot be reached: the breaker was not reset.", field="service"
        ) from error
    if result.transitions or result.pending:
        _write_transitions(service, [result], actor)
    audit.record(
        actor,
        "breaker.reset",
        service,
        reason=reason,
        before={"state": result.before},
        after={"state": result.state, "override": result.override or Service.Override.AUTO},
    )
    _set_state_gauge(service.name, result.override or result.state)
    return result.reason


def _set_state_gauge(name: str, state: str) -> None:
    metrics.circuit_breaker_state.labels(service=name).set(metrics.BREAKER_STATE_VALUES.get(state, 0))


def set_override(*, name: str, mode: str, reason: str, expires_at: datetime | None, actor: Actor) -> Service:
    """Force a breaker open or closed, disable it, or return it to automatic; audited and a transition.

    The service row (with the audit event and the transition) is the record; the store's shared state is where
    every process's next permit looks, so the override is written there too, at once. A breaker whose stored
    state cannot be read is rebuilt on the way: an override always goes through."""
    reason = audit.require_reason(reason)
    if mode not in Service.Override.values:
        raise InvalidInput(f"mode must be one of {', '.join(Service.Override.values)}", field="mode")
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidInput("expires_at must be in the future", field="expires_at")
    service = registry.get(name)
    service.refresh_from_db()
    cfg = registry.config_of(service)
    live = _peek(service, cfg)
    before_state = _effective(service, live)
    before = audit.snapshot(service, ["override", "override_reason", "override_until"])
    auto = mode == Service.Override.AUTO
    with transaction.atomic():
        Service.objects.filter(pk=service.pk).update(
            override=mode, override_reason="" if auto else reason, override_until=None if auto else expires_at
        )
        service.refresh_from_db()
        audit.record(
            actor,
            "breaker.override",
            service,
            reason=reason,
            before=before,
            after=audit.snapshot(service, ["override", "override_reason", "override_until"]),
        )
        after_state = _effective(service, live)
        if after_state != before_state:
            _operator_transition(service, before_state, after_state, f"operator: {reason}", actor, live)
    registry.forget(name)
    _store_override(service, cfg)
    return service


def _peek(service: Service, cfg: logic.Config) -> Peek | None:
    try:
        return current_store().peek(service, cfg)
    except redis.RedisError:
        return None


def _effective(service: Service, live: Peek | None) -> str:
    """The state a permit finds: the service row's override in force, else the automatic state (half-open once
    an open breaker's wait is over; unknown without the store)."""
    override = registry.override_in_force(service)
    if override != Service.Override.AUTO:
        return override
    if live is None:
        return "unknown"
    if live.state == logic.OPEN and live.open_until <= live.now:
        return logic.HALF_OPEN
    return live.state


def _operator_transition(
    service: Service, before: str, after: str, reason: str, actor: Actor, live: Peek | None
) -> None:
    """A transition the operator's override (or its expiry) made: written in the transaction that changes the
    service row, so that the two never disagree."""
    open_until = live.open_until if live is not None and after == logic.OPEN else 0
    facts = logic.Facts(
        seq="",
        at=0,
        calls=live.calls if live else 0,
        failures=live.failures if live else 0,
        consecutive=live.consecutive if live else 0,
        open_until=open_until,
    )
    row = BreakerTransition.objects.create(
        service=service,
        from_state=before,
        to_state=after,
        reason=_clean(reason),
        window=_window(facts, recent_patterns(service.name)),
        created_at=timezone.now(),
        **_actor_fields(actor),
    )
    transaction.on_commit(lambda: announce([row]))


def _store_override(service: Service, cfg: logic.Config) -> None:
    """Write the service row's override where every permit looks. Without the store, permits fall back on the
    row (within BREAKER_CONFIG_CACHE_SECONDS), and beat writes it there once the store answers (sync_overrides)."""
    override = registry.override_in_force(service)
    until = _ms(service.override_until) if service.override_until is not None else 0
    try:
        current_store().set_override(service, cfg, override, until, service.override_reason)
    except redis.RedisError as error:
        log.warning("the override of %s is not in the breaker store yet: %s", service.name, error)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def create_service(*, data: dict[str, Any], actor: Actor, reason: str = "") -> Service:
    """Register a service (operators; audited). Agents' first calls register unknown services by themselves."""
    service = Service(name=data.get("name", ""), **{k: v for k, v in data.items() if k in SETTINGS_FIELDS})
    audit.full_clean(service)
    _check_waits(service)
    with transaction.atomic():
        service.save()
        audit.record(
            actor,
            "service.create",
            service,
            reason=reason.strip(),
            after=audit.snapshot(service, ["name", *SETTINGS_FIELDS]),
        )
    registry.forget(service.name)
    return service


def _check_waits(service: Service) -> None:
    """No wait longer than MAX_RETRY_AFTER_S, and finite numbers (Django's validators let NaN through)."""
    cap = float(rebound("MAX_RETRY_AFTER_S"))
    for name in ("wait_duration_s", "max_wait_s"):
        value = float(getattr(service, name))
        if not math.isfinite(value) or value > cap:
            raise InvalidInput(f"{name} must be at most {cap:g} s (MAX_RETRY_AFTER_S)", field=name)
    for name in ("failure_rate_threshold", "wait_multiplier"):
        if not math.isfinite(float(getattr(service, name))):
            raise InvalidInput(f"{name} must be a finite number", field=name)
    if float(service.wait_multiplier) > registry.MAX_MULTIPLIER:
        raise InvalidInput(
            f"wait_multiplier must be at most {registry.MAX_MULTIPLIER:g}", field="wait_multiplier"
        )


def update_service(*, name: str, data: dict[str, Any], actor: Actor, reason: str) -> Service:
    reason = audit.require_reason(reason)
    with transaction.atomic():
        service = Service.objects.select_for_update().filter(name=name).first()
        if service is None:
            raise NotFound(f"Unknown service {name!r}.", field="service")
        before = audit.snapshot(service, SETTINGS_FIELDS)
        for key, value in data.items():
            if key in SETTINGS_FIELDS:
                setattr(service, key, value)
        audit.full_clean(service)
        _check_waits(service)
        service.save()
        audit.record(
            actor,
            "service.update",
            service,
            reason=reason,
            before=before,
            after=audit.snapshot(service, SETTINGS_FIELDS),
        )
    registry.forget(name)
    return service


def expire_overrides() -> int:
    """Return breakers whose override has expired to automatic, with a transition each (beat, every 30 s)."""
    now = timezone.now()
    expired = 0
    for service in Service.objects.exclude(override=Service.Override.AUTO).filter(override_until__lte=now):
        cfg = registry.config_of(service)
        live = _peek(service, cfg)
        before_state = service.override
        with transaction.atomic():
            # Compare-and-set: only the process that clears it writes the transition.
            if not Service.objects.filter(
                pk=service.pk, override=service.override, override_until__lte=now
            ).update(override=Service.Override.AUTO, override_reason="", override_until=None):
                continue
            service.override, service.override_reason, service.override_until = (
                Service.Override.AUTO,
                "",
                None,
            )
            after_state = _effective(service, live)
            reason = "the operator's override expired: back to automatic"
            _operator_transition(service, before_state, after_state, reason, Actor(source="system"), live)
        expired += 1
        registry.forget(service.name)
        _store_override(service, cfg)
    return expired


def sync_overrides() -> int:
    """Write every service row's override into the store where it differs (an override set while the store
    could not be reached, or lost with it). Returns how many were written."""
    synced = 0
    for service in Service.objects.all():
        cfg = registry.config_of(service)
        live = _peek(service, cfg)
        if live is None:
            continue
        override = registry.override_in_force(service)
        wanted = "" if override == Service.Override.AUTO else override
        until = _ms(service.override_until) if wanted and service.override_until is not None else 0
        if live.override == wanted and (
            not wanted or (live.override_reason, live.override_until) == (service.override_reason, until)
        ):
            continue
        _store_override(service, cfg)
        synced += 1
    return synced


def maintain() -> int:
    """Beat's upkeep of the breakers (every 30 s): expire overrides, write overrides the store missed, and
    write transitions still pending. Returns how many overrides expired."""
    expired = expire_overrides()
    sync_overrides()
    flush_pending()
    return expired

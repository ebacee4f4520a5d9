"""Writes of the fleet-wide breakers: permits, outcomes, overrides and service settings, and the transitions
they cause (each a BreakerTransition row, published to subscribers once committed)."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from core.api.errors import InvalidInput, NotFound
from core.audit import services as audit
from core.audit.services import Actor
from core.infra import redisconn
from recovery import metrics
from recovery.breakers import logic, registry, signals
from recovery.breakers.models import SETTINGS_FIELDS, BreakerTransition, Service
from recovery.breakers.schemas import OutcomeOutDict, TransitionOut
from recovery.breakers.selectors import effective_state
from recovery.breakers.store import current_store
from recovery.errors import intake
from recovery.errors.classification import ErrorReport
from recovery.errors.models import ErrorEvent
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
    service = registry.get(name)
    override = registry.override_in_force(service)
    if override != Service.Override.AUTO:
        allowed = override != Service.Override.FORCED_OPEN
        answer = PermitAnswer(
            name, allowed, override, None, None, f"{override} by an operator: {service.override_reason}"
        )
        _count_permit(name, override, allowed)
        return answer
    try:
        result = current_store().permit(service, registry.config_of(service), uuid.uuid4().hex)
    except redis.RedisError as error:
        return _without_store(service, error)
    if result.transitions:
        _write_transitions(service, [result], actor)
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
        items.append((service, cfg, _as_outcome(report, cfg, verdicts.get(i), service)))
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
    for i, (service, _, _) in enumerate(items):
        result = results[i]
        override = registry.override_in_force(service)
        state = override if override != Service.Override.AUTO else (result.state if result else "unknown")
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
                "counted": bool(result) and not items[i][2].ignored,
            }
        )
    # The recovery side (budget calls, cached results, plan results) listens above: see signals.py.
    signals.outcomes_recorded.send(sender=OutcomeReport, reports=reports, services=services, actor=actor)
    return answers


def _as_outcome(
    report: OutcomeReport, cfg: logic.Config, classified: Classified | None, service: Service
) -> logic.Outcome:
    frozen = registry.override_in_force(service) != Service.Override.AUTO
    if report.success:
        slow = bool(cfg.slow_ms and report.duration_ms is not None and report.duration_ms >= cfg.slow_ms)
        return logic.Outcome(failure=slow, permit_id=report.permit_id, frozen=frozen)
    if classified is None:
        return logic.Outcome(failure=True, permit_id=report.permit_id, frozen=frozen)
    verdict = classified.verdict
    retry_after = classified.report.retry_after_s if verdict.error_class == ErrorClass.RATE_LIMIT else None
    return logic.Outcome(
        failure=verdict.counts_toward_breaker,
        ignored=not verdict.counts_toward_breaker,
        permit_id=report.permit_id,
        retry_after_ms=int(retry_after * 1000) if retry_after else 0,
        frozen=frozen,
    )


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


def _window(result: logic.Result, patterns: list[dict[str, Any]]) -> dict[str, Any]:
    calls, failures = result.snapshot or (result.calls, result.failures)
    rate = round(100.0 * failures / calls, 2) if calls else 0.0
    return {
        "calls": calls,
        "failures": failures,
        "rate": rate,
        "consecutive": result.consecutive,
        "patterns": patterns,
    }


def _actor_fields(actor: Actor) -> dict[str, Any]:
    if actor.user is not None:
        return {"actor": BreakerTransition.Actor.USER, "actor_user": actor.user}
    if actor.agent is not None:
        return {"actor": BreakerTransition.Actor.AGENT, "actor_agent": actor.agent}
    return {"actor": BreakerTransition.Actor.AUTOMATIC}


def _write_transitions(service: Service, results: list[logic.Result], actor: Actor) -> None:
    _write_transitions_many([(service, r) for r in results], actor)


def _write_transitions_many(
    pairs: list[tuple[Service, logic.Result]],
    actor: Actor,
    queued: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[int, dict[str, Any]]:
    """Write one row per transition; returns, by index of the pair, the last transition as the API shows it."""
    if not any(r.transitions for _, r in pairs):
        return {}
    now = timezone.now()
    rows: list[tuple[int, BreakerTransition]] = []
    patterns: dict[str, list[dict[str, Any]]] = {}
    for index, (service, result) in enumerate(pairs):
        for from_state, to_state, reason in result.transitions:
            if service.name not in patterns:
                patterns[service.name] = recent_patterns(service.name, (queued or {}).get(service.name))
            rows.append(
                (
                    index,
                    BreakerTransition(
                        service=service,
                        from_state=from_state,
                        to_state=to_state,
                        reason=reason,
                        window=_window(result, patterns[service.name]),
                        created_at=now,
                        **_actor_fields(actor),
                    ),
                )
            )
    with transaction.atomic():
        created = BreakerTransition.objects.bulk_create([row for _, row in rows])
        transaction.on_commit(lambda: announce(created))
    return {index: TransitionOut.of(row).model_dump() for (index, _), row in zip(rows, created, strict=True)}


def announce(rows: list[BreakerTransition]) -> None:
    """Count and publish committed transitions. Publishing is best effort: long-poll readers use the table."""
    if not rows:
        return
    for row in rows:
        metrics.breaker_transitions_total.labels(
            service=row.service.name, from_state=row.from_state, to_state=row.to_state
        ).inc()
    # The degradation levels follow the breakers: they are evaluated again now the transitions are in.
    signals.transitions_committed.send(sender=BreakerTransition, rows=rows)
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


def set_override(*, name: str, mode: str, reason: str, expires_at: datetime | None, actor: Actor) -> Service:
    """Force a breaker open or closed, disable it, or return it to automatic; audited and a transition."""
    reason = audit.require_reason(reason)
    if mode not in Service.Override.values:
        raise InvalidInput(f"mode must be one of {', '.join(Service.Override.values)}", field="mode")
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidInput("expires_at must be in the future", field="expires_at")
    service = registry.get(name)
    before_state = effective_state(service)
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
    registry.forget(name)
    after_state = effective_state(service)
    if after_state != before_state:
        result = logic.Result(
            state=after_state, transitions=[(before_state, after_state, f"operator: {reason}")]
        )
        _write_transitions(service, [result], actor)
    return service


def create_service(*, data: dict[str, Any], actor: Actor, reason: str = "") -> Service:
    """Register a service (operators; audited). Agents' first calls register unknown services by themselves."""
    service = Service(name=data.get("name", ""), **{k: v for k, v in data.items() if k in SETTINGS_FIELDS})
    audit.full_clean(service)
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
    """Return breakers whose override has expired to automatic, with a transition each (beat, every minute)."""
    now = timezone.now()
    expired = 0
    for service in Service.objects.exclude(override=Service.Override.AUTO).filter(override_until__lte=now):
        # Compare-and-set: only the process that clears it writes the transition.
        if not Service.objects.filter(
            pk=service.pk, override=service.override, override_until__lte=now
        ).update(override=Service.Override.AUTO, override_reason="", override_until=None):
            continue
        expired += 1
        registry.forget(service.name)
        before_state, service.override = service.override, Service.Override.AUTO
        after_state = effective_state(service)
        result = logic.Result(
            state=after_state,
            transitions=[(before_state, after_state, "the operator's override expired: back to automatic")],
        )
        _write_transitions(service, [result], Actor(source="system"))
    return expired

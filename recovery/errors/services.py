"""Writes of the recovery app: agents and keys, classification rules, and error intake."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from core.access.models import Agent
from core.api.errors import Conflict
from core.audit import services as audit
from core.audit.services import Actor
from core.infra import request_ids
from recovery import metrics
from recovery.errors import intake, rules_cache, signals, storable
from recovery.errors.classification import ErrorReport, classify, fingerprint, message_template
from recovery.errors.models import RULE_FIELDS, ClassificationRule, ErrorEvent, IdempotencyRecord
from recovery.errors.schemas import BatchSummaryDict
from recovery.errors.taxonomy import Severity
from recovery.errors.writes import (
    Classified,
    _event_fields,
    _pattern_rows,
    _record_portable,
    _record_postgres,
)

log = logging.getLogger(__name__)


# --- Classification rules --------------------------------------------------------------------------------


def create_rule(*, data: dict[str, Any], actor: Actor, reason: str) -> ClassificationRule:
    reason = audit.require_reason(reason)
    rule = ClassificationRule(**{k: v for k, v in data.items() if k in RULE_FIELDS})
    audit.full_clean(rule)
    with _name_taken_is_a_conflict(rule.name), transaction.atomic():
        rule.save()
        audit.record(actor, "rule.create", rule, reason=reason, after=audit.snapshot(rule, RULE_FIELDS))
    return rule


@contextmanager
def _name_taken_is_a_conflict(name: str) -> Iterator[None]:
    # full_clean() checked the name is free; another request may have taken it since (unique in the database).
    try:
        yield
    except IntegrityError as error:
        raise Conflict(f"A rule named {name!r} was created meanwhile.", field="name") from error


def update_rule(
    *, rule: ClassificationRule, data: dict[str, Any], actor: Actor, reason: str
) -> ClassificationRule:
    reason = audit.require_reason(reason)
    before = audit.snapshot(rule, RULE_FIELDS)
    for key, value in data.items():
        if key in RULE_FIELDS:
            setattr(rule, key, value)
    audit.full_clean(rule)
    with _name_taken_is_a_conflict(rule.name), transaction.atomic():
        rule.save()
        audit.record(
            actor, "rule.update", rule, reason=reason, before=before, after=audit.snapshot(rule, RULE_FIELDS)
        )
    return rule


def delete_rule(*, rule: ClassificationRule, actor: Actor, reason: str) -> None:
    reason = audit.require_reason(reason)
    if rule.builtin:
        # A deleted built-in could only come back by hand; disabling keeps it one click from return.
        raise Conflict(f"{rule.name!r} is a built-in rule: disable it instead of deleting it.")
    with transaction.atomic():
        audit.record(actor, "rule.delete", rule, reason=reason, before=audit.snapshot(rule, RULE_FIELDS))
        rule.delete()


@dataclass(frozen=True)
class Recorded:
    classified: Classified
    pattern_id: int | None  # None: a new pattern whose first reports are still queued (buffered intake)
    pattern_total: int


def classify_report(report: ErrorReport) -> Classified:
    verdict = classify(report, rules_cache.active_rules())
    template = message_template(report.message)
    return Classified(report, verdict, template, fingerprint(report, verdict.error_class, template))


def storable_report(report: ErrorReport) -> ErrorReport:
    """The report as the database can keep it. The API's reports were refused before this if they held what it
    cannot (recovery/errors/schemas.py); reports built inside Rebound from what a remote answered are cleaned
    instead, since they are no client's input to refuse and must not fail the write (or the drain) later."""
    if report.checked:
        return report
    problem = (
        len(report.service) > 100
        or len(report.operation) > 200
        or len(report.type_name) > 200
        or storable.text_problem(report.message)
        or storable.text_problem(report.type_name)
        or storable.text_problem(report.operation)
        or storable.text_problem(report.service)
        or (storable.context_problem(report.context) if report.context else None)
    )
    if problem is None:
        return report
    return dataclasses.replace(
        report,
        service=storable.clean_text(report.service)[:100],
        operation=storable.clean_text(report.operation)[:200],
        type_name=storable.clean_text(report.type_name)[:200],
        message=storable.clean_text(report.message),
        context=storable.clean_context(report.context),
        checked=True,
    )


def record_errors(reports: list[ErrorReport], *, agent: Agent | None) -> list[Recorded]:
    """Classify, count into patterns and store every error, all or nothing."""
    classified = [classify_report(storable_report(r)) for r in reports]
    now = timezone.now()
    request_id = request_ids.get_request_id() or ""
    patterns: dict[str, tuple[int | None, int]]
    events = [_event_fields(c, agent, now, request_id) for c in classified]
    buffered = _buffer(classified, events, now) if intake.buffering() else None
    sightings: list[signals.Sighting] = []
    if buffered is not None:
        patterns = buffered  # errors_stored comes from the drain, which writes them
    else:
        record = _record_postgres if connection.vendor == "postgresql" else _record_portable
        patterns = dict(record(classified, events, now))
        if signals.listened():  # the triggers above (healing/)
            sightings = _sightings(classified, patterns)
    if connection.in_atomic_block:
        transaction.on_commit(lambda: _committed(classified, sightings))
    else:
        # Not through on_commit: outside a transaction it would check the database connection (a round trip
        # on a path that, buffered, never touches the database).
        _committed(classified, sightings)
    return [Recorded(c, *patterns[c.fingerprint]) for c in classified]


def _buffer(
    classified: list[Classified], events: list[dict[str, Any]], now: datetime
) -> dict[str, tuple[int | None, int]] | None:
    try:
        return intake.enqueue(
            _pattern_rows(classified, now),
            [(c.fingerprint, e) for c, e in zip(classified, events, strict=True)],
        )
    except redis.RedisError as error:
        # An accepted report is never dropped: without Redis it is written in the request.
        log.warning("intake buffer unreachable, writing %d errors synchronously: %s", len(classified), error)
        return None


def _sightings(
    classified: list[Classified], patterns: dict[str, tuple[int | None, int]]
) -> list[signals.Sighting]:
    """One sighting per pattern written: its first report (as its row took it) and how many it got."""
    counts = Counter(c.fingerprint for c in classified)
    first: dict[str, Classified] = {}
    for c in classified:
        first.setdefault(c.fingerprint, c)
    return [
        signals.Sighting(
            pattern_id=int(patterns[fp][0] or 0),
            fingerprint=fp,
            service=c.report.service,
            operation=c.report.operation,
            error_class=c.verdict.error_class,
            severity=c.verdict.severity,
            kind=c.verdict.kind,
            count=counts[fp],
            message=c.report.message[:2000],
            total=patterns[fp][1],
        )
        for fp, c in first.items()
    ]


def _committed(classified: list[Classified], sightings: list[signals.Sighting]) -> None:
    _count(classified)
    signals.send(sightings)


def _count(classified: list[Classified]) -> None:
    tally = Counter((c.verdict.error_class, c.verdict.severity) for c in classified)
    for (error_class, severity), n in tally.items():
        metrics.errors_total.labels(error_class=error_class, severity=severity).inc(n)


def summarize(recorded: list[Recorded], successes: int) -> BatchSummaryDict:
    verdicts = [r.classified.verdict for r in recorded]
    total = len(verdicts)
    attempts = total + successes
    return {
        "total": total,
        "successes": successes,
        "success_rate": round(successes / attempts, 4) if attempts else 1.0,
        "by_class": dict(Counter(v.error_class for v in verdicts)),
        "by_severity": dict(Counter(v.severity for v in verdicts)),
        "retryable": sum(v.retryable for v in verdicts),
        "needs_human": sum(v.needs_human for v in verdicts),
        "critical": [i for i, v in enumerate(verdicts) if v.severity in (Severity.CRITICAL, Severity.FATAL)],
    }


def prune_error_events(*, older_than_days: int, batch_size: int = 5000) -> int:
    """Delete error events past retention in bounded batches, so no single statement holds locks long."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    return _delete_in_batches(ErrorEvent.objects.filter(occurred_at__lt=cutoff), batch_size)


def prune_idempotency_records(*, batch_size: int = 5000) -> int:
    """Delete expired Idempotency-Key records (the database store's; Redis expires its own) in bounded batches."""
    return _delete_in_batches(IdempotencyRecord.objects.filter(expires_at__lt=timezone.now()), batch_size)


def _delete_in_batches(rows: QuerySet[Any], batch_size: int) -> int:
    deleted = 0
    while True:
        ids = list(rows.values_list("pk", flat=True)[:batch_size])
        if not ids:
            return deleted
        deleted += rows.model._default_manager.filter(pk__in=ids).delete()[0]

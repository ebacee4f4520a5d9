"""Writes of the recovery app: agents and keys, classification rules, and error intake."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone

from config import logging as rebound_logging
from config.errors import Conflict, InvalidInput
from healing import services as audit
from healing.services import Actor
from recovery import authentication, intake, keys, metrics, rules_cache
from recovery.classification import ErrorReport, Verdict, classify, fingerprint, message_template
from recovery.models import RULE_FIELDS, Agent, ApiKey, ClassificationRule, ErrorEvent, ErrorPattern
from recovery.taxonomy import Severity

log = logging.getLogger(__name__)

# --- Agents and keys -------------------------------------------------------------------------------------


def create_agent(*, name: str, description: str = "", actor: Actor, reason: str = "") -> Agent:
    if Agent.objects.filter(name=name).exists():
        raise InvalidInput(f"An agent named {name!r} exists already.", field="name")
    with transaction.atomic():
        agent = Agent.objects.create(name=name, description=description)
        audit.record(actor, "agent.create", agent, reason=reason, after=audit.snapshot(agent))
    return agent


AGENT_FIELDS = ["name", "description"]


def update_agent(*, agent_id: int, data: dict[str, Any], actor: Actor, reason: str) -> bool:
    """Change an agent's name or description, audited; False when nothing changed."""
    reason = audit.require_reason(reason)
    with transaction.atomic():
        # Locked so that "before" is what is stored, not what another editor is about to overwrite.
        agent = Agent.objects.select_for_update().get(pk=agent_id)
        before = audit.snapshot(agent, AGENT_FIELDS)
        for name in AGENT_FIELDS:
            if name in data:
                setattr(agent, name, data[name])
        after = audit.snapshot(agent, AGENT_FIELDS)
        if before == after:
            return False
        audit.full_clean(agent)
        agent.save(update_fields=AGENT_FIELDS)
        audit.record(actor, "agent.update", agent, reason=reason, before=before, after=after)
    # Cached principals carry the old name into actor labels; drop them.
    authentication.forget()
    return True


def set_agent_active(*, agent: Agent, active: bool, actor: Actor, reason: str) -> bool:
    reason = audit.require_reason(reason)
    with transaction.atomic():
        changed = Agent.objects.filter(pk=agent.pk, is_active=not active).update(is_active=active)
        if changed:
            audit.record(
                actor,
                "agent.activate" if active else "agent.deactivate",
                agent,
                reason=reason,
                before={"is_active": not active},
                after={"is_active": active},
            )
    authentication.forget()
    agent.refresh_from_db()
    return bool(changed)


def issue_key(
    *,
    actor: Actor,
    agent: Agent | None = None,
    user: User | None = None,
    name: str = "",
    reason: str = "",
) -> tuple[ApiKey, str]:
    """A new key for an agent or a user. The plaintext is returned once and never stored."""
    if (agent is None) == (user is None):
        raise InvalidInput("A key belongs to exactly one agent or one user.", field="owner")
    new = keys.generate()
    with transaction.atomic():
        api_key = ApiKey.objects.create(
            prefix=new.prefix, key_hash=new.key_hash, name=name, agent=agent, user=user
        )
        audit.record(
            actor,
            "apikey.issue",
            api_key,
            reason=reason,
            after={"prefix": api_key.prefix, "owner": api_key.owner_label, "name": name},
        )
    return api_key, new.plaintext


def revoke_key(*, api_key: ApiKey, actor: Actor, reason: str) -> bool:
    """Revoke once (compare-and-set); the key stops working within API_KEY_CACHE_SECONDS everywhere."""
    reason = audit.require_reason(reason)
    now = timezone.now()
    with transaction.atomic():
        changed = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now)
        if changed:
            audit.record(
                actor,
                "apikey.revoke",
                api_key,
                reason=reason,
                before={"revoked_at": None},
                after={"revoked_at": now.isoformat()},
            )
    authentication.forget_key(api_key)
    api_key.refresh_from_db()
    return bool(changed)


# --- Classification rules --------------------------------------------------------------------------------


def create_rule(*, data: dict[str, Any], actor: Actor, reason: str) -> ClassificationRule:
    reason = audit.require_reason(reason)
    rule = ClassificationRule(**{k: v for k, v in data.items() if k in RULE_FIELDS})
    audit.full_clean(rule)
    with transaction.atomic():
        rule.save()
        audit.record(actor, "rule.create", rule, reason=reason, after=audit.snapshot(rule, RULE_FIELDS))
    return rule


def update_rule(
    *, rule: ClassificationRule, data: dict[str, Any], actor: Actor, reason: str
) -> ClassificationRule:
    reason = audit.require_reason(reason)
    before = audit.snapshot(rule, RULE_FIELDS)
    for key, value in data.items():
        if key in RULE_FIELDS:
            setattr(rule, key, value)
    audit.full_clean(rule)
    with transaction.atomic():
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


# --- Error intake ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Classified:
    report: ErrorReport
    verdict: Verdict
    template: str
    fingerprint: str


@dataclass(frozen=True)
class Recorded:
    classified: Classified
    pattern_id: int | None  # None: a new pattern whose first reports are still queued (buffered intake)
    pattern_total: int


def classify_report(report: ErrorReport) -> Classified:
    verdict = classify(report, rules_cache.active_rules())
    template = message_template(report.message)
    return Classified(report, verdict, template, fingerprint(report, verdict.error_class, template))


PATTERN_COLUMNS = (
    "fingerprint, service, operation, error_class, severity, kind, type_name, message_template, sample_message, "
    "first_seen_at, last_seen_at, total_count"
)
EVENT_COLUMNS = (
    "pattern_id, agent_id, occurred_at, service, operation, error_class, severity, type_name, message, "
    "status_code, retry_after_s, rule_name, context, request_id"
)
# Counting is one upsert: concurrent reports never lose a count. Rows go in fingerprint order, so two batches
# lock patterns in the same order and cannot deadlock.
_ON_CONFLICT = """
ON CONFLICT (fingerprint) DO UPDATE SET
    total_count = {table}.total_count + EXCLUDED.total_count,
    last_seen_at = CASE WHEN EXCLUDED.last_seen_at > {table}.last_seen_at
                        THEN EXCLUDED.last_seen_at ELSE {table}.last_seen_at END,
    severity = EXCLUDED.severity,
    kind = EXCLUDED.kind,
    sample_message = EXCLUDED.sample_message
RETURNING id, fingerprint, total_count
"""
# PostgreSQL: the upsert and the events' insert in one statement, which is atomic by itself: no BEGIN and
# COMMIT round trips on the hot path (two thirds of a single report's database time otherwise).
_RECORD_POSTGRES = """
WITH p AS (
    INSERT INTO {patterns} ({pattern_columns})
    SELECT * FROM (VALUES {pattern_values}) AS v ORDER BY 1
    {on_conflict}
), e AS (
    INSERT INTO {events} ({event_columns})
    SELECT p.id, x.agent_id, x.occurred_at, x.service, x.operation, x.error_class, x.severity, x.type_name,
           x.message, x.status_code, x.retry_after_s, x.rule_name, x.context, x.request_id
    FROM (VALUES {event_values}) AS x (fingerprint, agent_id, occurred_at, service, operation, error_class,
                                       severity, type_name, message, status_code, retry_after_s, rule_name,
                                       context, request_id)
    JOIN p ON p.fingerprint = x.fingerprint
)
SELECT id, fingerprint, total_count FROM p
"""
_PATTERN_VALUE = "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::timestamptz, %s::timestamptz, %s::bigint)"
_EVENT_VALUE = (
    "(%s, %s::bigint, %s::timestamptz, %s, %s, %s, %s, %s, %s, %s::integer, %s::double precision, %s, "
    "%s::jsonb, %s)"
)


def _pattern_rows(items: list[Classified], now: Any) -> list[list[Any]]:
    """One row per fingerprint, with how many of the items it counts, in fingerprint order."""
    grouped: dict[str, tuple[Classified, int]] = {}
    for item in items:
        first, count = grouped.get(item.fingerprint, (item, 0))
        grouped[item.fingerprint] = (first, count + 1)
    rows = []
    for fp in sorted(grouped):
        item, count = grouped[fp]
        report, verdict = item.report, item.verdict
        rows.append(
            [
                fp,
                report.service,
                report.operation,
                verdict.error_class,
                verdict.severity,
                verdict.kind,
                report.type_name,
                item.template,
                report.message[:2000],
                now,
                now,
                count,
            ]
        )
    return rows


def _event_fields(c: Classified, agent: Agent | None, now: Any, request_id: str) -> dict[str, Any]:
    return {
        "agent_id": agent.pk if agent else None,
        "occurred_at": now,
        "service": c.report.service,
        "operation": c.report.operation,
        "error_class": c.verdict.error_class,
        "severity": c.verdict.severity,
        "type_name": c.report.type_name,
        "message": c.report.message,
        "status_code": c.report.status_code,
        "retry_after_s": c.report.retry_after_s,
        "rule_name": c.verdict.rule.name if c.verdict.rule else "",
        "context": c.report.context,
        "request_id": request_id,
    }


def _record_postgres(
    items: list[Classified], events: list[dict[str, Any]], now: Any
) -> dict[str, tuple[int, int]]:
    patterns = _pattern_rows(items, now)
    params: list[Any] = [value for row in patterns for value in row]
    for item, event in zip(items, events, strict=True):
        params += [item.fingerprint, *[json.dumps(v) if k == "context" else v for k, v in event.items()]]
    table = connection.ops.quote_name(ErrorPattern._meta.db_table)
    sql = _RECORD_POSTGRES.format(
        patterns=table,
        pattern_columns=PATTERN_COLUMNS,
        pattern_values=", ".join([_PATTERN_VALUE] * len(patterns)),
        on_conflict=_ON_CONFLICT.format(table=table),
        events=connection.ops.quote_name(ErrorEvent._meta.db_table),
        event_columns=EVENT_COLUMNS,
        event_values=", ".join([_EVENT_VALUE] * len(events)),
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {fp: (pk, total) for pk, fp, total in cursor.fetchall()}


def _record_portable(
    items: list[Classified], events: list[dict[str, Any]], now: Any
) -> dict[str, tuple[int, int]]:
    """Any other database (SQLite in the embedded mode): the same upsert, then the events, in a transaction."""
    patterns = _pattern_rows(items, now)
    table = connection.ops.quote_name(ErrorPattern._meta.db_table)
    values = ", ".join(["(" + ", ".join(["%s"] * 12) + ")"] * len(patterns))
    sql = f"INSERT INTO {table} ({PATTERN_COLUMNS}) VALUES {values} {_ON_CONFLICT.format(table=table)}"
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(sql, [value for row in patterns for value in row])
            ids = {fp: (pk, total) for pk, fp, total in cursor.fetchall()}
        ErrorEvent.objects.bulk_create(
            [
                ErrorEvent(pattern_id=ids[item.fingerprint][0], **event)
                for item, event in zip(items, events, strict=True)
            ]
        )
    return ids


def record_errors(reports: list[ErrorReport], *, agent: Agent | None) -> list[Recorded]:
    """Classify, count into patterns and store every error, all or nothing."""
    classified = [classify_report(r) for r in reports]
    now = timezone.now()
    request_id = rebound_logging.get_request_id() or ""
    patterns: dict[str, tuple[int | None, int]]
    events = [_event_fields(c, agent, now, request_id) for c in classified]
    buffered = _buffer(classified, events, now) if intake.enabled() else None
    if buffered is not None:
        patterns = buffered
    else:
        record = _record_postgres if connection.vendor == "postgresql" else _record_portable
        patterns = dict(record(classified, events, now))
    if connection.in_atomic_block:
        transaction.on_commit(lambda: _count(classified))
    else:
        # Not through on_commit: outside a transaction it would check the database connection (a round trip
        # on a path that, buffered, never touches the database).
        _count(classified)
    return [Recorded(c, *patterns[c.fingerprint]) for c in classified]


def _buffer(
    classified: list[Classified], events: list[dict[str, Any]], now: Any
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


def _count(classified: list[Classified]) -> None:
    tally = Counter((c.verdict.error_class, c.verdict.severity) for c in classified)
    for (error_class, severity), n in tally.items():
        metrics.errors_total.labels(error_class=error_class, severity=severity).inc(n)


def summarize(recorded: list[Recorded], successes: int) -> dict[str, Any]:
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
    deleted = 0
    while True:
        ids = list(
            ErrorEvent.objects.filter(occurred_at__lt=cutoff).values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            return deleted
        deleted += ErrorEvent.objects.filter(pk__in=ids).delete()[0]

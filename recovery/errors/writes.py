"""The bulk writes of classified errors: patterns upserted and counted, events inserted, in one statement on
PostgreSQL (portable ORM steps elsewhere). Shared by the synchronous intake and the buffer's drain."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, transaction

from core.access.models import Agent
from recovery.errors.classification import ErrorReport, Verdict
from recovery.errors.models import ErrorEvent, ErrorPattern

# --- Error intake ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Classified:
    report: ErrorReport
    verdict: Verdict
    template: str
    fingerprint: str


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
PATTERN_VALUE = "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::timestamptz, %s::timestamptz, %s::bigint)"
EVENT_VALUE = (
    "(%s, %s::bigint, %s::timestamptz, %s, %s, %s, %s, %s, %s, %s::integer, %s::double precision, %s, "
    "%s::jsonb, %s)"
)


def _pattern_rows(items: list[Classified], now: datetime) -> list[list[Any]]:
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


def _event_fields(c: Classified, agent: Agent | None, now: datetime, request_id: str) -> dict[str, Any]:
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
    items: list[Classified], events: list[dict[str, Any]], now: datetime
) -> dict[str, tuple[int, int]]:
    patterns = _pattern_rows(items, now)
    params: list[Any] = [value for row in patterns for value in row]
    for item, event in zip(items, events, strict=True):
        params += [item.fingerprint, *[json.dumps(v) if k == "context" else v for k, v in event.items()]]
    table = connection.ops.quote_name(ErrorPattern._meta.db_table)
    sql = _RECORD_POSTGRES.format(
        patterns=table,
        pattern_columns=PATTERN_COLUMNS,
        pattern_values=", ".join([PATTERN_VALUE] * len(patterns)),
        on_conflict=_ON_CONFLICT.format(table=table),
        events=connection.ops.quote_name(ErrorEvent._meta.db_table),
        event_columns=EVENT_COLUMNS,
        event_values=", ".join([EVENT_VALUE] * len(events)),
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {fp: (pk, total) for pk, fp, total in cursor.fetchall()}


def _record_portable(
    items: list[Classified], events: list[dict[str, Any]], now: datetime
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

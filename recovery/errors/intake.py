"""Buffered error intake (production: Redis and PostgreSQL).

A report is validated and classified in the request, then appended to a Redis stream in one round trip; the
answer carries the classification, the fingerprint and the pattern's count as known now. A Celery task
(`drain_error_intake`, started by the first report after a quiet half second, and by beat every few seconds)
writes the stream to PostgreSQL in batches. Each event carries a unique intake key (stream entry id and
position), so a batch redelivered after a worker died inserts and counts nothing twice.

Durability is Redis's: with AOF (`appendonly yes`, as docker-compose runs it) at most about a second of
accepted reports can be lost if Redis itself crashes. `INTAKE_MODE=sync` writes every report to PostgreSQL
in the request instead, at about a third of the throughput. If Redis fails during a request, that request is
written synchronously: an accepted report is never dropped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections import Counter
from typing import Any

import redis
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from core.access.models import Agent
from core.infra import queue, redisconn
from core.infra.conf import rebound
from recovery import metrics
from recovery.errors.models import ErrorEvent, ErrorPattern
from recovery.errors.writes import EVENT_COLUMNS, EVENT_VALUE, PATTERN_COLUMNS, PATTERN_VALUE

log = logging.getLogger(__name__)
STREAM = "rebound:intake"
GROUP = "writers"
PENDING = "rebound:intake:pending"  # fingerprint -> reports queued but not yet written
BASE = "rebound:intake:base"  # fingerprint -> "pattern id:total" as of the last write
DRAIN_FLAG = "rebound:intake:drain-scheduled"
DRAIN_TASK = "recovery.tasks.drain_error_intake"  # recovery/errors/tasks.py; named so since before the rooms
DEAD = (
    "rebound:intake:dead"  # entries that cannot be written, kept for a human instead of blocking the stream
)
BATCH_ENTRIES = 200
STALE_MS = 60_000


def enabled() -> bool:
    mode = rebound("INTAKE_MODE")
    if mode == "sync":
        return False
    from django.conf import settings

    possible = bool(settings.REDIS_URL) and connection.vendor == "postgresql"
    return possible if mode == "auto" else True


# --- the request side -------------------------------------------------------------------------------------


# One script, one round trip, one reply, and atomic against a drain moving counts from PENDING to BASE.
# KEYS: stream, pending, base, drain flag. ARGV: payload, then fingerprint and count pairs.
# Returns {drain_needed, base_1, pending_1, base_2, pending_2, ...}.
ENQUEUE = """
redis.call('XADD', KEYS[1], '*', 'v', ARGV[1])
local out = {redis.call('SET', KEYS[4], '1', 'NX', 'PX', 500) and 1 or 0}
for i = 2, #ARGV, 2 do
  local pending = redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
  out[#out + 1] = redis.call('HGET', KEYS[3], ARGV[i]) or ''
  out[#out + 1] = pending
end
return out
"""


def enqueue(
    pattern_rows: list[list[Any]], events: list[tuple[str, dict[str, Any]]]
) -> dict[str, tuple[int | None, int]]:
    """Queue one request's reports; returns fingerprint -> (pattern id if already written, count so far)."""
    payload = json.dumps({"patterns": pattern_rows, "events": events}, default=str)
    counts = [(row[0], row[11]) for row in pattern_rows]
    reply: Any = redisconn.scripts().run(
        ENQUEUE, [STREAM, PENDING, BASE, DRAIN_FLAG], [payload, *[v for pair in counts for v in pair]]
    )
    if reply[0]:
        _schedule_drain()
    answer = {}
    for index, (fingerprint, _) in enumerate(counts):
        pattern_id, total = _parse_base(reply[1 + 2 * index])
        answer[fingerprint] = (pattern_id, total + int(reply[2 + 2 * index]))
    return answer


def _parse_base(value: bytes | None) -> tuple[int | None, int]:
    if not value:
        return None, 0
    pattern_id, total = value.decode().split(":")
    return int(pattern_id), int(total)


def _schedule_drain() -> None:
    # If the broker is down, beat's periodic drain still comes.
    with contextlib.suppress(Exception):
        queue.send(DRAIN_TASK)


# --- the writer side --------------------------------------------------------------------------------------


def _consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _ensure_group(client: redis.Redis) -> None:
    try:
        client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except redis.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


def drain(budget_s: float = 10.0) -> int:
    """Write queued reports to PostgreSQL until the stream is empty or the budget is spent; events written."""
    client = redisconn.client()
    _ensure_group(client)
    written = 0
    deadline = time.monotonic() + budget_s
    while time.monotonic() < deadline:
        # Entries a dead writer left unacknowledged come first, then new ones.
        claimed: Any = client.xautoclaim(STREAM, GROUP, _consumer(), STALE_MS, "0-0", count=BATCH_ENTRIES)
        entries = claimed[1]
        if not entries:
            reply: Any = client.xreadgroup(GROUP, _consumer(), {STREAM: ">"}, count=BATCH_ENTRIES)
            entries = reply[0][1] if reply else []
        if not entries:
            return written
        written += _write_or_isolate(client, entries)
    return written


def _write_or_isolate(client: redis.Redis, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> int:
    """Write a batch; if it fails, write its entries one by one and set aside the ones that cannot be written,
    so that one bad entry never blocks every report behind it."""
    try:
        return write_entries(client, entries)
    except (DatabaseError, ValueError, KeyError) as error:
        if len(entries) == 1:
            _set_aside(client, entries[0], error)
            return 0
    return sum(_write_or_isolate(client, [entry]) for entry in entries)


def _set_aside(client: redis.Redis, entry: tuple[bytes, dict[bytes, bytes]], error: Exception) -> None:
    entry_id, fields = entry
    log.error("intake entry %s cannot be written, moved to %s: %s", entry_id.decode(), DEAD, error)
    metrics.intake_dead_letters_total.inc()
    pipe = client.pipeline(transaction=True)
    dead: dict[Any, Any] = {**fields, b"error": str(error)[:500].encode(), b"entry": entry_id}
    pipe.xadd(DEAD, dead)
    pipe.xack(STREAM, GROUP, entry_id)
    pipe.xdel(STREAM, entry_id)
    pipe.execute()


def write_entries(client: redis.Redis, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> int:
    """Write stream entries idempotently, then acknowledge them and move their counts from pending to base."""
    patterns: dict[str, list[Any]] = {}
    queued: Counter[str] = Counter()
    events: list[dict[str, Any]] = []
    for entry_id, fields in entries:
        payload = json.loads(fields[b"v"])
        for row in payload["patterns"]:
            fingerprint = row[0]
            queued[fingerprint] += row[11]
            if fingerprint in patterns:
                patterns[fingerprint][10] = row[10]  # the latest sighting wins
            else:
                patterns[fingerprint] = row
        for position, (fingerprint, event) in enumerate(payload["events"]):
            events.append(
                {**event, "fingerprint": fingerprint, "intake_key": f"{entry_id.decode()}:{position}"}
            )
    with transaction.atomic():
        inserted = _write(list(patterns.values()), events)
        totals = _totals(list(patterns))
    pipe = client.pipeline(transaction=True)
    ids = [entry_id for entry_id, _ in entries]
    pipe.xack(STREAM, GROUP, *ids)
    pipe.xdel(STREAM, *ids)
    for fingerprint, n in queued.items():
        pipe.hincrby(PENDING, fingerprint, -n)
        pattern_id, total = totals[fingerprint]
        pipe.hset(BASE, fingerprint, f"{pattern_id}:{total}")
    pipe.execute()
    return inserted


_WRITE = """
WITH p AS (
    INSERT INTO {patterns} ({pattern_columns})
    SELECT * FROM (VALUES {pattern_values}) AS v ORDER BY 1
    ON CONFLICT (fingerprint) DO UPDATE SET
        last_seen_at = GREATEST({patterns}.last_seen_at, EXCLUDED.last_seen_at),
        severity = EXCLUDED.severity, kind = EXCLUDED.kind, sample_message = EXCLUDED.sample_message
    RETURNING id, fingerprint
), e AS (
    INSERT INTO {events} ({event_columns}, intake_key)
    SELECT p.id, a.id, x.occurred_at, x.service, x.operation, x.error_class, x.severity, x.type_name,
           x.message, x.status_code, x.retry_after_s, x.rule_name, x.context, x.request_id, x.intake_key
    FROM (VALUES {event_values}) AS x (fingerprint, agent_id, occurred_at, service, operation, error_class,
                                       severity, type_name, message, status_code, retry_after_s, rule_name,
                                       context, request_id, intake_key)
    JOIN p ON p.fingerprint = x.fingerprint
    -- An agent deleted while its reports were queued: keep the reports, without the agent.
    LEFT JOIN {agents} AS a ON a.id = x.agent_id
    ON CONFLICT (intake_key) DO NOTHING
    RETURNING pattern_id
)
SELECT pattern_id, count(*) FROM e GROUP BY pattern_id ORDER BY pattern_id
"""
# A second statement: PostgreSQL cannot reliably change a row twice in one statement.
_COUNT = "UPDATE {patterns} SET total_count = {patterns}.total_count + n.count FROM (VALUES {values}) AS n (id, count) WHERE {patterns}.id = n.id"


def _write(pattern_rows: list[list[Any]], events: list[dict[str, Any]]) -> int:
    params: list[Any] = []
    for row in sorted(pattern_rows):
        # New patterns start at 0: the count comes only from events actually inserted below.
        params += [*row[:9], _when(row[9]), _when(row[10]), 0]
    for event in events:
        params += [
            event["fingerprint"],
            event["agent_id"],
            _when(event["occurred_at"]),
            event["service"],
            event["operation"],
            event["error_class"],
            event["severity"],
            event["type_name"],
            event["message"],
            event["status_code"],
            event["retry_after_s"],
            event["rule_name"],
            json.dumps(event["context"]),
            event["request_id"],
            event["intake_key"],
        ]
    table = connection.ops.quote_name(ErrorPattern._meta.db_table)
    sql = _WRITE.format(
        patterns=table,
        pattern_columns=PATTERN_COLUMNS,
        pattern_values=", ".join([PATTERN_VALUE] * len(pattern_rows)),
        events=connection.ops.quote_name(ErrorEvent._meta.db_table),
        agents=connection.ops.quote_name(Agent._meta.db_table),
        event_columns=EVENT_COLUMNS,
        event_values=", ".join([EVENT_VALUE[:-1] + ", %s)"] * len(events)),
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        counts = cursor.fetchall()
        if counts:
            values = ", ".join(["(%s::bigint, %s::bigint)"] * len(counts))
            cursor.execute(_COUNT.format(patterns=table, values=values), [v for row in counts for v in row])
    return sum(count for _, count in counts)


def _totals(fingerprints: list[str]) -> dict[str, tuple[int, int]]:
    rows = ErrorPattern.objects.filter(fingerprint__in=fingerprints).values_list(
        "fingerprint", "id", "total_count"
    )
    return {fp: (pk, total) for fp, pk, total in rows}


def _when(value: Any) -> Any:
    return parse_datetime(value) if isinstance(value, str) else (value or timezone.now())

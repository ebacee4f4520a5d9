"""Buffered error intake (production: Redis and PostgreSQL).

A report is validated and classified in the request, then appended to a Redis stream in one round trip; the
answer carries the classification, the fingerprint and the pattern's count as known now. A Celery task
(`drain_error_intake`, started by the first report after a quiet half second, and by beat every few seconds)
writes the stream to PostgreSQL in batches. Each event carries a unique intake key (stream entry id and
position), so a batch redelivered after a worker died inserts and counts nothing twice.

Durability is Redis's: the intake buffers only when Redis persists writes (AOF on), and otherwise writes in
the request (recovery/errors/durability.py; INTAKE_REQUIRE_DURABLE_REDIS). With AOF `everysec` a killed Redis
loses nothing and a crashed machine at most about a second (docs/intake.md). `INTAKE_MODE=sync` writes every
report to PostgreSQL in the request, at about a third of the throughput. If Redis fails during a request, that
request is written synchronously: an accepted report is never dropped.

What was accepted is never dropped by the drain either: an entry leaves the stream once written, or, only when
the database refuses it for its content, into the dead-letter stream (`manage.py intake_dead_letters` lists,
shows, replays and purges it). A database that cannot be reached is waited for (drain()).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
import redis
from django.conf import settings
from django.db import DataError, IntegrityError, connection, transaction
from django.db import Error as DatabaseFailure
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from prometheus_client import Gauge

from core.access.models import Agent
from core.infra import queue, redisconn
from core.infra.conf import rebound
from recovery import metrics
from recovery.errors import durability, signals
from recovery.errors import metrics as error_metrics
from recovery.errors.models import ErrorEvent, ErrorPattern
from recovery.errors.writes import EVENT_COLUMNS, PATTERN_COLUMNS

log = logging.getLogger(__name__)
STREAM = "rebound:intake"
GROUP = "writers"
PENDING = "rebound:intake:pending"  # fingerprint -> reports queued but not yet written
BASE = "rebound:intake:base"  # fingerprint -> "pattern id:total" as of the last write
DRAIN_FLAG = "rebound:intake:drain-scheduled"
DRAIN_TASK = "recovery.tasks.drain_error_intake"  # recovery/errors/tasks.py; named so since before the rooms
# Entries the database refused for their content, kept for a human (`manage.py intake_dead_letters`) instead
# of blocking the stream; at most INTAKE_DEAD_LETTER_MAX of them.
DEAD = "rebound:intake:dead"
ORIGIN = b"k"  # a replayed entry's field: the id it had when it was first queued
BATCH_ENTRIES = 200
STALE_MS = 60_000


def enabled() -> bool:
    """Does this deployment use the buffer (INTAKE_MODE, or `auto` with Redis and PostgreSQL)? The drain drains
    whenever it does; whether a request may answer from it is `buffering()`."""
    mode = rebound("INTAKE_MODE")
    if mode == "sync":
        return False
    possible = bool(settings.REDIS_URL) and connection.vendor == "postgresql"
    return possible if mode == "auto" else True


def buffering() -> bool:
    """May this request answer from the buffer? Only where the buffer is used and Redis keeps what it is given
    (recovery/errors/durability.py); otherwise the report is written in the request."""
    return enabled() and durability.buffer_allowed()


def check_at_startup() -> durability.Persistence | None:
    """Ask Redis about its persistence once as a process starts, so that a buffer that is not durable is told in
    the log before the first report (a gunicorn worker's post_worker_init). None where nothing is buffered."""
    return durability.refresh() if enabled() else None


def readiness() -> tuple[bool, dict[str, Any]]:
    """For /readyz (core.infra.probes.register_readiness_check("intake", readiness)): which intake is in force
    and why. Never not-ready on its own: without a durable Redis the intake writes in the request, which works
    as long as the database does, and /readyz checks the database itself."""
    if not enabled():
        return True, {"intake": "sync", "why": "INTAKE_MODE, or no Redis and PostgreSQL"}
    found = durability.refresh()
    detail: dict[str, Any] = {"intake": "buffered" if buffering() else "sync", **found.as_detail()}
    detail["require_durable_redis"] = bool(rebound("INTAKE_REQUIRE_DURABLE_REDIS"))
    return True, detail


def readiness_check() -> None:
    """readiness() in the shape core.infra.probes.register_readiness_check takes (nothing when ready, raises when
    not): asks Redis again, so that the log and the intake_redis_persists_writes gauge follow /readyz."""
    ok, detail = readiness()
    if not ok:
        raise RuntimeError(f"intake not ready: {detail}")


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


_DUMP = orjson.OPT_NON_STR_KEYS  # what the standard library wrote: a context's non-text keys as their text


def enqueue(
    pattern_rows: list[list[Any]], events: list[tuple[str, dict[str, Any]]]
) -> dict[str, tuple[int | None, int]]:
    """Queue one request's reports; returns fingerprint -> (pattern id if already written, count so far)."""
    # orjson: a tenth of the standard library's time on the request's path; datetimes as ISO 8601, anything
    # else it cannot write (a report built inside Rebound) as its text, as the standard library's default=str.
    payload = orjson.dumps({"patterns": pattern_rows, "events": events}, default=str, option=_DUMP)
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

# What the database refuses for an entry's own content (or an entry that is not what enqueue() writes): only
# these set an entry aside. Anything else the database raises (OperationalError, InterfaceError: unreachable,
# restarting, a connection closed; InternalError and ProgrammingError: read-only during a failover, a
# migration half-applied) says nothing about the entry: the drain waits and tries the same entries again.
CONTENT_ERRORS: tuple[type[Exception], ...] = (
    DataError,
    IntegrityError,
    ValueError,
    KeyError,
    TypeError,
    IndexError,
)
RETRY_FIRST_S = 0.1  # the first wait after the database failed a write; doubled each time, up to RETRY_MAX_S
RETRY_MAX_S = 2.0


def _consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _ensure_group(client: redis.Redis) -> None:
    try:
        client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except redis.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


def drain(budget_s: float = 10.0) -> int:
    """Write queued reports to the database until the stream is empty or the budget is spent; events written.

    An entry leaves the stream only once it is written (acknowledged in the same step) or once the database
    refused it for its content (moved to the dead-letter stream). While the database cannot be reached, the
    drain waits and tries the same entries again; when its budget runs out they stay pending in the consumer
    group, and the next drain (this process's first, any other's after STALE_MS) takes them again.
    """
    client = redisconn.client()
    _ensure_group(client)
    written = 0
    deadline = time.monotonic() + budget_s
    wait = RETRY_FIRST_S
    try:
        while time.monotonic() < deadline:
            entries = _next_batch(client)
            if not entries:
                break
            try:
                written += _write_or_isolate(client, entries)
            except DatabaseFailure as error:  # not the entries' fault: CONTENT_ERRORS are handled inside
                log.warning(
                    "intake drain: the database failed a write (%s: %s); %d entries stay queued, trying "
                    "again in %.1f s",
                    type(error).__name__,
                    str(error).strip()[:300],
                    len(entries),
                    wait,
                )
                _reconnect()
                pause = min(wait, deadline - time.monotonic())
                if pause <= 0:
                    break
                time.sleep(pause)
                wait = min(wait * 2, RETRY_MAX_S)
                continue
            wait = RETRY_FIRST_S
    finally:
        observe_buffer(client)
        observe_dead_letters(client)
    return written


def _next_batch(client: redis.Redis) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """This consumer's own unacknowledged entries first (a write the database failed), then entries another
    consumer left unacknowledged for STALE_MS (a writer that died), then new ones."""
    consumer = _consumer()
    own: Any = client.xreadgroup(GROUP, consumer, {STREAM: "0"}, count=BATCH_ENTRIES)
    kept = _present(client, own[0][1] if own else [])
    if kept:
        return kept
    claimed: Any = client.xautoclaim(STREAM, GROUP, consumer, STALE_MS, "0-0", count=BATCH_ENTRIES)
    kept = _present(client, claimed[1])
    if kept:
        return kept
    reply: Any = client.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=BATCH_ENTRIES)
    return reply[0][1] if reply else []


def _present(client: redis.Redis, entries: list[Any]) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The entries that still exist. One deleted while pending (by hand) has nothing to write, and is
    acknowledged so that it does not come back forever."""
    gone = [entry_id for entry_id, fields in entries if not fields]
    if gone:
        client.xack(STREAM, GROUP, *gone)
    return [(entry_id, fields) for entry_id, fields in entries if fields]


def _reconnect() -> None:
    """Drop the database connection a failed write may have left broken; the next query opens a new one."""
    if not connection.in_atomic_block:
        with contextlib.suppress(Exception):
            connection.close()


def _write_or_isolate(client: redis.Redis, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> int:
    """Write a batch; if the database refuses it for its content, write its halves, down to the one entry that
    cannot be written, which is set aside so that it never blocks every report behind it."""
    try:
        return write_entries(client, entries)
    except CONTENT_ERRORS as error:
        if len(entries) == 1:
            return _retry_or_set_aside(client, entries[0], error)
    half = len(entries) // 2
    return _write_or_isolate(client, entries[:half]) + _write_or_isolate(client, entries[half:])


def _retry_or_set_aside(
    client: redis.Redis, entry: tuple[bytes, dict[bytes, bytes]], error: Exception
) -> int:
    # An integrity error can be a race rather than the entry's content (its agent deleted while the batch
    # was written): one more try, alone, before the entry is set aside.
    if isinstance(error, IntegrityError):
        try:
            return write_entries(client, [entry])
        except CONTENT_ERRORS as again:
            error = again
    _set_aside(client, entry, error)
    return 0


def _set_aside(client: redis.Redis, entry: tuple[bytes, dict[bytes, bytes]], error: Exception) -> None:
    """Move an entry the database refused to the dead-letter stream, capped at INTAKE_DEAD_LETTER_MAX (the
    oldest go first). Its reports stay counted as pending in the answers' totals until it is replayed (and
    written) or purged (`manage.py intake_dead_letters`)."""
    entry_id, fields = entry
    log.error(
        "intake entry %s refused by the database for its content, moved to %s: %s: %s",
        entry_id.decode(),
        DEAD,
        type(error).__name__,
        str(error).strip()[:500],
    )
    dead: dict[Any, Any] = {
        b"v": fields.get(b"v", b""),
        b"k": fields.get(ORIGIN) or entry_id,
        b"entry": entry_id,
        b"error": f"{type(error).__name__}: {str(error).strip()}"[:1000].encode(),
        b"at": timezone.now().isoformat().encode(),
    }
    pipe = client.pipeline(transaction=True)
    # Exact trimming: dead letters are rare, so the cost of MAXLEN = over ~ does not matter, and the cap is
    # then what the setting says.
    pipe.xadd(DEAD, dead, maxlen=int(rebound("INTAKE_DEAD_LETTER_MAX")), approximate=False)
    pipe.xack(STREAM, GROUP, entry_id)
    pipe.xdel(STREAM, entry_id)
    pipe.execute()
    metrics.intake_dead_letters_total.inc()


def observe_buffer(client: redis.Redis) -> int | None:
    """Set the intake_buffer_entries gauge to the stream's length now: entries not yet written, since a written
    one is deleted (None: Redis did not answer)."""
    return _observe_length(client, STREAM, error_metrics.intake_buffer_entries)


def observe_dead_letters(client: redis.Redis) -> int | None:
    """Set the intake_dead_letter_entries gauge to the dead-letter stream's length now (None: Redis did not
    answer)."""
    return _observe_length(client, DEAD, error_metrics.intake_dead_letter_entries)


def _observe_length(client: redis.Redis, stream: str, gauge: Gauge) -> int | None:
    try:
        reply: Any = client.xlen(stream)
    except redis.RedisError:
        return None
    length = int(reply)
    gauge.set(length)
    return length


# Acknowledge written entries and move their counts from pending to base, atomically. An entry's counts leave
# PENDING only if this XACK is the one that acknowledged it: a batch written twice (a writer thought dead that
# was only slow) moves its counts once.
# KEYS: stream, pending, base. ARGV: group, number of base values, (fingerprint, "id:total") pairs, then for each
# entry: its id, its number of fingerprints, and (fingerprint, count) pairs.
ACKNOWLEDGE = """
local i = 3
for _ = 1, tonumber(ARGV[2]) do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  i = i + 2
end
local acknowledged = 0
while i <= #ARGV do
  local first = redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  redis.call('XDEL', KEYS[1], ARGV[i])
  local n = tonumber(ARGV[i + 1])
  i = i + 2
  for _ = 1, n do
    if first == 1 then
      if redis.call('HINCRBY', KEYS[2], ARGV[i], -tonumber(ARGV[i + 1])) <= 0 then
        redis.call('HDEL', KEYS[2], ARGV[i])
      end
    end
    i = i + 2
  end
  acknowledged = acknowledged + first
end
return acknowledged
"""


@dataclass
class Batch:
    """Stream entries parsed for one write: the events as parsed (for COPY), and as JSON text (for the
    statement that takes a redelivered entry apart in PostgreSQL), the patterns, and the counts to acknowledge."""

    origins: list[str] = field(default_factory=list)  # per entry: what its events' intake keys start with
    payloads: list[str] = field(default_factory=list)  # per entry: its JSON, as enqueue() wrote it
    events: list[list[Any]] = field(default_factory=list)  # per entry: its [fingerprint, event] pairs
    patterns: dict[str, list[Any]] = field(default_factory=dict)  # fingerprint -> row (PATTERN_COLUMNS)
    counts: list[tuple[bytes, Counter[str]]] = field(default_factory=list)  # entry id -> reports queued


def parse_entries(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> Batch:
    """Read what the write and the acknowledgement need; raises ValueError, KeyError, TypeError or IndexError
    (CONTENT_ERRORS) for an entry that is not what enqueue() writes."""
    batch = Batch()
    for entry_id, fields in entries:
        raw = fields[b"v"]
        payload = orjson.loads(raw)
        if not isinstance(payload["patterns"], list) or not isinstance(payload["events"], list):
            raise TypeError("an intake entry holds lists of patterns and events")
        queued: Counter[str] = Counter()
        for row in payload["patterns"]:
            fingerprint = str(row[0])
            queued[fingerprint] += int(row[11])
            known = batch.patterns.get(fingerprint)
            if known is None:
                batch.patterns[fingerprint] = list(row)
            else:
                known[10] = row[10]  # the latest sighting wins
        # A replayed dead letter keeps the id it first had: its events keep their intake keys.
        batch.origins.append((fields.get(ORIGIN) or entry_id).decode())
        batch.payloads.append(raw.decode())
        batch.events.append(payload["events"])
        batch.counts.append((entry_id, queued))
    return batch


def write_entries(client: redis.Redis, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> int:
    """Write stream entries idempotently, then acknowledge them and move their counts from pending to base."""
    batch = parse_entries(entries)
    inserted: dict[int, int] = {}  # pattern id -> events inserted
    totals: dict[str, tuple[int, int]] = {}  # fingerprint -> (pattern id, total after this write)
    with transaction.atomic():
        written = _write(batch, inserted, totals)
    # Before the acknowledgement: if that fails, the batch comes back, inserts nothing and sends nothing.
    if inserted and signals.listened():
        signals.send_when_committed(_sightings(batch.patterns, totals, inserted))
    _acknowledge(client, batch.counts, totals)
    return written


def _sightings(
    patterns: dict[str, list[Any]], totals: dict[str, tuple[int, int]], inserted: dict[int, int]
) -> list[signals.Sighting]:
    """One sighting per pattern that got events, with the count actually inserted (PATTERN_COLUMNS order)."""
    sightings = []
    for fingerprint, row in patterns.items():
        pattern_id, total = totals.get(fingerprint, (0, 0))
        if inserted.get(pattern_id):
            sightings.append(
                signals.Sighting(
                    pattern_id=pattern_id,
                    fingerprint=fingerprint,
                    service=row[1],
                    operation=row[2],
                    error_class=row[3],
                    severity=row[4],
                    kind=row[5],
                    count=inserted[pattern_id],
                    message=row[8],
                    total=total,
                )
            )
    return sightings


def _acknowledge(
    client: redis.Redis, counts: list[tuple[bytes, Counter[str]]], totals: dict[str, tuple[int, int]]
) -> None:
    args: list[Any] = [GROUP, len(totals)]
    for fingerprint, (pattern_id, total) in totals.items():
        args += [fingerprint, f"{pattern_id}:{total}"]
    for entry_id, queued in counts:
        args += [entry_id, len(queued)]
        for fingerprint, n in queued.items():
            args += [fingerprint, n]
    client.eval(ACKNOWLEDGE, 3, STREAM, PENDING, BASE, *args)


# The write: one transaction with a fixed set of statements whatever the batch holds (the client neither builds
# nor escapes a query per row):
# 1. new patterns inserted (ON CONFLICT DO NOTHING: an existing row is neither changed nor locked), and the
#    batch's pattern ids read;
# 2. the events copied in (COPY: a third of an INSERT's server CPU per row here). An event whose intake key is
#    already stored (an entry written before, by a writer that died before acknowledging it) or whose agent
#    was deleted meanwhile fails the COPY; the batch then goes through _EVENTS instead, which skips what is
#    stored (ON CONFLICT DO NOTHING) and keeps reports without their agent;
# 3. the patterns counted and touched in one upsert, in fingerprint order.
# The pattern rows are locked only by step 3, at the end: several drains insert their events at the same time
# and queue only for the short counting step, always locking in the same order (no deadlock).
_PATTERN_ARRAYS = (
    "unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], "
    "%s::text[], %s::timestamptz[], %s::timestamptz[], %s::bigint[])"
)
_NEW_PATTERNS = """
INSERT INTO {patterns} ({pattern_columns})
SELECT * FROM {arrays} ORDER BY 1
ON CONFLICT (fingerprint) DO NOTHING
"""
_PATTERN_IDS = "SELECT fingerprint, id FROM {patterns} WHERE fingerprint = ANY(%s::text[])"
_COPY = "COPY {events} ({event_columns}, intake_key) FROM STDIN"
_EVENTS = """
WITH e AS (
    INSERT INTO {events} ({event_columns}, intake_key)
    SELECT p.id, a.id, coalesce(x.occurred_at, now()), x.service, x.operation, x.error_class, x.severity,
           x.type_name, x.message, x.status_code, x.retry_after_s, x.rule_name, x.context, x.request_id,
           s.origin || ':' || (e.position - 1)
    FROM unnest(%b::text[], %b::text[]) AS s (origin, payload)
    CROSS JOIN LATERAL jsonb_array_elements(s.payload::jsonb -> 'events') WITH ORDINALITY AS e (item, position)
    CROSS JOIN LATERAL jsonb_to_record(e.item -> 1) AS x (
        agent_id bigint, occurred_at timestamptz, service text, operation text, error_class text,
        severity text, type_name text, message text, status_code integer, retry_after_s double precision,
        rule_name text, context jsonb, request_id text)
    -- An event whose pattern is missing gets a NULL pattern: refused (NOT NULL), so never silently dropped.
    LEFT JOIN {patterns} AS p ON p.fingerprint = e.item ->> 0
    -- An agent deleted while its reports were queued: keep the reports, without the agent.
    LEFT JOIN {agents} AS a ON a.id = x.agent_id
    ON CONFLICT (intake_key) DO NOTHING
    RETURNING pattern_id
)
SELECT e.pattern_id, p.fingerprint, count(*) FROM e JOIN {patterns} AS p ON p.id = e.pattern_id
GROUP BY e.pattern_id, p.fingerprint
"""
_COUNT = """
INSERT INTO {patterns} ({pattern_columns})
SELECT * FROM {arrays} ORDER BY 1
ON CONFLICT (fingerprint) DO UPDATE SET
    total_count = {patterns}.total_count + EXCLUDED.total_count,
    last_seen_at = GREATEST({patterns}.last_seen_at, EXCLUDED.last_seen_at),
    severity = EXCLUDED.severity, kind = EXCLUDED.kind, sample_message = EXCLUDED.sample_message
RETURNING id, fingerprint, total_count
"""
# What makes the COPY fail without the batch being at fault: go the way that skips and keeps instead.
_COPY_REFUSED = (psycopg.errors.UniqueViolation, psycopg.errors.ForeignKeyViolation)


@dataclass(frozen=True)
class _Statements:
    new_patterns: str
    pattern_ids: str
    copy: str
    events: str
    count: str


@functools.cache
def _statements() -> _Statements:
    names = {
        "patterns": connection.ops.quote_name(ErrorPattern._meta.db_table),
        "events": connection.ops.quote_name(ErrorEvent._meta.db_table),
        "agents": connection.ops.quote_name(Agent._meta.db_table),
        "pattern_columns": PATTERN_COLUMNS,
        "event_columns": EVENT_COLUMNS,
        "arrays": _PATTERN_ARRAYS,
    }
    return _Statements(
        _NEW_PATTERNS.format(**names),
        _PATTERN_IDS.format(**names),
        _COPY.format(**names),
        _EVENTS.format(**names),
        _COUNT.format(**names),
    )


def _write(
    batch: Batch, inserted: dict[int, int] | None = None, totals: dict[str, tuple[int, int]] | None = None
) -> int:
    """Write a batch (inside the caller's transaction); how many events were inserted (none for a redelivered
    entry), by pattern id into `inserted` and the patterns' totals after it into `totals`, when given."""
    statements = _statements()
    rows = sorted(batch.patterns.values())
    connection.ensure_connection()
    # A cursor of psycopg's own, binding on the server: the connection's default (Django's client-side
    # binding) would quote every array element into the query text. Errors are Django's, as elsewhere.
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(statements.new_patterns, _pattern_arrays(rows, {}))
        cursor.execute(statements.pattern_ids, [list(batch.patterns)])
        ids: dict[str, int] = dict(cursor.fetchall())
        copied = _copy_events(cursor, statements.copy, batch, ids)
        if copied is not None:
            by_pattern = [(ids[fingerprint], fingerprint, n) for fingerprint, n in copied.items()]
        else:
            cursor.execute(statements.events, [batch.origins, batch.payloads])
            by_pattern = cursor.fetchall()
        added = {fingerprint: n for _, fingerprint, n in by_pattern}
        cursor.execute(statements.count, _pattern_arrays(rows, added))
        found = {fingerprint: (pk, total) for pk, fingerprint, total in cursor.fetchall()}
    if inserted is not None:
        inserted.update((pk, n) for pk, _, n in by_pattern)
    if totals is not None:
        totals.update(found)
    return sum(n for _, _, n in by_pattern)


def _copy_events(
    cursor: psycopg.Cursor[Any], copy: str, batch: Batch, ids: dict[str, int]
) -> Counter[str] | None:
    """COPY the batch's events: events per fingerprint, or None when the database refused the COPY because an
    event is stored already or its agent is gone (rolled back to before it; the caller inserts instead).

    A KeyError (an event of a fingerprint its entry does not list, a field missing) is the entry's content."""
    copied: Counter[str] = Counter()
    now = timezone.now().isoformat()
    cursor.execute("SAVEPOINT intake_copy")
    # Foreign keys are checked at commit otherwise (Django makes them deferrable): checked here, a deleted
    # agent fails the COPY, not the whole transaction.
    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    try:
        with cursor.copy(copy) as out:
            for origin, events in zip(batch.origins, batch.events, strict=True):
                for position, (fingerprint, event) in enumerate(events):
                    out.write_row(_event_row(ids[fingerprint], event, f"{origin}:{position}", now))
                    copied[fingerprint] += 1
    except _COPY_REFUSED:
        cursor.execute("ROLLBACK TO SAVEPOINT intake_copy")
        return None
    cursor.execute("RELEASE SAVEPOINT intake_copy")
    return copied


def _event_row(pattern_id: int, event: dict[str, Any], intake_key: str, now: str) -> tuple[Any, ...]:
    """One event in EVENT_COLUMNS order, then its intake key."""
    return (
        pattern_id,
        event["agent_id"],
        event["occurred_at"] or now,
        event["service"],
        event["operation"],
        event["error_class"],
        event["severity"],
        event["type_name"],
        event["message"],
        event["status_code"],
        event["retry_after_s"],
        event["rule_name"],
        orjson.dumps(event["context"]).decode(),
        event["request_id"],
        intake_key,
    )


def _pattern_arrays(rows: list[list[Any]], counts: dict[str, int]) -> list[list[Any]]:
    """The pattern rows as one array per column; total_count is what this write adds (new rows: 0)."""
    columns: list[list[Any]] = [[] for _ in range(12)]
    for row in rows:
        for index in range(9):
            columns[index].append(row[index])
        columns[9].append(_when(row[9]))
        columns[10].append(_when(row[10]))
        columns[11].append(counts.get(row[0], 0))
    return columns


def _when(value: Any) -> Any:
    return parse_datetime(value) if isinstance(value, str) else (value or timezone.now())

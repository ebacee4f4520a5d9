"""Writes of agents' tasks and their checkpoints: saving (with sequence numbers taken by compare-and-set),
heartbeats, completion, forks, retention and stale marking. The codec they write with (parsing a state,
canonical JSON, SHA-256, zlib) is codec.py, which the reads use too: both must agree on it byte for byte.

How it all behaves, and why: docs/checkpoints.md.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cache, partial
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.backends.utils import CursorWrapper
from django.db.models import F, Q, QuerySet
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from core.access.models import Agent
from core.api.errors import Conflict, InvalidInput, NotFound
from core.audit import services as audit
from core.audit.services import Actor
from core.infra.conf import rebound
from recovery import metrics
from recovery.checkpoints import signals
from recovery.checkpoints.codec import ENCODING, decode, encode
from recovery.checkpoints.models import Checkpoint, Task

log = logging.getLogger(__name__)
RETENTION_BATCH = 1000
FINISHED = (Task.Status.SUCCEEDED, Task.Status.FAILED, Task.Status.ABANDONED)


class SeqConflict(Conflict):
    """A writer's expected_seq is not the latest: someone else saved first (409, code seq_conflict)."""

    code = "seq_conflict"


# --- tasks ---------------------------------------------------------------------------------------------------


def create_task(
    *, agent: Agent, task_id: str, name: str = "", metadata: dict[str, Any] | None = None
) -> tuple[Task, bool]:
    """The agent's task with this id, created if new (True). An existing task is returned unchanged."""
    return Task.objects.get_or_create(
        agent=agent,
        task_id=task_id,
        defaults={"name": name, "metadata": metadata or {}, "started_at": timezone.now()},
    )


def _finished(task: Task) -> Conflict:
    return Conflict(
        f"Task {task.task_id!r} is {task.status}: a finished task takes no more checkpoints or heartbeats. "
        "Fork one of its checkpoints to go on from it.",
        field="task_id",
    )


def save_checkpoint(
    *,
    agent: Agent,
    task_id: str,
    state: Any,
    progress: float = 0,
    step: str = "",
    completed_steps: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    expected_seq: int | None = None,
    parsed: bool = False,
) -> Checkpoint:
    """Store the next checkpoint of the agent's task (created on first use). `parsed`: the state is what
    codec.parse_json read from a request's body (so it holds no NaN or Infinity: codec.canonical_json).

    The sequence number comes from a compare-and-set on Task.last_seq, atomically with the insert of the row:
    a writer that sent expected_seq and lost the race gets SeqConflict, never an overwrite; a writer that did
    not gets the next number (the increment is atomic under the row lock its UPDATE takes, so there is no retry
    loop for contention to exhaust). The unique (task, seq) constraint is the backstop.
    """
    encoded = encode(state, parsed=parsed)  # the CPU work, before any row is locked
    now = timezone.now()
    checkpoint = Checkpoint(
        data=encoded.data,
        encoding=ENCODING,
        sha256=encoded.sha256,
        size_bytes=encoded.size_bytes,
        stored_bytes=encoded.stored_bytes,
        progress=progress,
        step=step,
        completed_steps=completed_steps or [],
        metadata=metadata or {},
        created_at=now,
    )
    insert = _insert_postgres if connection.vendor == "postgresql" else _insert_portable
    try:
        # Usually once. A miss says why: a task seen for the first time is created with its first checkpoint
        # (or not at all); a finished task or another writer's seq is a Conflict.
        for _ in range(2):
            if insert(checkpoint, agent.pk, task_id, expected_seq):
                break
            if _insert_into_new_task(insert, checkpoint, agent, task_id, expected_seq):
                break
            _explain_miss(agent, task_id, expected_seq)
        else:
            raise Conflict("The task changed while the checkpoint was saved; try again.", field="task_id")
    except IntegrityError:  # the constraint caught what the compare-and-set should have: never overwrite
        raise SeqConflict(
            "Another checkpoint took this sequence number; read the latest and try again.",
            field="expected_seq",
        ) from None
    metrics.checkpoints_written_total.inc()
    metrics.checkpoint_bytes.observe(encoded.size_bytes)
    return checkpoint


# PostgreSQL: the compare-and-set and the insert in one statement, so one round trip, as a plain INSERT is.
# The UPDATE locks the task's row until the statement commits: a concurrent writer's UPDATE waits, then sees
# the new last_seq (and, if it expected the old one, updates nothing).
_INSERT_POSTGRES = """
WITH task AS (
    UPDATE {task} SET last_seq = last_seq + 1, last_checkpoint_at = %s, stale_at = NULL
    WHERE agent_id = %s AND task_id = %s AND status = 'running' {expected}
    RETURNING id, last_seq
)
INSERT INTO {checkpoint} (task_id, seq, data, encoding, sha256, size_bytes, stored_bytes, progress, step,
                          completed_steps, metadata, created_at)
SELECT task.id, task.last_seq, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s FROM task
RETURNING id, task_id, seq
"""


def _insert_postgres(checkpoint: Checkpoint, agent_id: int, task_id: str, expected: int | None) -> bool:
    c = checkpoint
    sql = _INSERT_POSTGRES.format(
        task=connection.ops.quote_name(Task._meta.db_table),
        checkpoint=connection.ops.quote_name(Checkpoint._meta.db_table),
        expected="AND last_seq = %s" if expected is not None else "",
    )
    params: list[Any] = [c.created_at, agent_id, task_id, *([expected] if expected is not None else [])]
    params += [c.data, c.encoding, c.sha256, c.size_bytes, c.stored_bytes, c.progress, c.step]
    params += [json.dumps(c.completed_steps), json.dumps(c.metadata), c.created_at]
    with _bound_by_server() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return False
    c.pk, c.task_id, c.seq = row
    return True


def _bound_by_server() -> CursorWrapper:
    """A cursor of Django's connection whose parameters PostgreSQL binds (psycopg's server-side binding), where
    Django's own cursors write them into the SQL text: the state's compressed bytes then travel as binary, not
    as a hex literal twice their size that PostgreSQL must lex and decode (per 100 KB save, measured: about
    0.15 ms less of PostgreSQL's CPU, 0.04 ms less of ours). All that Django's connection.cursor() does around
    a statement stays: the health check of a persistent connection, the thread check, the query log
    (CaptureQueriesContext), the error wrapping, and django-prometheus's counts. Statements are not prepared
    (Django leaves prepare_threshold off, for connection poolers): one round trip, as before."""
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    with connection.wrap_database_errors:  # a driver's error as Django's, as connection.cursor() gives it
        cursor = _server_binding_cursor_class()(connection.connection)
    return (
        connection.make_debug_cursor(cursor) if connection.queries_logged else connection.make_cursor(cursor)
    )


@cache
def _server_binding_cursor_class() -> type[Any]:
    # Imported here: the PostgreSQL backend only where the database is PostgreSQL.
    from django.db.backends.postgresql.base import ServerBindingCursor
    from django_prometheus.db.common import ExportingCursorWrapper

    return ExportingCursorWrapper(ServerBindingCursor, connection.alias, connection.vendor)  # type: ignore[no-any-return]


def _insert_portable(checkpoint: Checkpoint, agent_id: int, task_id: str, expected: int | None) -> bool:
    """Any other database (SQLite in the embedded mode): the same compare-and-set, then the insert, in one
    transaction."""
    running = Task.objects.filter(agent_id=agent_id, task_id=task_id, status=Task.Status.RUNNING)
    if expected is not None:
        running = running.filter(last_seq=expected)
    with transaction.atomic():
        touched = {"last_checkpoint_at": checkpoint.created_at, "stale_at": None}
        if not running.update(last_seq=F("last_seq") + 1, **touched):
            return False
        checkpoint.task_id, checkpoint.seq = (
            Task.objects.filter(agent_id=agent_id, task_id=task_id).values_list("pk", "last_seq").get()
        )
        checkpoint.save(force_insert=True)
    return True


Insert = Callable[[Checkpoint, int, str, int | None], bool]


def _insert_into_new_task(
    insert: Insert, checkpoint: Checkpoint, agent: Agent, task_id: str, expected: int | None
) -> bool:
    """The first checkpoint of a task seen for the first time: the task and the checkpoint in one transaction,
    so that a refused save creates nothing (an expected_seq other than 0 is refused here, before any row
    stays). False when the task was there after all: another request created it meanwhile."""
    with transaction.atomic():
        _, created = create_task(agent=agent, task_id=task_id)
        if not created:
            return False
        if insert(checkpoint, agent.pk, task_id, expected):
            return True
        # Rolls the task's creation back with the transaction.
        raise SeqConflict(
            f"expected_seq is {expected} but task {task_id!r} has no checkpoint yet: send expected_seq 0 "
            "(or none) for its first.",
            field="expected_seq",
        )


def _explain_miss(agent: Agent, task_id: str, expected: int | None) -> None:
    """Why the compare-and-set updated nothing: create a task seen for the first time (and return, to try
    again), or raise the conflict."""
    task, created = create_task(agent=agent, task_id=task_id)
    if created:
        return
    if task.is_finished:
        raise _finished(task)
    if expected is not None and task.last_seq != expected:
        raise SeqConflict(
            f"expected_seq is {expected} but the latest checkpoint is {task.last_seq}: another writer saved "
            f"first. Read it and decide, or send expected_seq {task.last_seq} to follow it.",
            field="expected_seq",
        )


def heartbeat(*, agent: Agent, task_id: str) -> datetime:
    """The task is alive: last_heartbeat_at now, no longer stale. Creates the task on first use."""
    now = timezone.now()
    running = Task.objects.filter(agent=agent, task_id=task_id, status=Task.Status.RUNNING)
    for _ in range(2):
        if running.update(last_heartbeat_at=now, stale_at=None):
            return now
        _explain_miss(agent, task_id, None)
    raise Conflict("The task changed while the heartbeat was saved; try again.", field="task_id")


def complete(*, task: Task, status: str, reason: str = "", actor: Actor) -> tuple[Task, bool]:
    """End a running task (compare-and-set from running). False when it had already ended with this status
    (a retried call); Conflict when it ended otherwise. A human's completion needs a reason and is audited."""
    if status not in FINISHED:
        raise InvalidInput("must be succeeded, failed or abandoned", field="status")
    human = actor.agent is None
    reason = audit.require_reason(reason) if human else reason.strip()
    metadata = {**task.metadata, "completion_reason": reason} if reason else task.metadata
    now = timezone.now()
    with transaction.atomic():
        changed = Task.objects.filter(pk=task.pk, status=Task.Status.RUNNING).update(
            status=status, finished_at=now, metadata=metadata
        )
        current = Task.objects.get(pk=task.pk)
        if changed and human:
            audit.record(
                actor,
                "task.complete",
                current,
                reason=reason,
                before={"status": Task.Status.RUNNING},
                after={"status": status},
            )
    if not changed and current.status != status:
        raise Conflict(
            f"Task {task.task_id!r} already ended as {current.status}; it cannot become {status}.",
            field="status",
        )
    return current, bool(changed)


def fork(*, task: Task, seq: int, new_task_id: str, name: str = "", actor: Actor, reason: str = "") -> Task:
    """A new task of the same agent whose checkpoint 1 is this checkpoint's state (checked intact first)."""
    source = Checkpoint.objects.filter(task=task, seq=seq).first()
    if source is None:
        raise NotFound(f"Task {task.task_id!r} has no checkpoint {seq}.", field="seq")
    decode(source)  # a corrupt state is not a place to go on from
    human = actor.agent is None
    reason = audit.require_reason(reason) if human else reason.strip()
    now = timezone.now()
    try:
        with transaction.atomic():
            child = Task.objects.create(
                agent_id=task.agent_id,
                task_id=new_task_id,
                name=name or task.name,
                metadata={"forked_from": {"task_id": task.task_id, "seq": seq}},
                forked_from=source,
                last_seq=1,
                started_at=now,
                last_checkpoint_at=now,
            )
            Checkpoint.objects.create(
                task=child,
                seq=1,
                data=source.data,
                encoding=source.encoding,
                sha256=source.sha256,
                size_bytes=source.size_bytes,
                stored_bytes=source.stored_bytes,
                progress=source.progress,
                step=source.step,
                completed_steps=source.completed_steps,
                metadata=source.metadata,
                created_at=now,
            )
            if human:
                audit.record(
                    actor,
                    "task.fork",
                    child,
                    reason=reason,
                    after={"forked_from": {"task_id": task.task_id, "seq": seq}},
                )
    except IntegrityError:
        raise Conflict(
            f"The agent already has a task {new_task_id!r}; choose a new id for the fork.", field="task_id"
        ) from None
    metrics.checkpoints_written_total.inc()
    metrics.checkpoint_bytes.observe(source.size_bytes)
    return child


# --- retention and stale tasks ------------------------------------------------------------------------------


def retention_rules(now: datetime) -> dict[str, QuerySet[Checkpoint]]:
    """What retention deletes, rule by rule (docs/checkpoints.md, "Retention")."""
    keep = int(rebound("CHECKPOINT_KEEP_AFTER_SUCCESS"))
    failed_until = now - timedelta(days=float(rebound("CHECKPOINT_KEEP_FAILED_DAYS")))
    max_age = now - timedelta(days=float(rebound("CHECKPOINT_MAX_AGE_DAYS")))
    # Sequence numbers have no gaps but those retention made, so "the last N" is seq > last_seq - N.
    beyond_keep = Q(seq__lte=F("task__last_seq") - keep)
    checkpoints = Checkpoint.objects.all()
    return {
        "succeeded": checkpoints.filter(beyond_keep, task__status=Task.Status.SUCCEEDED),
        "failed": checkpoints.filter(
            beyond_keep,
            task__status__in=[Task.Status.FAILED, Task.Status.ABANDONED],
            task__finished_at__lt=failed_until,
        ),
        # A running task's newest checkpoint outlives the maximum age: it is where the task resumes.
        "max_age": checkpoints.filter(created_at__lt=max_age).exclude(
            Q(task__status=Task.Status.RUNNING) & Q(seq=F("task__last_seq"))
        ),
    }


def enforce_retention(
    *, now: datetime | None = None, batch_size: int = RETENTION_BATCH, budget_s: float = 120.0
) -> dict[str, int]:
    """Delete what the retention rules say, in batches of batch_size rows, until done or out of time.

    Each batch is its own short statement, so no delete holds locks for long; whatever is left when the time
    budget runs out is deleted by the next run. The counts deleted per rule.
    """
    now = now or timezone.now()
    deadline = time.monotonic() + budget_s
    deleted = {}
    for rule, queryset in retention_rules(now).items():
        deleted[rule] = 0
        while time.monotonic() < deadline:
            ids = list(queryset.order_by().values_list("pk", flat=True)[:batch_size])
            if not ids:
                break
            deleted[rule] += _delete_checkpoints(ids)
    return deleted


def _delete_checkpoints(ids: list[int]) -> int:
    # only("pk"): the delete must never load the (large) data column. Forks keep their own copy of the state;
    # Django sets their forked_from to null, so they only lose the link to where they came from.
    _, per_model = Checkpoint.objects.filter(pk__in=ids).only("pk").delete()
    return int(per_model.get(Checkpoint._meta.label, 0))


def mark_stale(*, now: datetime | None = None, batch_size: int = RETENTION_BATCH) -> int:
    """Running tasks with no checkpoint or heartbeat for TASK_STALE_SECONDS get stale_at: how many did."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=float(rebound("TASK_STALE_SECONDS")))
    last_sign = Greatest(
        "started_at",
        Coalesce("last_checkpoint_at", "started_at"),
        Coalesce("last_heartbeat_at", "started_at"),
    )
    quiet = (
        Task.objects.filter(status=Task.Status.RUNNING, stale_at__isnull=True)
        .alias(last_sign=last_sign)
        .filter(last_sign__lt=cutoff)
    )
    marked = 0
    while ids := list(quiet.order_by().values_list("pk", flat=True)[:batch_size]):
        with transaction.atomic():
            # The conditions again: a heartbeat between the SELECT and the UPDATE must win.
            count = quiet.filter(pk__in=ids).update(stale_at=now)
            if count:
                # The rows this UPDATE marked: it holds their locks until the commit, so none has changed since.
                done = list(Task.objects.filter(pk__in=ids, stale_at=now).values_list("pk", flat=True))
                transaction.on_commit(partial(announce_stale, done))
        marked += count
        if len(ids) < batch_size:
            break
    if marked:
        log.warning("%d running task(s) marked stale: no checkpoint or heartbeat since %s", marked, cutoff)
    return marked


def announce_stale(task_ids: list[int]) -> None:
    """tasks_went_stale (signals.py), sent with send_robust: a receiver's error is logged, never the sweep's."""
    answers = signals.tasks_went_stale.send_robust(sender=Task, task_ids=task_ids)
    for receiver, answer in answers:
        if isinstance(answer, Exception):
            log.error(
                "tasks_went_stale receiver %r failed for %d task(s): %r", receiver, len(task_ids), answer
            )

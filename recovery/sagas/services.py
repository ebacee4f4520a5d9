"""Writes of transactions with compensations (sagas): opening, recording steps, committing, rolling back.

A rollback runs on Celery workers, one step at a time in reverse order, each compensation retried by its
policy. The guarantees (docs/sagas.md has the whole argument):

* Only the run holding the transaction's fence (a Celery task id) may start an attempt: a duplicate or stale
  delivery finds another id, or loses the race for the attempt's row, and exits.
* Every attempt is a `CompensationAttempt` row, unique per (step, number), written and committed BEFORE the
  call. A step is claimed once (`done` -> `compensating`), ends once (`compensated` or
  `compensation_failed`), and the attempt's outcome is written by compare-and-set on its `running` row.
* An attempt left `running` by a worker that died is not sent again before SAGA_ATTEMPT_LEASE_SECONDS
  (longer than any attempt may live): after that it is closed as lost and the next attempt re-sends the
  compensation with the same idempotency key, which is safe by the key's contract and recorded as such.

Nothing here does network I/O inside `transaction.atomic()`; tasks are enqueued on commit.
"""

from __future__ import annotations

import enum
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Max
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from core.api.errors import Conflict, InvalidInput, NotFound
from core.audit import services as audit
from core.audit.services import Actor
from core.infra import queue
from core.infra.conf import rebound
from recovery import metrics
from recovery.calls import outbound, task_registry
from recovery.calls import services as call_services
from recovery.calls.services import (
    IDEMPOTENCY_HEADER,
    IDEMPOTENCY_KWARG,
    CallOutcome,
    accepts_idempotency_key,
)
from recovery.checkpoints.models import Task
from recovery.decisions import policies
from recovery.decisions.models import RetryPolicy
from recovery.errors.classification import ErrorReport
from recovery.sagas import signals
from recovery.sagas.models import CompensationAttempt, Transaction, TransactionStep

log = logging.getLogger(__name__)

Status = Transaction.Status
StepStatus = TransactionStep.Status
Kind = TransactionStep.CompensationKind
Outcome = CompensationAttempt.Outcome

DEADLINE_REASON = "deadline passed"
# The attempt's error_type when its worker died during the call: its outcome is unknown.
WORKER_LOST = "rebound.WorkerLost"
# A run hands the rest of the rollback to a fresh task after this long, well inside the task's time limit.
RUN_BUDGET_S = 60.0


def new_fence() -> str:
    """A Celery task id: the rollback task that holds it is enqueued with exactly this id."""
    return str(uuid.uuid4())


# --- Opening, steps, commit ------------------------------------------------------------------------------


def open_transaction(
    *,
    actor: Actor,
    name: str,
    task_id: str | None,
    deadline_at: datetime,
    deadline_field: str = "deadline_at",
) -> Transaction:
    """A new open transaction. Every one has a deadline: an agent that dies mid-job leaves nothing half-done
    for ever."""
    now = timezone.now()
    if deadline_at <= now:
        raise InvalidInput("The deadline must be in the future.", field=deadline_field)
    longest = float(rebound("SAGA_MAX_DEADLINE_SECONDS"))
    if deadline_at > now + timedelta(seconds=longest):
        raise InvalidInput(
            f"The deadline may be at most {longest:g} s away (SAGA_MAX_DEADLINE_SECONDS).",
            field=deadline_field,
        )
    task = _task(actor, task_id) if task_id else None
    user = actor.user if actor.agent is None else None
    return Transaction.objects.create(
        agent=actor.agent, created_by=user, name=name, task=task, deadline_at=deadline_at
    )


def _task(actor: Actor, task_id: str) -> Task:
    """The agent's own task by its id. An operator names any agent's task, if only one agent has that id."""
    tasks = Task.objects.filter(task_id=task_id)
    if actor.agent is not None:
        tasks = tasks.filter(agent=actor.agent)
    found = list(tasks[:2])
    if not found:
        raise NotFound(f"Unknown task {task_id!r}.", field="task_id")
    if len(found) > 1:
        raise InvalidInput(
            f"Several agents have a task {task_id!r}: an agent's key must open this transaction.",
            field="task_id",
        )
    return found[0]


@dataclass(frozen=True)
class Compensation:
    """A validated compensation, as stored: HTTP, the request (method, url, headers, body, success_statuses,
    timeout_s); task, {name, args, kwargs}; none, {}."""

    kind: str
    data: dict[str, Any]


def validate_compensation(body: dict[str, Any], prefix: str = "compensation") -> Compensation:
    """Refuse at intake anything a worker could not run later, naming the field (compensation.request.url)."""
    kind = body.get("kind")
    if kind == Kind.HTTP:
        request = body.get("request")
        if not isinstance(request, dict):
            raise InvalidInput("must be an object with at least a url", field=f"{prefix}.request")
        if any(name.lower() == IDEMPOTENCY_HEADER.lower() for name in request.get("headers") or {}):
            raise InvalidInput(
                f"{IDEMPOTENCY_HEADER} is set by Rebound to the step's idempotency_key",
                field=f"{prefix}.request.headers",
            )
        return Compensation(Kind.HTTP, outbound.parse_request(request, f"{prefix}.request").to_json())
    if kind == Kind.TASK:
        task = body.get("task")
        if not isinstance(task, dict):
            raise InvalidInput("must be an object with a name", field=f"{prefix}.task")
        name, args, kwargs = task.get("name", ""), task.get("args", []), task.get("kwargs", {})
        if isinstance(kwargs, dict) and IDEMPOTENCY_KWARG in kwargs:
            raise InvalidInput(
                f"{IDEMPOTENCY_KWARG} is passed by Rebound (the step's key)", field=f"{prefix}.task.kwargs"
            )
        # Checked as it will be called at rollback: with the step's key when the task takes one.
        added = (IDEMPOTENCY_KWARG,) if accepts_idempotency_key(name) else ()
        task_registry.validate_task(name, args, kwargs, f"{prefix}.task", added=added)
        return Compensation(Kind.TASK, {"name": name, "args": list(args), "kwargs": dict(kwargs)})
    if kind == Kind.NONE:
        return Compensation(Kind.NONE, {})
    raise InvalidInput("must be one of http, task, none", field=f"{prefix}.kind")


def _policy(name: str | None) -> RetryPolicy | None:
    if not name:
        return None
    policy = RetryPolicy.objects.filter(name=name).first()
    if policy is None:
        raise InvalidInput(f"No retry policy is named {name!r}.", field="policy")
    return policy


def record_step(
    *,
    transaction_id: uuid.UUID,
    name: str,
    idempotency_key: str,
    compensation: Compensation,
    policy_name: str | None,
) -> tuple[TransactionStep, bool]:
    """Append a completed step; (step, created). The same key with the same step answers the stored one."""
    policy = _policy(policy_name)
    with transaction.atomic():
        # Locked: appends get their seq one after another, and a commit or rollback waits for this one, so the
        # rollback sees every step recorded before it began.
        txn = Transaction.objects.select_for_update().get(pk=transaction_id)
        existing = txn.steps.select_related("policy").filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            if _same_step(existing, name, compensation, policy):
                return existing, False
            raise Conflict(
                f"A different step was recorded with the idempotency key {idempotency_key!r}.",
                field="idempotency_key",
            )
        if txn.status != Status.OPEN:
            raise Conflict(f"Steps are recorded only while the transaction is open; it is {txn.status}.")
        last = txn.steps.aggregate(last=Max("seq"))["last"] or 0
        step = TransactionStep.objects.create(
            transaction=txn,
            seq=last + 1,
            name=name,
            idempotency_key=idempotency_key,
            compensation_kind=compensation.kind,
            compensation=compensation.data,
            policy=policy,
            # The policy as it is now: a later edit does not change how this step is compensated.
            policy_snapshot=policies.snapshot(policy) if policy is not None else {},
        )
        Transaction.objects.filter(pk=txn.pk).update(updated_at=timezone.now())
    return step, True


def _same_step(
    step: TransactionStep, name: str, compensation: Compensation, policy: RetryPolicy | None
) -> bool:
    return (
        step.name == name
        and step.compensation_kind == compensation.kind
        and step.compensation == compensation.data
        and step.policy_id == (policy.pk if policy is not None else None)
    )


def commit(*, transaction_id: uuid.UUID, actor: Actor) -> Transaction:
    """open -> committed. Committing a committed transaction again answers it as it is."""
    now = timezone.now()
    with transaction.atomic():
        done = Transaction.objects.filter(pk=transaction_id, status=Status.OPEN).update(
            status=Status.COMMITTED, finished_at=now, updated_at=now
        )
        txn = Transaction.objects.get(pk=transaction_id)
        if done:
            if actor.user is not None:  # an operator ending an agent's transaction: a human action
                audit.record(actor, "transaction.commit", txn, after={"status": txn.status})
            _count_on_commit(metrics.transactions_total, Status.COMMITTED.value)
            _ended_on_commit(txn.pk, Status.COMMITTED.value)
    if not done and txn.status != Status.COMMITTED:
        raise Conflict(f"Only an open transaction can be committed; this one is {txn.status}.")
    return txn


# --- Starting a rollback ---------------------------------------------------------------------------------


def request_rollback(*, transaction_id: uuid.UUID, reason: str, actor: Actor) -> tuple[Transaction, bool]:
    """open -> rolling_back and a rollback task enqueued; (transaction, started).

    A second request while one runs, or after it ended, starts nothing: it answers the transaction as it is.
    """
    reason = audit.require_reason(reason)
    fence = new_fence()
    now = timezone.now()
    with transaction.atomic():
        started = Transaction.objects.filter(pk=transaction_id, status=Status.OPEN).update(
            status=Status.ROLLING_BACK, rollback_reason=reason, fence=fence, updated_at=now
        )
        txn = Transaction.objects.get(pk=transaction_id)
        if started:
            audit.record(
                actor,
                "transaction.rollback",
                txn,
                reason=reason,
                before={"status": Status.OPEN},
                after={"status": Status.ROLLING_BACK},
            )
            enqueue(txn.pk, fence)
    if not started and txn.status == Status.COMMITTED:
        raise Conflict("The transaction is committed: there is nothing to roll back.")
    return txn, bool(started)


def retry_compensation(*, transaction_id: uuid.UUID, reason: str, actor: Actor) -> bool:
    """rollback_failed -> rolling_back: the failed step is set back to done (its attempts so far stay in the
    history, its budget starts again) and the rollback resumes from it. False if it had not failed."""
    reason = audit.require_reason(reason)
    fence = new_fence()
    now = timezone.now()
    with transaction.atomic():
        resumed = Transaction.objects.filter(pk=transaction_id, status=Status.ROLLBACK_FAILED).update(
            status=Status.ROLLING_BACK, needs_human=False, fence=fence, finished_at=None, updated_at=now
        )
        if not resumed:
            return False
        failed = list(
            TransactionStep.objects.filter(
                transaction_id=transaction_id, status=StepStatus.COMPENSATION_FAILED
            ).values_list("seq", flat=True)
        )
        TransactionStep.objects.filter(
            transaction_id=transaction_id, status=StepStatus.COMPENSATION_FAILED
        ).update(status=StepStatus.DONE, fence=fence, attempts=0)
        txn = Transaction.objects.get(pk=transaction_id)
        audit.record(
            actor,
            "transaction.retry_compensation",
            txn,
            reason=reason,
            before={"status": Status.ROLLBACK_FAILED, "needs_human": True, "failed_steps": failed},
            after={"status": Status.ROLLING_BACK, "needs_human": False},
        )
        enqueue(txn.pk, fence)
    return True


# The rollback's task (tasks.py), sent by name; the name predates the rooms and messages in flight carry it.
RUN_ROLLBACK_TASK = "recovery.saga_tasks.run_rollback"


def enqueue(transaction_id: Any, fence: str, countdown: float = 0) -> None:
    """Send the rollback task with the fence as its id once the surrounding transaction commits."""

    def send() -> None:
        try:
            queue.send(
                RUN_ROLLBACK_TASK,
                args=[str(transaction_id)],
                task_id=fence,
                countdown=countdown if countdown > 0 else None,
            )
        except Exception:  # the broker is down: beat's resume_stuck_rollbacks drives it once stale
            log.exception("could not enqueue the rollback of %s", transaction_id)

    transaction.on_commit(send)


def _count_on_commit(counter: Any, outcome: str) -> None:
    transaction.on_commit(lambda: counter.labels(outcome=outcome).inc())


def announce_end(transaction_id: Any, status: str) -> None:
    """transaction_ended (signals.py), sent with send_robust: a receiver's error is logged, never the saga's."""
    answers = signals.transaction_ended.send_robust(
        sender=Transaction, transaction_id=str(transaction_id), status=status
    )
    for receiver, answer in answers:
        if isinstance(answer, Exception):
            log.error("transaction_ended receiver %r failed for %s: %r", receiver, transaction_id, answer)


def _ended_on_commit(transaction_id: Any, status: str) -> None:
    # Called inside the transaction that ended it: the floor above hears of it once it is committed.
    transaction.on_commit(lambda: announce_end(transaction_id, status))


# --- Beat: deadlines and stalled rollbacks ---------------------------------------------------------------


def rollback_overdue(*, limit: int = 100) -> int:
    """Roll back open transactions past their deadline (reason "deadline passed"); how many started."""
    overdue = Transaction.objects.filter(status=Status.OPEN, deadline_at__lte=timezone.now())
    started = 0
    for pk in overdue.order_by("deadline_at").values_list("pk", flat=True)[:limit]:
        try:
            _, ran = request_rollback(transaction_id=pk, reason=DEADLINE_REASON, actor=Actor(source="system"))
        except Conflict:  # committed in the meantime
            continue
        started += ran
    return started


def resume_stuck(*, limit: int = 100) -> int:
    """Drive again, under a new fence, rollbacks without progress for SAGA_STALE_SECONDS: their task was
    lost (a worker died holding it, the broker was down). Safe at any time: the run honours pending retry
    times and running attempts' leases."""
    cutoff = timezone.now() - timedelta(seconds=float(rebound("SAGA_STALE_SECONDS")))
    stale = Transaction.objects.filter(status=Status.ROLLING_BACK, updated_at__lt=cutoff)
    resumed = 0
    for pk, fence in stale.order_by("updated_at").values_list("pk", "fence")[:limit]:
        resumed += hand_off(pk, fence, 0) is not None
    return resumed


# --- Running a rollback ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Next:
    """The rollback continues in the task enqueued with this fence as its id, after `countdown` seconds."""

    fence: str
    countdown: float


class _Settled(enum.Enum):
    CONTINUE = "continue"  # a step is settled: the run goes on to the next one


_CONTINUE = _Settled.CONTINUE


def run_rollback(transaction_id: Any, fence: str) -> Next | None:
    """Compensate the steps not yet compensated, newest first, while this run holds the fence.

    Answers where the rollback continues (a retry's delay, a lease to wait out, a hand-off), or None when this
    run is done with it: the rollback ended, or another run holds it.
    """
    started = time.monotonic()
    while True:
        txn = Transaction.objects.filter(pk=transaction_id).first()
        if txn is None or txn.status != Status.ROLLING_BACK or txn.fence != fence:
            return None
        step = (
            txn.steps.exclude(status=StepStatus.COMPENSATED).order_by("-seq").first()
        )  # the saga goes strictly backwards: the newest step not yet undone
        if step is None:
            _finish(txn, fence)
            return None
        if step.status == StepStatus.COMPENSATION_FAILED:
            _fail_transaction(txn.pk, fence)
            return None
        outcome = _settle(txn, step, fence)
        if outcome is not _CONTINUE:
            return outcome
        if time.monotonic() - started > RUN_BUDGET_S:
            return hand_off(txn.pk, fence, 0)


def _settle(txn: Transaction, step: TransactionStep, fence: str) -> _Settled | Next | None:
    now = timezone.now()
    if step.status == StepStatus.DONE:
        with transaction.atomic():
            if not _touch(txn.pk, fence):
                return None
            # The claim: a step goes from done to compensating once per rollback.
            claimed = TransactionStep.objects.filter(pk=step.pk, status=StepStatus.DONE).update(
                status=StepStatus.COMPENSATING, fence=fence, attempts=0
            )
        if not claimed:
            return _CONTINUE  # read again: a duplicate delivery of this run got there first
        step.refresh_from_db()
    if step.compensation_kind == Kind.NONE:
        with transaction.atomic():
            if not _touch(txn.pk, fence):
                return None
            TransactionStep.objects.filter(pk=step.pk, status=StepStatus.COMPENSATING).update(
                status=StepStatus.COMPENSATED, compensated_at=now
            )
        return _CONTINUE
    last = step.attempt_rows.order_by("-number").first()
    if last is not None and last.outcome == Outcome.SUCCESS:
        # That success ended the step in the same database transaction: this read of the step is stale. (Were it
        # not, the compensation took effect all the same: the step is compensated, never sent again.)
        TransactionStep.objects.filter(pk=step.pk, status=StepStatus.COMPENSATING).update(
            status=StepStatus.COMPENSATED, compensated_at=last.finished_at or now
        )
        return _CONTINUE
    if last is not None and last.outcome == Outcome.RUNNING:
        lease = timedelta(seconds=float(rebound("SAGA_ATTEMPT_LEASE_SECONDS")))
        if last.started_at + lease > now:
            # The attempt may still be under way in a process that is alive: never a second call beside it.
            return hand_off(txn.pk, fence, (last.started_at + lease - now).total_seconds())
        return _close_lost(txn, step, last, fence)
    if last is not None and last.outcome == Outcome.FAILURE and step.attempts > 0:
        retry_at = parse_datetime(str((step.last_error or {}).get("retry_at") or ""))
        if retry_at is not None and retry_at > now:
            return hand_off(txn.pk, fence, (retry_at - now).total_seconds())
    return _attempt(txn, step, (last.number if last is not None else 0) + 1, fence)


def _attempt(txn: Transaction, step: TransactionStep, number: int, fence: str) -> _Settled | Next | None:
    now = timezone.now()
    try:
        with transaction.atomic():
            if not _touch(txn.pk, fence):
                return None
            counted = TransactionStep.objects.filter(pk=step.pk, status=StepStatus.COMPENSATING).update(
                fence=fence, attempts=F("attempts") + 1
            )
            if not counted:
                return _CONTINUE  # what this run read is stale: the step has since ended
            # Written and committed before the call: a second run finds it and never calls beside it.
            attempt = CompensationAttempt.objects.create(
                step=step, number=number, started_at=now, task_id=fence
            )
    except IntegrityError:
        return None  # a duplicate delivery of this run created this attempt first: it makes the call
    step.refresh_from_db()
    outcome = call(step)
    classified = call_services.classify(outcome)
    if classified is None:
        return _record_success(txn, step, attempt, outcome.status_code, outcome.duration_ms)
    verdict = classified.verdict
    return _record_failure(
        txn,
        step,
        attempt,
        fence,
        classified.report,
        outcome.status_code,
        outcome.duration_ms,
        error_class=verdict.error_class,
        kind=verdict.kind,
    )


def call(step: TransactionStep) -> CallOutcome:
    """Run the step's compensation once, with the step's idempotency key. Never raises for its own failures."""
    if step.compensation_kind == Kind.HTTP:
        # Intake refused a caller's Idempotency-Key header: the step's key is the one sent.
        return call_services.call_http(step.compensation, step.idempotency_key)
    name = str(step.compensation.get("name", ""))
    kwargs = dict(step.compensation.get("kwargs") or {})
    if accepts_idempotency_key(name):
        kwargs[IDEMPOTENCY_KWARG] = step.idempotency_key
    return call_services.call_task(name, list(step.compensation.get("args") or []), kwargs)


def _record_success(
    txn: Transaction,
    step: TransactionStep,
    attempt: CompensationAttempt,
    status_code: int | None,
    duration_ms: float,
) -> _Settled | None:
    now = timezone.now()
    with transaction.atomic():
        # Every database transaction of a rollback locks the transaction's row first: one order, no deadlock.
        Transaction.objects.filter(pk=txn.pk).update(updated_at=now)
        closed = CompensationAttempt.objects.filter(pk=attempt.pk, outcome=Outcome.RUNNING).update(
            outcome=Outcome.SUCCESS, status_code=status_code, duration_ms=duration_ms, finished_at=now
        )
        if not closed:
            # Another run took this attempt for lost and re-sends it under the same key: it owns the step now.
            return None
        # The attempt row is the token: only one attempt of a step is ever running, so no fence is needed here.
        TransactionStep.objects.filter(pk=step.pk, status=StepStatus.COMPENSATING).update(
            status=StepStatus.COMPENSATED, compensated_at=now
        )
        _count_on_commit(metrics.compensations_total, "success")
    return _CONTINUE


def _record_failure(
    txn: Transaction,
    step: TransactionStep,
    attempt: CompensationAttempt,
    fence: str,
    report: ErrorReport,
    status_code: int | None,
    duration_ms: float | None,
    *,
    error_class: str,
    kind: str,
    lost: bool = False,
) -> _Settled | Next | None:
    """Close the attempt as failed and decide, in the same transaction: a retry after the policy's delay, or
    the step and the transaction failed (a human must look)."""
    policy = _step_policy(step, error_class, kind)
    now = timezone.now()
    delay = _retry_delay(step, attempt, policy, error_class, report.retry_after_s, now)
    retry_at = now + timedelta(seconds=delay) if delay is not None else None
    last_error = {
        "attempt": attempt.number,
        "error_class": error_class,
        "kind": kind,
        "error_type": report.type_name,
        "message": report.message[:2000],
        "status_code": status_code,
        "policy": policy.name,
        "delay_s": delay,
        "retry_at": retry_at.isoformat() if retry_at is not None else None,
    }
    with transaction.atomic():
        Transaction.objects.filter(pk=txn.pk).update(updated_at=now)  # locked first, as everywhere
        closed = CompensationAttempt.objects.filter(pk=attempt.pk, outcome=Outcome.RUNNING).update(
            outcome=Outcome.FAILURE,
            status_code=status_code,
            error_class=error_class,
            kind=kind,
            error_type=report.type_name[:200],
            message=report.message[:10_000],
            duration_ms=duration_ms,
            finished_at=now,
        )
        if not closed:
            # Closed meanwhile: by the run that made the attempt (it finished after all: read again), or by
            # another run that took it for lost and now re-sends it (that run drives the rollback).
            return _CONTINUE if lost else None
        TransactionStep.objects.filter(pk=step.pk, status=StepStatus.COMPENSATING).update(
            last_error=last_error
        )
        _count_on_commit(metrics.compensations_total, "failure")
        if retry_at is None:
            TransactionStep.objects.filter(pk=step.pk, status=StepStatus.COMPENSATING).update(
                status=StepStatus.COMPENSATION_FAILED
            )
            _fail_transaction(txn.pk, fence)
            return None
    return hand_off(txn.pk, fence, delay or 0)


def _close_lost(
    txn: Transaction, step: TransactionStep, attempt: CompensationAttempt, fence: str
) -> _Settled | Next | None:
    """The attempt's worker died during the call: its outcome is unknown. It counts as a transient failure;
    the next attempt re-sends the compensation with the same idempotency key."""
    report = ErrorReport(
        type_name=WORKER_LOST,
        message=f"no outcome within SAGA_ATTEMPT_LEASE_SECONDS: the worker running task {attempt.task_id} "
        "died during the call; the compensation is sent again with the same idempotency key",
    )
    return _record_failure(
        txn, step, attempt, fence, report, None, None, error_class="transient", kind="unknown", lost=True
    )


def _step_policy(step: TransactionStep, error_class: str, kind: str) -> RetryPolicy:
    if step.policy_snapshot:
        return policies.from_snapshot(step.policy_snapshot)
    return policies.resolve(None, "", error_class, kind)


def _retry_delay(
    step: TransactionStep,
    attempt: CompensationAttempt,
    policy: RetryPolicy,
    error_class: str,
    retry_after_s: float | None,
    now: datetime,
) -> float | None:
    """Seconds until the next attempt, or None when the policy allows no more."""
    counted = max(1, step.attempts)  # this round's attempts, the failed one included
    if not policies.retries(policy, error_class) or policies.attempts_left(policy, counted) <= 0:
        return None
    previous = (step.last_error or {}).get("delay_s")
    delay = policies.delay_s(
        policy,
        counted,
        retry_after_s=retry_after_s,
        previous_delay_s=float(previous) if isinstance(previous, int | float) else None,
    )
    if policy.deadline_s:
        first = step.attempt_rows.filter(number__gt=attempt.number - counted).order_by("number").first()
        began = first.started_at if first is not None else attempt.started_at
        if (now - began).total_seconds() + delay > policy.deadline_s:
            return None
    return delay


def hand_off(transaction_id: Any, fence: str, countdown: float) -> Next | None:
    """Pass the rollback to a new task after `countdown` seconds, under a new fence; None if this run had
    already lost the fence."""
    new = new_fence()
    with transaction.atomic():
        moved = Transaction.objects.filter(pk=transaction_id, status=Status.ROLLING_BACK, fence=fence).update(
            fence=new, updated_at=timezone.now()
        )
        if not moved:
            return None
        enqueue(transaction_id, new, countdown)
    return Next(new, round(max(0.0, countdown), 3))


def _touch(transaction_id: Any, fence: str) -> bool:
    """Record progress, and check in the same statement that this run still holds the fence."""
    return bool(
        Transaction.objects.filter(pk=transaction_id, status=Status.ROLLING_BACK, fence=fence).update(
            updated_at=timezone.now()
        )
    )


def _finish(txn: Transaction, fence: str) -> None:
    now = timezone.now()
    with transaction.atomic():
        ended = Transaction.objects.filter(pk=txn.pk, status=Status.ROLLING_BACK, fence=fence).update(
            status=Status.ROLLED_BACK, finished_at=now, updated_at=now
        )
        if ended:
            _count_on_commit(metrics.transactions_total, Status.ROLLED_BACK.value)
            _ended_on_commit(txn.pk, Status.ROLLED_BACK.value)


def _fail_transaction(transaction_id: Any, fence: str) -> None:
    """The saga stops at the failed step: older steps stay done (undoing them out of order could be worse than
    not at all), and a human decides."""
    now = timezone.now()
    with transaction.atomic():
        ended = Transaction.objects.filter(pk=transaction_id, status=Status.ROLLING_BACK, fence=fence).update(
            status=Status.ROLLBACK_FAILED, needs_human=True, finished_at=now, updated_at=now
        )
        if ended:
            _count_on_commit(metrics.transactions_total, Status.ROLLBACK_FAILED.value)
            # The escalation queue raises an emergency for it (healing/escalations/event_triggers.py).
            _ended_on_commit(transaction_id, Status.ROLLBACK_FAILED.value)
            log.error("the rollback of transaction %s failed: it needs a human", transaction_id)

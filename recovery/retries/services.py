"""Writes of server-side retries (retry_operation): an operation handed to Rebound, run on Celery workers with
its policy's delays, every attempt a RetryAttempt row counted into the service's breaker.

A job's life, every step a compare-and-set on its row:

    pending --(the task holding the fence claims it)--> running --success--> succeeded
       ^                                                   |--failure, retried--> pending (next attempt queued)
       |                                                   '--failure, not retried / no attempts left--> failed
       '-- rerun (operators) <-- failed, cancelled <-- cancel (operators) -- pending, running

The fence is the Celery task id allowed to run the next attempt: a duplicate or stale delivery finds another id
(or another state, or another attempt count) and exits, and the (job, number) unique key of RetryAttempt keeps a
redelivered task from running an attempt twice. Network calls never happen inside a transaction; the next
attempt is enqueued once the transition is committed. An open breaker or a spent retry budget postpones the
attempt without spending it, up to the job's deadline.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from core.api.errors import Conflict, InvalidInput
from core.audit import services as audit
from core.audit.models import AuditEvent
from core.audit.services import Actor
from core.infra import queue
from core.infra.conf import rebound
from recovery import metrics
from recovery.breakers import registry as breaker_registry
from recovery.breakers import services as breaker_services
from recovery.calls import outbound, task_registry
from recovery.calls import services as call_services
from recovery.calls.services import IDEMPOTENCY_KWARG, CallOutcome, accepts_idempotency_key
from recovery.decisions import budget, policies
from recovery.decisions.models import RetryPolicy
from recovery.errors.classification import ErrorReport, fingerprint, message_template
from recovery.errors.services import classify_report
from recovery.errors.writes import Classified
from recovery.learning import services as learning
from recovery.learning import stats as learning_stats
from recovery.retries import selectors, signals
from recovery.retries.models import RetryAttempt, RetryJob

if TYPE_CHECKING:
    from recovery.retries.schemas import RetryJobIn

log = logging.getLogger(__name__)

State = RetryJob.State
# The attempt task's hard time limit: below RETRY_ATTEMPT_LEASE_SECONDS (300 s by default), so that an attempt
# still running after its lease has lost its worker rather than being slow (docs/retries.md, "The sweep").
RUN_TIME_LIMIT_S = 280
RUN_SOFT_TIME_LIMIT_S = 240
# The error a lost attempt is recorded with: its worker died mid-call (a kill, an out-of-memory, a restart).
WORKER_LOST = "celery.exceptions.WorkerLostError"
MESSAGE_CHARS = 10_000
# Where a rerun keeps the attempts of earlier runs, so that a new run gets the policy's attempts afresh.
ATTEMPTS_BEFORE = "attempts_before"


def _now() -> datetime:
    return timezone.now()


def _fence() -> str:
    return uuid.uuid4().hex


def worker_actor(job: RetryJob) -> Actor:
    """Attempts run on behalf of the job's agent: its errors and any breaker transition they cause say so."""
    return Actor(agent=job.agent, source=AuditEvent.Source.SYSTEM)


# --- enqueueing ------------------------------------------------------------------------------------------

# The attempt's task (tasks.py), sent by name; the name predates the rooms and messages in flight carry it.
RUN_ATTEMPT_TASK = "recovery.retry_tasks.run_retry_attempt"


def enqueue(job_id: uuid.UUID | str, number: int, fence: str, countdown: float = 0.0) -> None:
    """Send the attempt's task with the fence as its id. A broker failure is logged, not raised: the job is
    pending in the database, and the periodic sweep enqueues overdue attempts again."""
    try:
        queue.send(
            RUN_ATTEMPT_TASK, args=[str(job_id), number], task_id=fence, countdown=max(0.0, float(countdown))
        )
    except Exception as error:
        log.warning("could not enqueue attempt %d of retry job %s: %s", number, job_id, error)


def _enqueue_on_commit(job_id: uuid.UUID | str, number: int, fence: str, countdown: float = 0.0) -> None:
    transaction.on_commit(lambda: enqueue(job_id, number, fence, countdown))


# --- telling the floor above -----------------------------------------------------------------------------


def announce_finished(job: RetryJob, state: str, *, needs_human: bool) -> None:
    """job_finished (signals.py), sent with send_robust: a receiver's error is logged, never the job's."""
    answers = signals.job_finished.send_robust(
        sender=RetryJob,
        job_id=str(job.pk),
        service=job.service.name,
        operation=job.operation,
        state=str(state),  # a plain string, never the model's enum
        needs_human=needs_human,
    )
    for receiver, answer in answers:
        if isinstance(answer, Exception):
            log.error("job_finished receiver %r failed for retry job %s: %r", receiver, job.pk, answer)


def _finished_on_commit(job: RetryJob, state: str, *, needs_human: bool) -> None:
    # Called inside the transaction that moved the job: the floor above hears of it once it is committed.
    transaction.on_commit(lambda: announce_finished(job, state, needs_human=needs_human))


def _learn(job: RetryJob, state: str, now: datetime) -> None:
    """Fold a job that just succeeded or failed into the error learning, inside the transaction that finished it
    (so exactly once). A success after a failed attempt is a recovery by server-side retry, a failure one that
    did not recover; a first-attempt success recovered nothing. The error is the first failed attempt's, its
    fingerprint derived again from the attempt's stored fields as the classifier derives it."""
    first = (
        RetryAttempt.objects.filter(job=job, outcome=RetryAttempt.Outcome.FAILURE).order_by("number").first()
    )
    if first is None and state == State.SUCCEEDED:
        return
    succeeded = state == State.SUCCEEDED
    pattern = ""
    if first is not None:
        report = ErrorReport(
            service=job.service.name,
            operation=job.operation,
            type_name=first.error_type,
            message=first.message,
        )
        pattern = fingerprint(report, first.error_class, message_template(first.message))
    failed_at = (first.finished_at or first.started_at) if first is not None else None
    learning.record(
        [
            learning.Result(
                action=learning_stats.SERVER_RETRY,
                service=job.service.name,
                error_class=first.error_class if first is not None else "",
                fingerprint=pattern,
                outcome="succeeded" if succeeded else "failed",
                at=now,
                recover_s=(now - job.created_at).total_seconds() if succeeded else None,
                recovered_after_s=(now - failed_at).total_seconds() if succeeded and failed_at else None,
                source="retry_job",
            )
        ]
    )


# --- creating --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewJob:
    service: str
    operation: str
    kind: str
    idempotency_key: str
    request: dict[str, Any] | None = None
    task: dict[str, Any] | None = None  # {"name", "args", "kwargs"}
    policy: str | None = None  # a policy's name; None: resolved for the service and operation

    @classmethod
    def of(cls, body: RetryJobIn) -> NewJob:
        """The job as POST /retries and the MCP tool retry_operation receive it."""
        return cls(
            service=body.service,
            operation=body.operation,
            kind=body.kind,
            idempotency_key=body.idempotency_key,
            request=body.request.model_dump(exclude_none=True) if body.request else None,
            task=body.task.model_dump() if body.task else None,
            policy=body.policy,
        )


@dataclass(frozen=True)
class _Spec:
    """A new job's fields once validated, as they are stored (and compared for an idempotent replay)."""

    request: dict[str, Any]
    task_name: str
    task_args: list[Any]
    task_kwargs: dict[str, Any]


def _spec(new: NewJob) -> _Spec:
    if new.kind == RetryJob.Kind.HTTP:
        if new.task is not None:
            raise InvalidInput("an http job has a request, not a task", field="task")
        if new.request is None:
            raise InvalidInput("an http job needs the request to make", field="request")
        return _Spec(outbound.parse_request(new.request, "request").to_json(), "", [], {})
    if new.kind == RetryJob.Kind.TASK:
        if new.request is not None:
            raise InvalidInput("a task job has a task, not a request", field="request")
        if new.task is None:
            raise InvalidInput("a task job needs the task to run", field="task")
        name, args, kwargs = new.task.get("name", ""), new.task.get("args", []), new.task.get("kwargs", {})
        # Checked as it will be called: with the job's idempotency key when the task takes one.
        keyed = isinstance(kwargs, dict) and IDEMPOTENCY_KWARG not in kwargs and accepts_idempotency_key(name)
        task_registry.validate_task(name, args, kwargs, "task", added=(IDEMPOTENCY_KWARG,) if keyed else ())
        return _Spec({}, name, list(args), dict(kwargs))
    raise InvalidInput("must be http or task", field="kind")


def _policy(new: NewJob, service: Any) -> RetryPolicy:
    if new.policy:
        found = RetryPolicy.objects.filter(name=new.policy).first()
        if found is None:
            raise InvalidInput(f"no retry policy is named {new.policy!r}", field="policy")
        return found
    return policies.resolve(service, new.operation, "", "")


def _deadline(policy: RetryPolicy, now: datetime) -> datetime:
    longest = float(rebound("RETRY_JOB_MAX_SECONDS"))
    return now + timedelta(seconds=min(policy.deadline_s or longest, longest))


def _owned(actor: Actor) -> dict[str, Any]:
    """The owner's side of the idempotency key: an agent's keys, or a user's."""
    if actor.agent is not None:
        return {"agent": actor.agent}
    return {"agent__isnull": True, "created_by": actor.user}


def _same(job: RetryJob, new: NewJob, spec: _Spec, service_id: int) -> bool:
    same_policy = not new.policy or job.policy_snapshot.get("name") == new.policy
    return (
        job.service_id == service_id
        and job.operation == new.operation
        and job.kind == new.kind
        and job.request == spec.request
        and job.task_name == spec.task_name
        and job.task_args == spec.task_args
        and job.task_kwargs == spec.task_kwargs
        and same_policy
    )


def _replay(new: NewJob, spec: _Spec, service_id: int, actor: Actor) -> RetryJob | None:
    existing = RetryJob.objects.filter(idempotency_key=new.idempotency_key, **_owned(actor)).first()
    if existing is None:
        return None
    if not _same(existing, new, spec, service_id):
        raise Conflict(
            f"the idempotency key {new.idempotency_key!r} was used for another operation (job {existing.pk})",
            field="idempotency_key",
        )
    return existing


def create_job(new: NewJob, *, actor: Actor) -> tuple[RetryJob, bool]:
    """Hand an operation to Rebound. Answers (job, created): the same idempotency key from the same agent (or
    user) answers the existing job, unless the body differs (409). The first attempt is enqueued on commit."""
    spec = _spec(new)
    service = breaker_registry.get(new.service)
    replayed = _replay(new, spec, service.pk, actor)
    if replayed is not None:
        return replayed, False
    policy = _policy(new, service)
    now = _now()
    fence = _fence()
    job = RetryJob(
        agent=actor.agent,
        created_by=actor.user if actor.agent is None and actor.user is not None else None,
        service=service,
        operation=new.operation,
        kind=new.kind,
        request=spec.request,
        task_name=spec.task_name,
        task_args=spec.task_args,
        task_kwargs=spec.task_kwargs,
        idempotency_key=new.idempotency_key,
        policy=policy if policy.pk else None,
        policy_snapshot=policies.snapshot(policy),
        state=State.PENDING,
        next_attempt_at=now,
        deadline_at=_deadline(policy, now),
        fence=fence,
    )
    try:
        with transaction.atomic():
            job.save()
            _enqueue_on_commit(job.pk, 1, fence)
    except IntegrityError:
        # The same key at the same moment from another request: theirs won, answer it (or 409 if it differs).
        replayed = _replay(new, spec, service.pk, actor)
        if replayed is None:
            raise
        return replayed, False
    return job, True


# --- running an attempt ----------------------------------------------------------------------------------


def call(job: RetryJob) -> CallOutcome:
    """Make the job's call once: the HTTP request, or the registered task in this worker."""
    if job.kind == RetryJob.Kind.HTTP:
        return call_services.call_http(job.request, job.idempotency_key)
    kwargs = call_services.keyed_kwargs(job.task_name, job.task_kwargs, job.idempotency_key)
    return call_services.call_task(job.task_name, job.task_args, kwargs)


@dataclass(frozen=True)
class AttemptVerdict:
    state: str  # succeeded, pending (retry), failed
    delay_s: float | None
    why: str


def decide(job: RetryJob, number: int, classified: Classified | None, now: datetime) -> AttemptVerdict:
    """After attempt `number`: done, retry after a delay, or give up (a human decides)."""
    if classified is None:
        return AttemptVerdict(State.SUCCEEDED, None, f"attempt {number} succeeded")
    policy = policies.from_snapshot(job.policy_snapshot)
    in_run = number - int(job.policy_snapshot.get(ATTEMPTS_BEFORE, 0))
    verdict = classified.verdict
    if not policies.retries(policy, verdict.error_class):
        return AttemptVerdict(
            State.FAILED, None, f"the policy {policy.name!r} does not retry {verdict.error_class}"
        )
    if not verdict.retryable:
        return AttemptVerdict(
            State.FAILED, None, f"a {verdict.kind} error ({verdict.error_class}) is not retryable"
        )
    if policies.attempts_left(policy, in_run) <= 0:
        return AttemptVerdict(State.FAILED, None, f"no attempts left: {in_run} of {policy.max_attempts} used")
    previous = (job.last_error or {}).get("next_delay_s")
    delay = policies.delay_s(
        policy, in_run, retry_after_s=classified.report.retry_after_s, previous_delay_s=previous
    )
    if job.deadline_at is not None and now + timedelta(seconds=delay) > job.deadline_at:
        return AttemptVerdict(State.FAILED, None, f"waiting {delay:g} s would pass the job's deadline")
    left = policies.attempts_left(policy, in_run)
    return AttemptVerdict(State.PENDING, delay, f"retrying in {delay:g} s ({left} attempts left)")


def _error_json(classified: Classified, number: int, decision: AttemptVerdict) -> dict[str, Any]:
    report, verdict = classified.report, classified.verdict
    return {
        "attempt": number,
        "type": report.type_name,
        "message": report.message[:MESSAGE_CHARS],
        "status_code": report.status_code,
        "retry_after_s": report.retry_after_s,
        "error_class": verdict.error_class,
        "severity": verdict.severity,
        "kind": verdict.kind,
        "rule": verdict.rule.name if verdict.rule else None,
        "decision": decision.why,
        "next_delay_s": decision.delay_s,
    }


def _claim(job: RetryJob, number: int, task_id: str) -> RetryAttempt | None:
    """pending -> running, and the attempt's row; None when another delivery got there first."""
    now = _now()
    try:
        with transaction.atomic():
            claimed = RetryJob.objects.filter(
                pk=job.pk, state=State.PENDING, fence=task_id, attempts=number - 1
            ).update(state=State.RUNNING, attempts=number, next_attempt_at=None, updated_at=now)
            if not claimed:
                return None
            return RetryAttempt.objects.create(job=job, number=number, task_id=task_id, started_at=now)
    except IntegrityError:
        return None  # the attempt's row exists: a redelivered task must not run it again


def _budget_wait(check: budget.BudgetCheck) -> tuple[None, float, str]:
    # Retries leave the window as it slides: a quarter of it is a fair wait before asking again.
    return None, max(1.0, check.window_s / 4), f"the retry budget is spent: {check.describe()}"


def _gate(job: RetryJob, number: int) -> tuple[str | None, float, str]:
    """(permit_id, 0, "") when the call may go now, else (None, how long to wait, why).

    A retry (any attempt after the first) needs the service's retry budget: looked at first, spent only once
    the breaker has let the call through, so that waiting for a breaker never uses up the fleet's budget.
    """
    if number > 1:
        check = budget.peek(job.service)
        if not check.allowed:
            return _budget_wait(check)
    permit = breaker_services.request_permit(job.service.name, actor=worker_actor(job))
    if not permit.allowed:
        wait = permit.retry_after_s or job.service.wait_duration_s
        return None, max(0.1, float(wait)), f"the breaker of {job.service.name} is {permit.state}"
    if number > 1:
        check = budget.try_retry(job.service)
        if not check.allowed:  # another retry took the last one since the look
            return _budget_wait(check)
    return permit.permit_id or "", 0.0, ""


def _postpone(job: RetryJob, number: int, task_id: str, wait_s: float, why: str) -> str:
    """Wait without spending an attempt; give up (a human decides) if the wait would pass the deadline."""
    now = _now()
    at = now + timedelta(seconds=wait_s)
    fenced = RetryJob.objects.filter(pk=job.pk, state=State.PENDING, fence=task_id, attempts=number - 1)
    if job.deadline_at is not None and at > job.deadline_at:
        # The last real error stays the job's error; the decision says why no attempt follows it.
        previous = job.last_error or {"attempt": number, "type": "rebound.Postponed", "message": why}
        with transaction.atomic():
            if fenced.update(
                state=State.FAILED,
                needs_human=True,
                fence="",
                next_attempt_at=None,
                finished_at=now,
                updated_at=now,
                last_error={
                    **previous,
                    "decision": f"{why}: waiting {wait_s:g} s would pass the job's deadline",
                },
            ):
                _finished_on_commit(job, State.FAILED, needs_human=True)
                _learn(job, State.FAILED, now)
        return "failed"
    fence = _fence()
    with transaction.atomic():
        if fenced.update(fence=fence, next_attempt_at=at, updated_at=now):
            _enqueue_on_commit(job.pk, number, fence, wait_s)
    log.info("retry job %s: attempt %d postponed %.1f s: %s", job.pk, number, wait_s, why)
    return "postponed"


def run_attempt(job_id: str, number: int, task_id: str) -> str:
    """Attempt `number` of a job, if `task_id` still holds its fence. Answers what happened, for the logs."""
    job = RetryJob.objects.select_related("service", "agent").filter(pk=job_id).first()
    if job is None or job.state != State.PENDING or job.fence != task_id or job.attempts != number - 1:
        return "stale"
    permit_id, wait_s, why = _gate(job, number)
    if permit_id is None:
        return _postpone(job, number, task_id, wait_s, why)
    attempt = _claim(job, number, task_id)
    if attempt is None:
        return "stale"
    outcome = call(job)
    classified = call_services.classify(outcome, service=job.service.name, operation=job.operation)
    decision = _finish(job, attempt, task_id, outcome, classified)
    _count_into_breaker(job, outcome, classified, permit_id)
    return decision.state


def _finish(
    job: RetryJob, attempt: RetryAttempt, task_id: str, outcome: CallOutcome, classified: Classified | None
) -> AttemptVerdict:
    now = _now()
    number = attempt.number
    decision = decide(job, number, classified, now)
    job_fields: dict[str, Any] = {"updated_at": now}
    if decision.state == State.SUCCEEDED:
        job_fields.update(
            state=State.SUCCEEDED, result=outcome.value, last_error=None, fence="", finished_at=now
        )
    elif decision.state == State.PENDING:
        fence = _fence()
        job_fields.update(
            state=State.PENDING,
            fence=fence,
            next_attempt_at=now + timedelta(seconds=decision.delay_s or 0),
            last_error=_error_json(classified, number, decision) if classified else None,
        )
    else:
        job_fields.update(
            state=State.FAILED,
            needs_human=True,
            fence="",
            finished_at=now,
            last_error=_error_json(classified, number, decision) if classified else None,
        )
    with transaction.atomic():
        RetryAttempt.objects.filter(pk=attempt.pk).update(**_attempt_fields(outcome, classified, now))
        # Compare-and-set: an operator may have cancelled the job while the call ran; then it stays cancelled.
        moved = RetryJob.objects.filter(pk=job.pk, state=State.RUNNING, fence=task_id).update(**job_fields)
        if moved and decision.state == State.PENDING:
            _enqueue_on_commit(job.pk, number + 1, job_fields["fence"], decision.delay_s or 0)
        elif moved:
            _finished_on_commit(job, decision.state, needs_human=decision.state == State.FAILED)
            _learn(job, decision.state, now)
        if number > 1:
            label, service = ("success" if outcome.ok else "failure"), job.service.name
            transaction.on_commit(lambda: metrics.retries_total.labels(service=service, outcome=label).inc())
    return decision


def _attempt_fields(outcome: CallOutcome, classified: Classified | None, now: datetime) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "outcome": RetryAttempt.Outcome.SUCCESS if outcome.ok else RetryAttempt.Outcome.FAILURE,
        "status_code": outcome.status_code,
        "duration_ms": outcome.duration_ms,
        "finished_at": now,
    }
    if classified is not None:
        fields.update(
            error_class=classified.verdict.error_class,
            kind=classified.verdict.kind,
            severity=classified.verdict.severity,
            error_type=classified.report.type_name[:200],
            message=classified.report.message[:MESSAGE_CHARS],
        )
    return fields


def _count_into_breaker(
    job: RetryJob, outcome: CallOutcome, classified: Classified | None, permit_id: str
) -> None:
    report = breaker_services.OutcomeReport(
        service=job.service.name,
        operation=job.operation,
        success=outcome.ok,
        duration_ms=outcome.duration_ms,
        error=classified.report if classified else None,
        permit_id=permit_id,
    )
    try:
        breaker_services.record_outcomes([report], actor=worker_actor(job))
    except Exception:
        # The attempt is recorded already; a breaker that missed one outcome is better than a lost attempt.
        log.exception("retry job %s: the outcome of an attempt could not be counted", job.pk)


# --- the sweep (beat) ------------------------------------------------------------------------------------


def requeue_overdue(now: datetime | None = None, limit: int = 500) -> int:
    """Enqueue again the attempts that should have run by now (a lost message, a worker that died before it
    claimed the job), each with a new fence so that a late original exits. Also settles attempts whose worker
    died mid-call. Answers how many jobs it touched."""
    now = now or _now()
    cutoff = now - timedelta(seconds=float(rebound("RETRY_REQUEUE_AFTER_SECONDS")))
    overdue = RetryJob.objects.filter(state=State.PENDING, next_attempt_at__lt=cutoff)
    return _requeue(overdue, now, limit) + _settle_lost(RetryJob.objects.all(), now, limit)


def requeue_stuck(service: str, now: datetime | None = None, limit: int = 500) -> int:
    """The sweep for one service, at once (the healing action requeue_stuck_retries): enqueue again its pending
    attempts that are due, without waiting RETRY_REQUEUE_AFTER_SECONDS (each with a new fence, so that a late
    original exits), and settle its attempts lost with their worker. Answers how many jobs it touched."""
    now = now or _now()
    due = RetryJob.objects.filter(service__name=service, state=State.PENDING, next_attempt_at__lte=now)
    return _requeue(due, now, limit) + _settle_lost(
        RetryJob.objects.filter(service__name=service), now, limit
    )


def _requeue(pending: QuerySet[RetryJob], now: datetime, limit: int) -> int:
    """A new fence and a new message for each of these pending jobs (compare-and-set on the old fence)."""
    touched = 0
    for job in pending.order_by("next_attempt_at").only("pk", "fence", "attempts")[:limit]:
        fence = _fence()
        with transaction.atomic():
            if RetryJob.objects.filter(
                pk=job.pk, state=State.PENDING, fence=job.fence, attempts=job.attempts
            ).update(fence=fence, updated_at=now):
                _enqueue_on_commit(job.pk, job.attempts + 1, fence)
                touched += 1
    return touched


def _settle_lost(jobs: QuerySet[RetryJob], now: datetime, limit: int) -> int:
    # The claim set updated_at, and nothing touches a running job until its attempt ends: a job still running
    # a lease after its claim lost its worker mid-call (the lease is longer than the task's hard time limit).
    lost_before = now - timedelta(seconds=float(rebound("RETRY_ATTEMPT_LEASE_SECONDS")))
    touched = 0
    for job in jobs.select_related("service").filter(state=State.RUNNING, updated_at__lt=lost_before)[:limit]:
        touched += settle_lost_attempt(job, now)
    return touched


def after_loss(job: RetryJob, now: datetime) -> AttemptVerdict:
    """What follows an attempt lost with its worker. Whether the call reached its target is unknown, so it is
    sent again (at once: the lease has waited long enough, and with the same idempotency key) only when doing
    so is safe (`why_resend_is_safe`) and the policy still allows an attempt; otherwise a human decides."""
    lost = "the attempt's worker was lost: whether the call happened is unknown"
    safe = call_services.why_resend_is_safe(
        kind=job.kind, request=job.request, task_name=job.task_name, task_kwargs=job.task_kwargs
    )
    if not safe:
        return AttemptVerdict(State.FAILED, None, f"{lost}, and sending it again might do it twice")
    policy = policies.from_snapshot(job.policy_snapshot)
    in_run = job.attempts - int(job.policy_snapshot.get(ATTEMPTS_BEFORE, 0))
    left = policies.attempts_left(policy, in_run)
    if left <= 0:
        return AttemptVerdict(
            State.FAILED, None, f"{lost}; no attempts left: {in_run} of {policy.max_attempts} used"
        )
    if job.deadline_at is not None and now > job.deadline_at:
        return AttemptVerdict(State.FAILED, None, f"{lost}; the job's deadline has passed")
    return AttemptVerdict(
        State.PENDING, 0.0, f"{lost}; sent again with the same idempotency key ({safe}), {left} attempts left"
    )


def settle_lost_attempt(job: RetryJob, now: datetime) -> int:
    """An attempt whose worker vanished mid-call: its row is closed as a failure (WorkerLostError), and the
    job either goes on with the next attempt under a new fence (after_loss) or fails and waits for a human
    (who can rerun it). Compare-and-set on the running job, so two sweeps settle it once."""
    number = job.attempts
    report = ErrorReport(
        service=job.service.name,
        operation=job.operation,
        type_name=WORKER_LOST,
        message=f"the worker running attempt {number} was lost before it reported an outcome",
    )
    classified = classify_report(report)
    decision = after_loss(job, now)
    fields: dict[str, Any] = {"updated_at": now, "last_error": _error_json(classified, number, decision)}
    if decision.state == State.PENDING:
        fields.update(state=State.PENDING, fence=_fence(), next_attempt_at=now)
    else:
        fields.update(state=State.FAILED, needs_human=True, fence="", finished_at=now)
    with transaction.atomic():
        moved = RetryJob.objects.filter(
            pk=job.pk, state=State.RUNNING, attempts=number, updated_at=job.updated_at
        ).update(**fields)
        if not moved:
            return 0
        # History is data: the lost attempt stays a row, closed as what it was.
        RetryAttempt.objects.filter(job=job, number=number, outcome=RetryAttempt.Outcome.RUNNING).update(
            outcome=RetryAttempt.Outcome.FAILURE,
            error_class=classified.verdict.error_class,
            kind=classified.verdict.kind,
            severity=classified.verdict.severity,
            error_type=report.type_name,
            message=report.message,
            finished_at=now,
        )
        if decision.state == State.PENDING:
            _enqueue_on_commit(job.pk, number + 1, fields["fence"])
        else:
            _finished_on_commit(job, State.FAILED, needs_human=True)
            _learn(job, State.FAILED, now)
    log.warning("retry job %s: attempt %d lost with its worker: %s", job.pk, number, decision.why)
    return 1


# --- operators -------------------------------------------------------------------------------------------


def _get(job_id: uuid.UUID | str) -> RetryJob:
    return selectors.job(job_id, agent=None)


def cancel_job(*, job_id: uuid.UUID | str, actor: Actor, reason: str) -> RetryJob:
    """pending or running -> cancelled (audited). A running call finishes, but its job stays cancelled."""
    reason = audit.require_reason(reason)
    job = _get(job_id)
    now = _now()
    with transaction.atomic():
        changed = RetryJob.objects.filter(pk=job.pk, state__in=[State.PENDING, State.RUNNING]).update(
            state=State.CANCELLED, fence="", next_attempt_at=None, finished_at=now, updated_at=now
        )
        if not changed:
            job.refresh_from_db()
            raise Conflict(f"The job is {job.state}: only pending or running jobs can be cancelled.")
        audit.record(
            actor,
            "retry.cancel",
            job,
            reason=reason,
            before={"state": job.state},
            after={"state": State.CANCELLED},
        )
        _finished_on_commit(job, State.CANCELLED, needs_human=False)
    job.refresh_from_db()
    return job


def rerun_job(*, job_id: uuid.UUID | str, actor: Actor, reason: str) -> RetryJob:
    """failed or cancelled -> pending with a new fence and a fresh run of the policy's attempts (audited).
    Earlier attempts stay; numbering continues."""
    reason = audit.require_reason(reason)
    job = _get(job_id)
    if job.state not in (State.FAILED, State.CANCELLED):
        raise Conflict(f"The job is {job.state}: only failed or cancelled jobs can be run again.")
    now = _now()
    fence = _fence()
    snapshot = {**job.policy_snapshot, ATTEMPTS_BEFORE: job.attempts}
    policy = policies.from_snapshot(job.policy_snapshot)
    with transaction.atomic():
        changed = RetryJob.objects.filter(
            pk=job.pk, state=job.state, attempts=job.attempts, fence=job.fence
        ).update(
            state=State.PENDING,
            needs_human=False,
            fence=fence,
            next_attempt_at=now,
            deadline_at=_deadline(policy, now),
            finished_at=None,
            policy_snapshot=snapshot,
            updated_at=now,
        )
        if not changed:
            raise Conflict("The job changed meanwhile: look at it again.")
        audit.record(
            actor,
            "retry.rerun",
            job,
            reason=reason,
            before={"state": job.state, "needs_human": job.needs_human, "attempts": job.attempts},
            after={"state": State.PENDING, "needs_human": False, "attempts": job.attempts},
        )
        _enqueue_on_commit(job.pk, job.attempts + 1, fence)
    job.refresh_from_db()
    return job

"""The escalation triggers of recovery and healing events (triggers 6 to 10 and 12 of the queue, and the
auto-resolve of 11): raised from the event that causes them, as the room that records it says so once it is
committed. Connected in healing/apps.py, each with its dispatch_uid below.

6. fallbacks_exhausted: a plan found nothing left to fall back on and escalated or aborted (plan_decided).
7. planner_escalate: any other plan that escalated, at the level the planner gave it (plan_decided).
8. retry_needs_human: a server-side retry job that ended needing a human (job_finished).
9. rollback_failed: a transaction whose rollback failed (transaction_ended).
10. heartbeat_missed: a running task marked stale, one escalation per task (tasks_went_stale).
12. healing_run_failed: a healing run that failed (its action, or its verification) or whose action was put on
    hold as a loop (run_changed, hold_placed); approval_waiting: a run waiting for approval (run_changed).
Besides: health_check_unhealthy (state_changed), critical when the check's service is essential.

Auto-resolve, when the condition clears: a later plan of the service and operation that found an option
(fallbacks_exhausted), a later retry job of the service and operation that succeeded (retry_needs_human), the
rollback later completed (rollback_failed), the breaker closed (breaker_open_too_long and the service's
fallbacks_exhausted), the check healthy again, the run out of pending_approval (approval_waiting), a later run of
the action on the service that succeeded (healing_run_failed). Time-based conditions are the beat sweep's
(sweeps.py). The dedup keys are the table in /work/notes/spec13.md ("Dedup key conventions").

Receivers never raise: a trigger that fails is logged, never the failure of the plan, the job, the rollback, the
run or the breaker that sent it."""

from __future__ import annotations

import functools
import hashlib
import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from healing.checks import selectors as check_selectors
from healing.escalations import error_triggers, selectors, services
from healing.escalations.models import TriggerKind, higher
from healing.escalations.services import Raise, Raised
from recovery.checkpoints import selectors as checkpoint_selectors
from recovery.retries import selectors as retry_selectors
from recovery.sagas import selectors as saga_selectors

log = logging.getLogger(__name__)

# The dispatch_uid of each connection (healing/apps.py): connecting twice is one receiver.
PLANS_UID = "escalations-plan-decided"
JOBS_UID = "escalations-job-finished"
TRANSACTIONS_UID = "escalations-transaction-ended"
STALE_TASKS_UID = "escalations-tasks-went-stale"
BREAKERS_UID = "escalations-breaker-transitions"
CHECKS_UID = "escalations-check-state-changed"
RUNS_UID = "escalations-run-changed"
HOLDS_UID = "escalations-hold-placed"

KEY_CHARS = 300  # Escalation.dedup_key
SUMMARY_CHARS = 2000
# What the planner and the other rooms send, by name (recovery and the actions' models are not imported for it).
ESCALATE, ABORT, FALLBACK, DEGRADE = "escalate", "abort", "fallback", "degrade"
SUCCEEDED, FAILED, NEEDS_HUMAN = "succeeded", "failed", "needs_human"
ROLLED_BACK, ROLLBACK_FAILED, COMPENSATION_FAILED = "rolled_back", "rollback_failed", "compensation_failed"
CLOSED = "closed"
HEALTHY, UNHEALTHY = "healthy", "unhealthy"
PENDING_APPROVAL = "pending_approval"


# --- keys and raising ----------------------------------------------------------------------------------------


def key(*parts: object) -> str:
    """A dedup key from its parts, joined with ':'; one too long for the column keeps its start and ends with a
    hash of the whole, so that two long keys never share a row."""
    whole = ":".join(str(part) for part in parts)
    if len(whole) <= KEY_CHARS:
        return whole
    digest = hashlib.sha256(whole.encode()).hexdigest()[:40]
    return f"{whole[: KEY_CHARS - len(digest) - 1]}#{digest}"


def fallbacks_key(service: str, operation: str) -> str:
    return key(TriggerKind.FALLBACKS_EXHAUSTED, service, operation)


def breaker_key(service: str) -> str:
    return key(TriggerKind.BREAKER_OPEN_TOO_LONG, service)


def heartbeat_key(task_pk: int) -> str:
    return key(TriggerKind.HEARTBEAT_MISSED, task_pk)


def run_failed_key(action: str, service: str) -> str:
    return key(TriggerKind.HEALING_RUN_FAILED, action, service)


def raise_if_enabled(
    kind: str,
    dedup_key: str,
    *,
    title: str,
    level: str | None = None,
    summary: str = "",
    service: str = "",
    error_class: str = "",
    context: dict[str, Any] | None = None,
    links: dict[str, Any] | None = None,
    count_repeat: bool = True,
) -> Raised | None:
    """Raise through the queue at the trigger's level (or `level`), unless the trigger is disabled (None)."""
    rule = selectors.trigger(kind)
    if rule is None:
        return None
    return services.raise_escalation(
        Raise(
            trigger=kind,
            dedup_key=dedup_key,
            level=level or rule.level,
            title=title,
            summary=summary[:SUMMARY_CHARS],
            service=service,
            error_class=error_class,
            context=context or {},
            links=links or {},
            count_repeat=count_repeat,
        )
    )


def resolve(keys: Iterable[str], reason: str) -> int:
    keys = [k for k in keys if k]
    return services.auto_resolve(keys, reason=reason) if keys else 0


Receiver = Callable[..., None]


def never_raises(receiver: Receiver) -> Receiver:
    """A receiver whose failure is logged: the sender's work is committed already, and must not fail for it."""

    @functools.wraps(receiver)
    def guarded(sender: object, **kwargs: Any) -> None:
        try:
            receiver(sender, **kwargs)
        except Exception:
            log.exception("escalation trigger %s failed (%s)", receiver.__name__, _brief(kwargs))

    return guarded


def _brief(kwargs: dict[str, Any]) -> str:
    shown = {k: v for k, v in kwargs.items() if k != "signal" and not isinstance(v, list | tuple)}
    return ", ".join(f"{k}={v!r}" for k, v in shown.items())[:300]


# --- 6, 7: recovery plans ----------------------------------------------------------------------------------


@never_raises
def on_plan_decided(
    sender: object,
    *,
    plan_id: str,
    service: str,
    operation: str,
    action: str,
    chain_exhausted: bool,
    escalation_level: str | None,
    reason: str,
    error_class: str = "",
    severity: str = "",
    kind: str = "",
    **_: Any,
) -> None:
    """recovery.decisions.signals.plan_decided: a plan was committed."""
    where = f"{service}/{operation}" if operation else service
    context = {
        "plan_id": plan_id,
        "operation": operation,
        "action": action,
        "reason": reason,
        "error_class": error_class,
        "severity": severity,
        "kind": kind,
    }
    links = {"plan_id": plan_id}
    if chain_exhausted and action in (ESCALATE, ABORT):
        raise_if_enabled(
            TriggerKind.FALLBACKS_EXHAUSTED,
            fallbacks_key(service, operation),
            title=f"All fallbacks exhausted for {where}",
            summary=reason,
            service=service,
            error_class=error_class,
            context=context,
            links=links,
        )
    elif action == ESCALATE:
        raise_if_enabled(
            TriggerKind.PLANNER_ESCALATE,
            key(TriggerKind.PLANNER_ESCALATE, service, operation, error_class),
            level=escalation_level,
            title=f"The planner escalated {where}: {kind or error_class or 'an error'} needs a human",
            summary=reason,
            service=service,
            error_class=error_class,
            context=context,
            links=links,
        )
    elif action in (FALLBACK, DEGRADE) and not chain_exhausted:
        # The planner found an option again (a fallback, or a skip): the chain is not exhausted any more.
        resolve(
            [fallbacks_key(service, operation)],
            f"plan {plan_id} for {where} found an option again ({action}): {reason}",
        )


# --- 8: server-side retries --------------------------------------------------------------------------------


@never_raises
def on_job_finished(
    sender: object, *, job_id: str, service: str, operation: str, state: str, needs_human: bool, **_: Any
) -> None:
    """recovery.retries.signals.job_finished: a retry job reached a final state (committed)."""
    dedup_key = key(TriggerKind.RETRY_NEEDS_HUMAN, service, operation)
    where = f"{service}/{operation}" if operation else service
    if needs_human:
        job = retry_selectors.job(job_id, agent=None)
        error = job.last_error or {}
        summary = "; ".join(
            str(part)
            for part in (error.get("decision"), error.get("type"), error.get("message"))
            if part not in (None, "")
        )
        raise_if_enabled(
            TriggerKind.RETRY_NEEDS_HUMAN,
            dedup_key,
            title=f"A retry of {where} needs a human ({job.attempts} attempt(s))",
            summary=summary or f"retry job {job_id} ended {state}",
            service=service,
            error_class=str(error.get("error_class") or ""),
            context={"job_id": job_id, "state": state, "attempts": job.attempts, "last_error": error},
            links={"retry_job_id": job_id},
        )
    elif state == SUCCEEDED:
        resolve([dedup_key], f"a later retry of {where} succeeded (job {job_id})")


# --- 9: transactions with compensations --------------------------------------------------------------------


@never_raises
def on_transaction_ended(sender: object, *, transaction_id: str, status: str, **_: Any) -> None:
    """recovery.sagas.signals.transaction_ended: a transaction committed, rolled back, or failed its rollback."""
    dedup_key = key(TriggerKind.ROLLBACK_FAILED, transaction_id)
    if status == ROLLBACK_FAILED:
        txn = saga_selectors.with_history(uuid.UUID(str(transaction_id)))
        failed = [step for step in txn.steps.all() if step.status == COMPENSATION_FAILED]
        step = failed[-1] if failed else None
        error = (step.last_error or {}) if step is not None else {}
        agent = txn.agent.name if txn.agent is not None else ""
        summary = f"The rollback of {txn.name!r} ({txn.rollback_reason}) stopped"
        if step is not None:
            summary += (
                f" at step {step.seq} ({step.name}): {error.get('error_type', '')} {error.get('message', '')}"
                f" after {step.attempts} attempt(s). Older steps stay done; a human decides."
            )
        raise_if_enabled(
            TriggerKind.ROLLBACK_FAILED,
            dedup_key,
            title=f"The rollback of transaction {txn.name!r}{f' of {agent}' if agent else ''} failed",
            summary=summary,
            error_class=str(error.get("error_class") or ""),
            context={
                "transaction_id": transaction_id,
                "name": txn.name,
                "agent": agent,
                "rollback_reason": txn.rollback_reason,
                "failed_step": step.seq if step is not None else None,
                "last_error": error,
            },
            links={"transaction_id": transaction_id},
        )
    elif status == ROLLED_BACK:
        resolve([dedup_key], f"the rollback of transaction {transaction_id} completed")


# --- 10: tasks that missed their heartbeat -----------------------------------------------------------------


@never_raises
def on_tasks_went_stale(sender: object, *, task_ids: list[int], **_: Any) -> None:
    """recovery.checkpoints.signals.tasks_went_stale: running tasks were marked stale (committed)."""
    # Read again: a task that has since sent a heartbeat, or ended, is no longer stale and raises nothing.
    for task in checkpoint_selectors.stale_tasks().filter(pk__in=list(task_ids)):
        agent = task.agent.name
        quiet_since = max(t for t in (task.started_at, task.last_checkpoint_at, task.last_heartbeat_at) if t)
        raise_if_enabled(
            TriggerKind.HEARTBEAT_MISSED,
            heartbeat_key(task.pk),
            title=f"Task {task.task_id!r} of {agent} missed its heartbeat",
            summary=(
                f"No checkpoint or heartbeat since {quiet_since.isoformat()}: the agent may have died or hung. "
                "Resume the task from its latest checkpoint, or end it."
            ),
            context={
                "task": task.task_id,
                "agent": agent,
                "stale_at": task.stale_at.isoformat() if task.stale_at else None,
                "quiet_since": quiet_since.isoformat(),
                "last_seq": task.last_seq,
            },
            links={"task_id": task.pk},
        )


# --- breakers: closing clears what an open breaker raised --------------------------------------------------


@never_raises
def on_breaker_transitions(sender: object, *, rows: Iterable[Any] = (), **_: Any) -> None:
    """recovery.breakers.signals.transitions_committed: a batch of breaker transitions was committed."""
    closed = {row.service.name for row in rows if row.to_state == CLOSED}
    for service in sorted(closed):
        keys = [
            breaker_key(service),
            *selectors.open_keys(trigger=TriggerKind.FALLBACKS_EXHAUSTED, service=service),
        ]
        resolve(keys, f"the breaker of {service} closed")


# --- health checks -----------------------------------------------------------------------------------------


@never_raises
def on_check_state_changed(sender: object, *, transition_id: int | None = None, **_: Any) -> None:
    """healing.checks.signals.state_changed: a check changed state (sent on commit)."""
    if transition_id is None:
        return
    transition = check_selectors.transition(int(transition_id))
    if transition is None:
        return
    check = transition.health_check
    dedup_key = key(TriggerKind.HEALTH_CHECK_UNHEALTHY, check.name)
    if transition.to_state == UNHEALTHY:
        rule = selectors.trigger(TriggerKind.HEALTH_CHECK_UNHEALTHY)
        if rule is None:
            return
        essential = error_triggers.is_essential(check.service)
        error = transition.result.error if transition.result is not None else ""
        raise_if_enabled(
            TriggerKind.HEALTH_CHECK_UNHEALTHY,
            dedup_key,
            level=higher(rule.level, "critical") if essential else rule.level,
            title=f"Health check {check.name} of {check.service} is unhealthy",
            summary=f"{transition.reason}{f': {error}' if error else ''}",
            service=check.service,
            context={
                "check": check.name,
                "from_state": transition.from_state,
                "reason": transition.reason,
                "error": error,
                "essential": essential,
                "breaker_effect": transition.breaker_effect,
            },
        )
    elif transition.to_state == HEALTHY:
        resolve([dedup_key], f"the health check {check.name} is healthy again: {transition.reason}")


# --- 12: healing runs --------------------------------------------------------------------------------------


@never_raises
def on_run_changed(
    sender: object,
    *,
    run_id: int,
    action: str,
    service: str,
    from_state: str,
    to_state: str,
    state_reason: str = "",
    **_: Any,
) -> None:
    """healing.actions.signals.run_changed: a run was created or changed state (committed)."""
    if to_state == FAILED:
        raise_if_enabled(
            TriggerKind.HEALING_RUN_FAILED,
            run_failed_key(action, service),
            title=f"Healing run {run_id} of {action} on {service} failed",
            summary=state_reason,
            service=service,
            context={"run_id": run_id, "action": action, "from_state": from_state, "reason": state_reason},
            links={"healing_run_id": run_id},
        )
    elif to_state == PENDING_APPROVAL:
        raise_if_enabled(
            TriggerKind.APPROVAL_WAITING,
            key(TriggerKind.APPROVAL_WAITING, run_id),
            title=f"Healing run {run_id} of {action} on {service} waits for approval",
            summary=state_reason,
            service=service,
            context={"run_id": run_id, "action": action, "reason": state_reason},
            links={"healing_run_id": run_id},
        )
    elif to_state == SUCCEEDED:
        resolve([run_failed_key(action, service)], f"healing run {run_id} of {action} on {service} succeeded")
    if from_state == PENDING_APPROVAL and to_state != PENDING_APPROVAL:
        resolve([key(TriggerKind.APPROVAL_WAITING, run_id)], f"the run is {to_state}: {state_reason}")


@never_raises
def on_hold_placed(sender: object, *, hold_id: int, action: str, service: str, **_: Any) -> None:
    """healing.actions.signals.hold_placed: an action was put on hold for a target, its runs looping."""
    raise_if_enabled(
        TriggerKind.HEALING_RUN_FAILED,
        run_failed_key(action, service),
        title=f"Healing action {action} on {service} was stopped as a loop",
        summary=(
            f"Its verifications kept failing: hold {hold_id} makes requests from agents and rules wait for an "
            "operator's approval until a human clears it."
        ),
        service=service,
        context={"hold_id": hold_id, "action": action},
    )

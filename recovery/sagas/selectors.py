"""Reads of transactions: who may see which, the filtered list, and the JSON the API and the admin show."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.db.models import Count, Prefetch, QuerySet

from core.access import roles
from core.api.errors import NotFound
from recovery.calls import outbound
from recovery.sagas.models import CompensationAttempt, Transaction, TransactionStep


def visible_to(user: Any) -> QuerySet[Transaction]:
    """An agent sees its own transactions; operators and viewers see all."""
    qs = Transaction.objects.select_related("agent", "created_by", "task")
    agent = roles.agent_of(user)
    return qs.filter(agent=agent) if agent is not None else qs


def get_for(user: Any, transaction_id: uuid.UUID) -> Transaction:
    """The transaction, if this principal may see it: another agent's is a 404, so that ids do not leak."""
    txn = visible_to(user).filter(pk=transaction_id).first()
    if txn is None:
        raise NotFound("No such transaction.", field="id")
    return txn


def transactions(
    user: Any,
    *,
    status: str | None = None,
    name: str | None = None,
    task_id: str | None = None,
    needs_human: bool | None = None,
    since: datetime | None = None,
) -> QuerySet[Transaction]:
    qs = visible_to(user).annotate(step_count=Count("steps"))
    if status:
        qs = qs.filter(status=status)
    if name:
        qs = qs.filter(name__icontains=name)
    if task_id:
        qs = qs.filter(task__task_id=task_id)
    if needs_human is not None:
        qs = qs.filter(needs_human=needs_human)
    if since:
        qs = qs.filter(created_at__gte=since)
    return qs.order_by("-created_at", "-pk")


def with_history(transaction_id: uuid.UUID) -> Transaction:
    """One transaction with its steps and their attempts, in three queries."""
    attempts = Prefetch("attempt_rows", queryset=CompensationAttempt.objects.order_by("number"))
    steps = Prefetch(
        "steps",
        queryset=TransactionStep.objects.select_related("policy").order_by("seq").prefetch_related(attempts),
    )
    return (
        Transaction.objects.select_related("agent", "created_by", "task")
        .prefetch_related(steps)
        .get(pk=transaction_id)
    )


def rollbacks_needing_human() -> QuerySet[Transaction]:
    """Failed rollbacks a human must look at: the escalation queue raises a CRITICAL escalation for each."""
    return Transaction.objects.filter(status=Transaction.Status.ROLLBACK_FAILED, needs_human=True).order_by(
        "finished_at"
    )


def needing_human(limit: int = 5) -> dict[str, Any]:
    """For /status: how many failed rollbacks wait for a human, and the newest few with the step that failed."""
    waiting = rollbacks_needing_human().select_related("agent")
    newest = list(waiting.order_by("-finished_at")[:limit])
    failed = {
        s.transaction_id: s
        for s in TransactionStep.objects.filter(
            transaction__in=newest, status=TransactionStep.Status.COMPENSATION_FAILED
        )
    }
    return {
        "count": waiting.count(),
        "newest": [
            {
                "id": str(t.pk),
                "name": t.name,
                "agent": t.agent.name if t.agent is not None else None,
                "failed_step": failed[t.pk].seq if t.pk in failed else None,
                "error_class": (failed[t.pk].last_error or {}).get("error_class") if t.pk in failed else None,
                "finished_at": t.finished_at,
            }
            for t in newest
        ],
    }


# --- JSON --------------------------------------------------------------------------------------------------


def transaction_json(txn: Transaction, *, steps: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(txn.pk),
        "name": txn.name,
        "status": txn.status,
        "agent": txn.agent.name if txn.agent is not None else None,
        "created_by": txn.created_by.get_username() if txn.created_by is not None else None,
        "task_id": txn.task.task_id if txn.task is not None else None,
        "deadline_at": txn.deadline_at,
        "rollback_reason": txn.rollback_reason,
        "needs_human": txn.needs_human,
        "created_at": txn.created_at,
        "updated_at": txn.updated_at,
        "finished_at": txn.finished_at,
    }
    if steps:
        data["steps"] = [step_json(s) for s in txn.steps.all()]
    else:
        data["step_count"] = getattr(txn, "step_count", None)
    return data


def compensation_json(step: TransactionStep) -> dict[str, Any]:
    """The compensation as it was recorded, with secret headers, query values and task kwargs hidden."""
    if step.compensation_kind == TransactionStep.CompensationKind.HTTP:
        return {"kind": "http", "request": outbound.redact_request(step.compensation)}
    if step.compensation_kind == TransactionStep.CompensationKind.TASK:
        return {"kind": "task", "task": outbound.redact_task(step.compensation)}
    return {"kind": "none"}


def step_json(step: TransactionStep, *, attempts: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {
        "seq": step.seq,
        "name": step.name,
        "idempotency_key": step.idempotency_key,
        "compensation": compensation_json(step),
        "policy": step.policy_snapshot.get("name") if step.policy_snapshot else None,
        "status": step.status,
        "attempts": step.attempts,
        "last_error": step.last_error,
        "created_at": step.created_at,
        "compensated_at": step.compensated_at,
    }
    if attempts:
        data["compensation_attempts"] = [attempt_json(a) for a in step.attempt_rows.all()]
    return data


def attempt_json(attempt: CompensationAttempt) -> dict[str, Any]:
    return {
        "number": attempt.number,
        "outcome": attempt.outcome,
        "status_code": attempt.status_code,
        "error_class": attempt.error_class,
        "kind": attempt.kind,
        "error_type": attempt.error_type,
        "message": attempt.message,
        "duration_ms": attempt.duration_ms,
        "task_id": attempt.task_id,
        "started_at": attempt.started_at,
        "finished_at": attempt.finished_at,
    }

"""Reads of transactions: who may see which, the filtered list, and a compensation as every output shows it
(secrets hidden); the API's shapes are in schemas.py."""

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


def listed(user: Any, transaction_id: uuid.UUID) -> Transaction:
    """One transaction as the list shows it (with its step count), for the answer of a write."""
    return transactions(user).get(pk=transaction_id)


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
    """Failed rollbacks a human must look at (each raised to the escalation queue as an emergency)."""
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


# --- What every output shows of a compensation --------------------------------------------------------------------------------------------------


def compensation_json(step: TransactionStep) -> dict[str, Any]:
    """The compensation as it was recorded, with secret headers, query values and task kwargs hidden."""
    if step.compensation_kind == TransactionStep.CompensationKind.HTTP:
        return {"kind": "http", "request": outbound.redact_request(step.compensation)}
    if step.compensation_kind == TransactionStep.CompensationKind.TASK:
        return {"kind": "task", "task": outbound.redact_task(step.compensation)}
    return {"kind": "none"}

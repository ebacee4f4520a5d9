"""Celery tasks of transactions: thin, idempotent, JSON arguments only (docs/sagas.md)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from recovery.sagas import services


@shared_task(
    name=services.RUN_ROLLBACK_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    # The hard limit bounds how long an attempt can live: SAGA_ATTEMPT_LEASE_SECONDS must exceed it.
    time_limit=300,
    soft_time_limit=270,
    ignore_result=True,
)
def run_rollback(self: Any, transaction_id: str) -> None:
    # The task's own id is the fence: a duplicate or stale delivery finds another id on the transaction.
    services.run_rollback(transaction_id, self.request.id)


@shared_task(
    name="recovery.saga_tasks.rollback_overdue_transactions",
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=120,
    soft_time_limit=100,
    ignore_result=True,
)
def rollback_overdue_transactions() -> int:
    return services.rollback_overdue()


@shared_task(
    name="recovery.saga_tasks.resume_stuck_rollbacks",
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=60,
    soft_time_limit=50,
    ignore_result=True,
)
def resume_stuck_rollbacks() -> int:
    return services.resume_stuck()

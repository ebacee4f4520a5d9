"""Celery tasks of server-side retries: thin, idempotent, JSON arguments, fenced by the job's task id."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from recovery.retries import services


@shared_task(
    name=services.RUN_ATTEMPT_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=services.RUN_TIME_LIMIT_S,
    soft_time_limit=services.RUN_SOFT_TIME_LIMIT_S,
    ignore_result=True,
)
def run_retry_attempt(self: Any, job_id: str, attempt_number: int) -> str:
    # The task's own id is the fence: only the delivery the job is waiting for may run the attempt.
    return services.run_attempt(job_id, int(attempt_number), str(self.request.id))


@shared_task(
    name="recovery.retry_tasks.requeue_overdue_retries",
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=60,
    soft_time_limit=50,
    ignore_result=True,
)
def requeue_overdue_retries() -> int:
    return services.requeue_overdue()

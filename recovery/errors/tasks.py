"""Celery tasks: thin, idempotent, JSON arguments only."""

from __future__ import annotations

from celery import shared_task

from core.infra.conf import rebound
from recovery.errors import intake, services


@shared_task(
    name="recovery.tasks.prune_error_events",
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=600,
    soft_time_limit=540,
)
def prune_error_events() -> int:
    # Expired Idempotency-Key records (embedded mode) go with the same hourly sweep.
    services.prune_idempotency_records()
    return services.prune_error_events(older_than_days=int(rebound("ERROR_EVENT_RETENTION_DAYS")))


@shared_task(
    name=intake.DRAIN_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=60,
    soft_time_limit=50,
    ignore_result=True,
)
def drain_error_intake() -> int:
    return intake.drain() if intake.enabled() else 0

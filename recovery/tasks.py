"""Celery tasks: thin, idempotent, JSON arguments only."""

from __future__ import annotations

from celery import shared_task

from config.conf import rebound
from recovery import (
    checkpoint_tasks,  # noqa: F401
    degradation_tasks,  # noqa: F401
    retry_tasks,  # noqa: F401
    saga_tasks,  # noqa: F401
    services,
)


@shared_task(acks_late=True, reject_on_worker_lost=True, time_limit=600, soft_time_limit=540)
def prune_error_events() -> int:
    return services.prune_error_events(older_than_days=int(rebound("ERROR_EVENT_RETENTION_DAYS")))


@shared_task(acks_late=True, reject_on_worker_lost=True, time_limit=60, soft_time_limit=50)
def expire_breaker_overrides() -> int:
    from recovery import breakers

    return breakers.expire_overrides()


@shared_task(
    acks_late=True, reject_on_worker_lost=True, time_limit=60, soft_time_limit=50, ignore_result=True
)
def drain_error_intake() -> int:
    from recovery import intake

    return intake.drain() if intake.enabled() else 0


@shared_task(
    acks_late=True, reject_on_worker_lost=True, time_limit=30, soft_time_limit=25, ignore_result=True
)
def refresh_recovery_success_rate() -> None:
    # Beat, every 30 s: the hour's window slides even when no plan result arrives.
    from recovery import plans

    plans.refresh_success_rate()

"""Celery tasks of checkpoints: thin, idempotent, no arguments. Beat runs them (config/settings/base.py)."""

from __future__ import annotations

import uuid

from celery import shared_task
from django.core.cache import cache

from recovery.checkpoints import services

# One retention run at a time: a second (a duplicate delivery, a slow run overtaken by the next beat) exits
# at once instead of racing the first over the same rows. The lock outlives a run's time limit by nothing.
RETENTION_LOCK = "rebound:checkpoint-retention"
RETENTION_BUDGET_S = 120.0
RETENTION_TIME_LIMIT_S = 180


@shared_task(
    name="recovery.checkpoint_tasks.enforce_checkpoint_retention",
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=RETENTION_TIME_LIMIT_S,
    soft_time_limit=RETENTION_TIME_LIMIT_S - 20,
    ignore_result=True,
)
def enforce_checkpoint_retention() -> dict[str, int]:
    fence = uuid.uuid4().hex
    if not cache.add(RETENTION_LOCK, fence, timeout=RETENTION_TIME_LIMIT_S):
        return {}
    try:
        return services.enforce_retention(budget_s=RETENTION_BUDGET_S)
    finally:
        if cache.get(RETENTION_LOCK) == fence:
            cache.delete(RETENTION_LOCK)


@shared_task(
    name="recovery.checkpoint_tasks.mark_stale_tasks",
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=60,
    soft_time_limit=50,
    ignore_result=True,
)
def mark_stale_tasks() -> int:
    return services.mark_stale()

"""Celery tasks of the recovery decisions: thin, idempotent, no arguments. Beat runs them."""

from __future__ import annotations

from celery import shared_task

from recovery.decisions import services


@shared_task(
    name="recovery.tasks.refresh_recovery_success_rate",
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=30,
    soft_time_limit=25,
    ignore_result=True,
)
def refresh_recovery_success_rate() -> None:
    # Beat, every 30 s: plans whose outcome never came get the result unknown, and the hour's window slides
    # even when no plan result arrives.
    services.expire_plans()
    services.refresh_success_rate()

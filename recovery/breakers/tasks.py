"""Celery tasks of the breakers: thin, idempotent, no arguments. Beat runs them (config/settings/base.py)."""

from __future__ import annotations

from celery import shared_task

from recovery.breakers import services


@shared_task(
    name="recovery.tasks.expire_breaker_overrides",
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=60,
    soft_time_limit=50,
)
def expire_breaker_overrides() -> int:
    """The breakers' upkeep every 30 s (its name is its first job's, kept for beat's schedule): expire
    overrides, write into the store overrides it missed, write transitions still pending."""
    return services.maintain()

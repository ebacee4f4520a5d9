"""Celery tasks of the escalation queue: thin, no arguments, idempotent. Beat runs both every 30 s.

Each does what the next run would do again (compare-and-set claims on rows), so a duplicate or late message
changes nothing twice; a backlog of them is worth one run (expires)."""

from __future__ import annotations

from celery import shared_task

from healing.escalations import services, sweeps


@shared_task(
    name="healing.escalations.tasks.apply_escalation_policy",
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=60,
    soft_time_limit=50,
    ignore_result=True,
    expires=30,
)
def apply_escalation_policy() -> dict[str, int]:
    # Wake first: a snooze that ended restarts the policy's timer, so it is not raised in the same pass.
    return {"woke": services.wake_snoozed(), "escalated": services.apply_policy()}


@shared_task(
    name="healing.escalations.tasks.sweep_triggers",
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=120,
    soft_time_limit=110,
    ignore_result=True,
    expires=30,
)
def sweep_triggers() -> dict[str, int]:
    # The time-based triggers (heartbeats, long-open breakers, rates) and the auto-resolves they find.
    return sweeps.sweep()

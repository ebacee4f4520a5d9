"""Celery tasks of the health checks: thin, idempotent, JSON arguments.

`dispatch_due_checks` runs from beat every second and sends one `run_check` per claimed due run (the claim is
a compare-and-set, so each due run is sent once however many dispatchers run). `run_check` records at most one
result per (check, due_at): a second delivery of the same run finds the first one's row and does nothing.
Each run's time limits come with its message, from the check's timeout (services.send_run); the ones here
are the ceiling for a message without them.
"""

from __future__ import annotations

from datetime import datetime

from celery import shared_task

from healing.checks import metrics, services

# The longest timeout a check may have (120 s) and the margins of services.send_run.
RUN_SOFT_TIME_LIMIT_S = 120 + services.SOFT_LIMIT_MARGIN_S
RUN_TIME_LIMIT_S = 120 + services.HARD_LIMIT_MARGIN_S


@shared_task(
    name="healing.checks.tasks.dispatch_due_checks",
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=60,
    soft_time_limit=50,
    ignore_result=True,
    # Beat sends one a second: a backlog of them is worth one pass, and a stale one only repeats a newer one.
    expires=10,
)
def dispatch_due_checks() -> int:
    # First, whatever the dispatch meets: this is the heartbeat of beat and the workers (metrics.py).
    metrics.health_check_dispatch_timestamp_seconds.set_to_current_time()
    return services.dispatch_due()


@shared_task(
    name=services.RUN_CHECK_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=RUN_TIME_LIMIT_S,
    soft_time_limit=RUN_SOFT_TIME_LIMIT_S,
    ignore_result=True,
)
def run_check(check_id: int, due_at: str, source: str) -> str:
    return services.run_check(int(check_id), datetime.fromisoformat(due_at) if due_at else None, str(source))


@shared_task(
    name="healing.checks.tasks.purge_check_results",
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=900,
    soft_time_limit=840,
    ignore_result=True,
)
def purge_check_results() -> int:
    return services.purge_results()

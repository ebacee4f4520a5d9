"""Celery tasks of healing runs: thin, ids in, idempotent.

`execute_run` is sent once per winning approval (services.enqueue_execution, with time limits from the
action's timeout); its own task id becomes the run's fence when it claims the run (approved -> running), so a
duplicate delivery finds the run no longer approved and exits. `maintain_runs` runs from beat every 5 s.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from healing.actions import services

# Without the limits the sender gives (the action's timeout and a margin), the largest timeout an action has.
LONGEST_ACTION_S = 3600.0


@shared_task(
    name=services.EXECUTE_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=LONGEST_ACTION_S + services.HARD_LIMIT_MARGIN_S,
    soft_time_limit=LONGEST_ACTION_S + services.SOFT_LIMIT_MARGIN_S,
    ignore_result=True,
)
def execute_run(self: Any, run_id: int) -> str:
    return services.execute_run(int(run_id), str(self.request.id))


@shared_task(
    name="healing.actions.tasks.maintain_runs",
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=60,
    soft_time_limit=50,
    ignore_result=True,
    # A backlog of these is worth one run: a stale message only repeats what the next one does.
    expires=30,
)
def maintain_runs() -> dict[str, int]:
    return services.maintain_runs()

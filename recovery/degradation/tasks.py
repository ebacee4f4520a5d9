"""Celery tasks of graceful degradation: thin, idempotent, no arguments.

`evaluate_degradation` runs from beat every 10 s and after every committed batch of breaker transitions. No
task-id fence is needed: an evaluation is idempotent, and concurrent ones settle each scope by compare-and-set,
so a duplicate delivery or two overlapping runs write each change once.
"""

from __future__ import annotations

import logging

from celery import shared_task

from recovery.degradation import services

log = logging.getLogger(__name__)


@shared_task(
    name="recovery.degradation_tasks.evaluate_degradation",
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=60,
    soft_time_limit=50,
    ignore_result=True,
    # A backlog of these is worth one run: a stale message only repeats what a newer one does.
    expires=60,
)
def evaluate_degradation() -> int:
    return len(services.evaluate())


def evaluate_soon() -> None:
    """Re-evaluate now rather than at the next beat: called once breaker transitions are committed. Best
    effort: when the broker is unreachable, beat's run comes within 10 s."""
    try:
        evaluate_degradation.delay()
    except Exception as error:  # the breakers must not fail because the broker did
        log.warning("could not enqueue a degradation evaluation: %s", error)


def on_transitions(sender: object, **_: object) -> None:
    """Receiver of the breakers' transitions_committed (connected in RecoveryConfig.ready())."""
    evaluate_soon()

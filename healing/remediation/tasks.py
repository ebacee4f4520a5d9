"""Celery tasks of the remediation rules: thin, idempotent, no arguments.

`evaluate_rules` runs from beat every 15 s, and as soon as a check turns unhealthy or a breaker opens under a
rule's watch (healing/remediation/receivers.py). No task-id fence is needed: every firing is a unique row, so
a duplicate delivery or two overlapping evaluations fire each rule once per event.
"""

from __future__ import annotations

import logging

from celery import shared_task

from healing.remediation import services

log = logging.getLogger(__name__)

EVALUATE_TASK = "healing.remediation.tasks.evaluate_rules"


@shared_task(
    name=EVALUATE_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=60,
    soft_time_limit=50,
    ignore_result=True,
    # A backlog of these is worth one run: a stale message only repeats what a newer one does.
    expires=60,
)
def evaluate_rules() -> int:
    return services.evaluate()


def evaluate_soon() -> None:
    """Evaluate now rather than at the next beat. Best effort: when the broker is unreachable, beat's run
    comes within 15 s, and the event waits in its table meanwhile."""
    try:
        evaluate_rules.delay()
    except Exception as error:  # the checks and the breakers must not fail because the broker did
        log.warning("could not enqueue a remediation evaluation: %s", error)

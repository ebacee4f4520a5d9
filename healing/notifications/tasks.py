"""Celery tasks of the notifications: thin, ids in, JSON arguments, idempotent.

`notify_escalation` is enqueued once a notice is committed (receivers.on_notice_due) and plans the notice's
deliveries, one per matching channel (a second run creates nothing). Each pending delivery is sent by its own
`send_delivery`, whose task id is the fence: the delivery names the task allowed to make its next attempt.
`retry_due_deliveries` runs from beat every 10 s: deliveries whose backoff passed, or whose task was lost, go
to a new task. Each send carries its time limits from NOTIFICATION_TIMEOUT_SECONDS (services.enqueue_send);
the ones here are the ceiling for a message without them (the largest timeout the setting allows, 120 s).
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from healing.notifications import services

LONGEST_TIMEOUT_S = 120.0


@shared_task(
    name="healing.notifications.tasks.notify_escalation",
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=60,
    soft_time_limit=50,
    ignore_result=True,
)
def notify_escalation(escalation_id: int, notice: int) -> int:
    return services.notify(int(escalation_id), int(notice))


@shared_task(
    name=services.SEND_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=LONGEST_TIMEOUT_S + services.HARD_LIMIT_MARGIN_S,
    soft_time_limit=LONGEST_TIMEOUT_S + services.SOFT_LIMIT_MARGIN_S,
    ignore_result=True,
)
def send_delivery(self: Any, delivery_id: int) -> str:
    return services.send_delivery(int(delivery_id), str(self.request.id))


@shared_task(
    name="healing.notifications.tasks.retry_due_deliveries",
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=60,
    soft_time_limit=50,
    ignore_result=True,
    # Beat sends one every 10 s: a backlog of them is worth one pass.
    expires=30,
)
def retry_due_deliveries() -> int:
    return services.retry_due()

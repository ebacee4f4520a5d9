"""The tasks (thin, ids in, fenced by their own id) and the receiver that enqueues a notice's task once it is
committed, connected by the app as healing/apps.py connects it."""

from __future__ import annotations

from typing import Any

import pytest

from healing.escalations import signals as escalation_signals
from healing.escalations.models import Escalation
from healing.notifications import receivers, services, tasks
from healing.notifications.models import Delivery
from tests.support.http_target import Target
from tests.support.notifications import channel, escalation

pytestmark = pytest.mark.django_db


@pytest.fixture
def notify_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The notify tasks enqueued (no broker: the task's delay records its calls)."""
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(tasks.notify_escalation, "delay", lambda *args: calls.append(args))
    return calls


def test_the_tasks_are_thin_and_safe() -> None:
    for task in (tasks.notify_escalation, tasks.send_delivery, tasks.retry_due_deliveries):
        assert (task.acks_late, task.reject_on_worker_lost, task.ignore_result) == (True, True, True)
        assert task.soft_time_limit is not None and task.time_limit > task.soft_time_limit
    assert tasks.send_delivery.name == services.SEND_TASK == "healing.notifications.tasks.send_delivery"
    assert tasks.notify_escalation.name == "healing.notifications.tasks.notify_escalation"
    assert tasks.retry_due_deliveries.name == "healing.notifications.tasks.retry_due_deliveries"


def test_a_send_carries_time_limits_from_the_notification_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(
        services.current_app, "send_task", lambda name, **kw: sent.append({"name": name, **kw})
    )
    services.enqueue_send(7, "task-7")
    timeout = services.timeout_s()
    assert sent == [
        {
            "name": services.SEND_TASK,
            "args": [7],
            "task_id": "task-7",
            "soft_time_limit": timeout + services.SOFT_LIMIT_MARGIN_S,
            "time_limit": timeout + services.HARD_LIMIT_MARGIN_S,
        }
    ]


def test_a_broker_down_does_not_fail_the_planning(monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(services.current_app, "send_task", down)
    services.enqueue_send(7, "task-7")  # logged; the beat sends it after its lease


def test_the_send_task_uses_its_own_id_as_the_fence(receiver: Target) -> None:
    channel(receiver)
    raised = escalation("k")
    (delivery_id,) = services.plan_deliveries(raised.pk, raised.notice)
    holder = Delivery.objects.get(pk=delivery_id).task_id

    assert tasks.send_delivery.apply(args=[delivery_id], task_id="someone-else").get() == "stale"
    assert tasks.send_delivery.apply(args=[delivery_id], task_id=holder).get() == "sent"
    assert len(receiver.seen) == 1


def test_the_notify_task_plans_once(receiver: Target, enqueued: list[Any]) -> None:
    channel(receiver)
    raised = escalation("k")
    assert tasks.notify_escalation.apply(args=[raised.pk, raised.notice]).get() == 1
    assert tasks.notify_escalation.apply(args=[raised.pk, raised.notice]).get() == 0
    assert Delivery.objects.filter(escalation=raised).count() == 1


def test_it_enqueues_the_notice_once_committed(
    notify_calls: list[tuple[Any, ...]], notice_receiver: None, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        escalation_signals.notice_due.send_robust(
            sender=Escalation, escalation_id=5, notice=2, level="critical"
        )
    assert notify_calls == []  # nothing before the commit
    for callback in callbacks:
        callback()
    assert notify_calls == [(5, 2)]


def test_a_raise_sends_its_notice_to_the_task(
    notify_calls: list[tuple[Any, ...]], notice_receiver: None, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        raised = escalation("k")
    assert notify_calls == [(raised.pk, 1)]


def test_a_broker_down_does_not_fail_the_raise(
    monkeypatch: pytest.MonkeyPatch, notice_receiver: None, django_capture_on_commit_callbacks: Any
) -> None:
    def down(*args: Any) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks.notify_escalation, "delay", down)
    with django_capture_on_commit_callbacks(execute=True):
        raised = escalation("k")
    assert raised.pk is not None


def test_the_app_connects_the_receiver() -> None:
    """healing/apps.py connects on_notice_due with NOTICE_UID (its Edits needed, issue 13)."""
    uids = {lookup[0] for lookup, *_ in escalation_signals.notice_due.receivers}
    assert receivers.NOTICE_UID in uids

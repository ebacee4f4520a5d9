"""Deliveries: one per matching channel and notice, sent through apprise to a real loopback HTTP receiver (its
json:// URL), retried with backoff when the receiver fails, failed after the last attempt, silenced when a
silence is in force, fenced by the task id, and picked up by the beat when their task was lost."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from core.audit.services import Actor
from healing.escalations.models import EscalationEvent
from healing.notifications import metrics, services
from healing.notifications.models import Delivery
from tests.support.escalations import raise_one, reviewer_actor
from tests.support.factories import rebound_settings
from tests.support.http_target import Answer, Target
from tests.support.notifications import channel, deliver, escalation, silence

pytestmark = pytest.mark.django_db


def posted(target: Target, index: int = -1) -> dict[str, Any]:
    seen = target.seen[index]
    assert (seen.method, seen.headers.get("Content-Type")) == ("POST", "application/json")
    return json.loads(seen.body)  # type: ignore[no-any-return]


def counted(result: str) -> float:
    return metrics.notifications_total.labels(result=result)._value.get()  # type: ignore[no-any-return]


# --- sending -------------------------------------------------------------------------------------------------


def test_it_delivers_an_escalation_to_a_json_webhook_through_apprise(
    receiver: Target, django_capture_on_commit_callbacks: Any
) -> None:
    hook = channel(receiver, min_level="warning")
    raised = escalation(
        "payments-down",
        "critical",
        title="Payments API failing",
        summary="502 from the provider on every call",
        context={"calls": 40},
    )
    sent_before = counted("sent")

    with django_capture_on_commit_callbacks(execute=True):
        (delivery,) = deliver(raised)

    assert (delivery.status, delivery.attempts, delivery.error, delivery.channel_id) == (
        "sent",
        1,
        "",
        hook.pk,
    )
    assert (delivery.notice, delivery.level, delivery.channel_name) == (1, "critical", "hook")
    assert delivery.sent_at is not None and delivery.next_attempt_at is None
    assert receiver.seen[-1].path == "/hook"
    body = posted(receiver)
    assert (body["version"], body["type"], body["title"]) == (
        "1.0",
        "failure",
        "[CRITICAL] Payments API failing",
    )
    message = body["message"]
    for line in (
        "502 from the provider on every call",
        "Service: payments",
        "Trigger: critical_error",
        "Occurrences: 1 (first seen",
        f"Link: /api/v1/escalations/{raised.pk}",
    ):
        assert line in message
    event = EscalationEvent.objects.get(escalation=raised, kind="notified")
    assert (event.actor, event.text) == ("system", "hook")
    assert event.data == {
        "delivery": delivery.pk,
        "channel": "hook",
        "notice": 1,
        "level": "critical",
        "attempts": 1,
    }
    assert counted("sent") == sent_before + 1


@pytest.mark.parametrize(
    ("level", "notify_type"),
    [("info", "info"), ("warning", "warning"), ("critical", "failure"), ("emergency", "failure")],
)
def test_it_sends_the_notify_type_of_the_level(receiver: Target, level: str, notify_type: str) -> None:
    channel(receiver, min_level="info")
    deliver(escalation(f"k-{level}", level))
    assert posted(receiver)["type"] == notify_type
    assert posted(receiver)["title"].startswith(f"[{level.upper()}] ")


def test_it_tells_the_recommended_action(receiver: Target) -> None:
    raised = escalation("k")
    raised.recommended_action = "1. Check the provider's status page\n2. Fail over"
    raised.save(update_fields=["recommended_action"])
    channel(receiver)
    deliver(raised)
    assert (
        "Recommended action:\n1. Check the provider's status page\n2. Fail over"
        in posted(receiver)["message"]
    )


# --- failures and retries ----------------------------------------------------------------------------------------


def test_a_failing_receiver_is_retried_with_backoff_and_recorded(
    receiver: Target, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.REBOUND = rebound_settings(NOTIFICATION_MAX_ATTEMPTS=3, NOTIFICATION_RETRY_BASE_SECONDS=10)
    receiver.script(
        Answer(500, {"error": "boom"}), Answer(500, {"error": "boom"}), Answer(500, {"error": "boom"})
    )
    channel(receiver)
    failed_before = counted("failed")

    started = timezone.now()
    (delivery,) = deliver(escalation("k"))

    assert (delivery.status, delivery.attempts, delivery.task_id) == ("pending", 1, "")
    assert "500" in delivery.error
    assert delivery.next_attempt_at is not None
    assert 10 <= (delivery.next_attempt_at - started).total_seconds() <= 11  # the base

    # Not due yet: the beat hands nothing over.
    assert services.retry_due(timezone.now()) == 0

    later = delivery.next_attempt_at + timedelta(seconds=1)
    assert services.retry_due(later) == 1
    delivery.refresh_from_db()
    assert delivery.task_id != "" and delivery.next_attempt_at > later  # held by the new task, with a lease
    second = timezone.now()
    assert services.send_delivery(delivery.pk, delivery.task_id) == "retry"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 2)
    assert delivery.next_attempt_at is not None
    assert 20 <= (delivery.next_attempt_at - second).total_seconds() <= 21  # doubled

    assert services.retry_due(delivery.next_attempt_at + timedelta(seconds=1)) == 1
    delivery.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        assert services.send_delivery(delivery.pk, delivery.task_id) == "failed"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at, delivery.sent_at) == (
        "failed",
        3,
        None,
        None,
    )
    assert "error=500" in delivery.error
    assert len(receiver.seen) == 3
    assert not EscalationEvent.objects.filter(kind="notified").exists()
    assert counted("failed") == failed_before + 1
    # A failed delivery is over: the beat never picks it up again.
    assert services.retry_due(timezone.now() + timedelta(days=1)) == 0


def test_a_retry_that_succeeds_is_sent(receiver: Target) -> None:
    receiver.script(Answer(503, "busy"))
    channel(receiver)
    (delivery,) = deliver(escalation("k"))
    assert delivery.status == "pending"

    assert delivery.next_attempt_at is not None
    services.retry_due(delivery.next_attempt_at)
    delivery.refresh_from_db()
    assert services.send_delivery(delivery.pk, delivery.task_id) == "sent"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.error) == ("sent", 2, "")
    assert EscalationEvent.objects.filter(kind="notified").count() == 1


def test_an_unreachable_receiver_is_a_failed_attempt_not_an_error(receiver: Target, settings: Any) -> None:
    settings.REBOUND = rebound_settings(OUTBOUND_ALLOWED_HOSTS=["127.0.0.1:9"], NOTIFICATION_MAX_ATTEMPTS=1)
    services.create_channel(
        data={"name": "nowhere", "url": "json://127.0.0.1:9/hook"}, actor=Actor(), reason="test"
    )
    (delivery,) = deliver(escalation("k"))
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert "Connection error" in delivery.error


def test_a_host_no_longer_allowed_fails_at_once(receiver: Target, settings: Any) -> None:
    channel(receiver)
    settings.REBOUND = rebound_settings(OUTBOUND_ALLOWED_HOSTS=[])
    (delivery,) = deliver(escalation("k"))
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert "outbound call refused" in delivery.error and "OUTBOUND_ALLOWED_HOSTS" in delivery.error
    assert receiver.seen == []


def test_a_deleted_channel_fails_its_pending_delivery(receiver: Target) -> None:
    hook = channel(receiver)
    raised = escalation("k")
    (delivery_id,) = services.plan_deliveries(raised.pk, raised.notice)
    services.delete_channel(channel_id=hook.pk, actor=Actor(), reason="retired")
    delivery = Delivery.objects.get(pk=delivery_id)
    assert services.send_delivery(delivery.pk, delivery.task_id) == "failed"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.channel_id, delivery.channel_name) == ("failed", None, "hook")
    assert "deleted" in delivery.error
    assert receiver.seen == []


def test_an_error_never_shows_the_url_secrets(receiver: Target) -> None:
    receiver.script(Answer(401, "no"))
    services.create_channel(
        data={"name": "auth", "url": f"json://rebound:s3cretpassw0rd@{receiver.host}/hook"},
        actor=Actor(),
        reason="t",
    )
    (delivery,) = deliver(escalation("k"))
    assert delivery.error and "s3cretpassw0rd" not in delivery.error
    assert receiver.seen[-1].headers.get("Authorization", "").startswith("Basic ")


# --- the fence and the beat ----------------------------------------------------------------------------------


def test_only_the_task_holding_the_delivery_sends_it(receiver: Target) -> None:
    channel(receiver)
    raised = escalation("k")
    (delivery_id,) = services.plan_deliveries(raised.pk, raised.notice)
    holder = Delivery.objects.get(pk=delivery_id).task_id

    assert services.send_delivery(delivery_id, "another-task") == "stale"
    assert services.send_delivery(delivery_id, holder) == "sent"
    assert services.send_delivery(delivery_id, holder) == "stale"  # a duplicate message of the same task
    assert len(receiver.seen) == 1
    assert EscalationEvent.objects.filter(kind="notified").count() == 1


def test_the_beat_hands_a_delivery_whose_task_was_lost_to_a_new_task(
    receiver: Target, enqueued: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    channel(receiver)
    raised = escalation("k")
    (delivery_id,) = services.plan_deliveries(raised.pk, raised.notice)
    lost = Delivery.objects.get(pk=delivery_id)
    first_task = lost.task_id
    assert lost.next_attempt_at is not None

    # Within its lease, the first task may still come.
    assert services.retry_due(lost.next_attempt_at - timedelta(seconds=1)) == 0
    with django_capture_on_commit_callbacks(execute=True):
        assert services.retry_due(lost.next_attempt_at) == 1
    lost.refresh_from_db()
    assert lost.task_id not in ("", first_task)
    assert enqueued == [(delivery_id, lost.task_id)]
    # The first task's message, arriving after all, finds the delivery another task's.
    assert services.send_delivery(delivery_id, first_task) == "stale"
    assert services.send_delivery(delivery_id, lost.task_id) == "sent"
    assert len(receiver.seen) == 1


def test_plans_are_sent_once_committed(
    receiver: Target, enqueued: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    channel(receiver)
    raised = escalation("k")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        ids = services.plan_deliveries(raised.pk, raised.notice)
    assert enqueued == []
    for callback in callbacks:
        callback()
    assert enqueued == [(ids[0], Delivery.objects.get(pk=ids[0]).task_id)]


# --- routing -----------------------------------------------------------------------------------------------------


def test_it_routes_by_minimum_level_and_services(receiver: Target) -> None:
    every = channel(receiver, "every", min_level="info")
    critical = channel(receiver, "critical-only", min_level="critical")
    payments = channel(receiver, "payments", min_level="warning", services=["payments"])
    channel(receiver, "off", min_level="info", enabled=False)

    warning_payments = escalation("a", "warning", service="payments")
    critical_search = escalation("b", "critical", service="search")
    info_payments = escalation("c", "info", service="payments")

    def told(raised: Any) -> set[int]:
        services.plan_deliveries(raised.pk, raised.notice)
        return set(Delivery.objects.filter(escalation=raised).values_list("channel_id", flat=True))

    assert told(warning_payments) == {every.pk, payments.pk}
    assert told(critical_search) == {every.pk, critical.pk}
    assert told(info_payments) == {every.pk}


def test_a_level_change_notifies_each_channel_once(receiver: Target) -> None:
    warnings = channel(receiver, "warnings", min_level="warning")
    criticals = channel(receiver, "criticals", min_level="critical")
    first = raise_one("key", "warning", service="payments", trigger="critical_error")
    assert first.notice == 1
    assert len(services.plan_deliveries(first.pk, 1)) == 1
    assert services.plan_deliveries(first.pk, 1) == []  # the same notice twice creates nothing

    repeat = raise_one("key", "warning", service="payments", trigger="critical_error")
    assert repeat.notice == 1  # a repeat at the same level is no new notice
    rose = raise_one("key", "critical", service="payments", trigger="critical_error")
    assert (rose.pk, rose.notice, rose.level) == (first.pk, 2, "critical")

    assert services.plan_deliveries(first.pk, 1) == []  # an old notice, told again late: superseded
    second = services.plan_deliveries(first.pk, 2)
    assert len(second) == 2
    assert services.plan_deliveries(first.pk, 2) == []

    rows = list(Delivery.objects.filter(escalation_id=first.pk).values_list("channel_id", "notice", "level"))
    assert sorted(rows) == sorted(
        [(warnings.pk, 1, "warning"), (warnings.pk, 2, "critical"), (criticals.pk, 2, "critical")]
    )


def test_a_resolved_escalation_is_not_told(receiver: Target) -> None:
    channel(receiver)
    raised = escalation("k")
    raised.state, raised.resolved_at = "resolved", timezone.now()
    raised.save(update_fields=["state", "resolved_at"])
    assert services.plan_deliveries(raised.pk, raised.notice) == []
    assert services.plan_deliveries(10**9, 1) == []  # nor one that does not exist
    assert not Delivery.objects.exists()


def test_the_beat_plans_a_notice_whose_task_was_lost(receiver: Target, enqueued: list[Any]) -> None:
    hook = channel(receiver)
    raised = escalation("k")
    given = raised.level_changed_at

    assert (
        services.replan_missed(given + timedelta(seconds=services.REPLAN_AFTER_S - 1)) == 0
    )  # its task may come
    assert services.replan_missed(given + timedelta(seconds=services.REPLAN_AFTER_S + 1)) == 1
    assert Delivery.objects.get(escalation=raised).channel_id == hook.pk
    assert services.replan_missed(given + timedelta(seconds=services.REPLAN_AFTER_S + 2)) == 0
    assert services.replan_missed(given + timedelta(seconds=services.REPLAN_WITHIN_S + 1)) == 0


# --- silences ----------------------------------------------------------------------------------------------------


def test_a_silenced_escalation_is_recorded_not_sent(
    receiver: Target, django_capture_on_commit_callbacks: Any
) -> None:
    channel(receiver)
    muted = silence(service="payments", level="critical")
    silenced_before = counted("silenced")

    with django_capture_on_commit_callbacks(execute=True):
        (delivery,) = deliver(escalation("k", "warning", service="payments"))

    assert (delivery.status, delivery.silence_id, delivery.attempts, delivery.task_id) == (
        "silenced",
        muted.pk,
        0,
        "",
    )
    assert receiver.seen == []
    assert not EscalationEvent.objects.filter(kind="notified").exists()
    assert counted("silenced") == silenced_before + 1
    assert services.retry_due(timezone.now() + timedelta(days=1)) == 0


@pytest.mark.parametrize(
    ("service", "level", "muted"),
    [
        ("payments", "", True),  # every level of the service
        ("", "warning", True),  # warnings and below of every service
        ("", "", True),  # everything
        ("search", "", False),  # another service
        ("", "info", False),  # a warning is above it
    ],
)
def test_a_silence_matches_by_service_and_level(
    receiver: Target, service: str, level: str, muted: bool
) -> None:
    channel(receiver)
    silence(service=service, level=level)
    (delivery,) = deliver(escalation("k", "warning", service="payments"))
    assert (delivery.status == "silenced") is muted


def test_an_ended_silence_mutes_nothing(receiver: Target) -> None:
    channel(receiver)
    muted = silence()
    services.end_silence(silence_id=muted.pk, actor=reviewer_actor(), reason="done early")
    (delivery,) = deliver(escalation("k"))
    assert delivery.status == "sent"

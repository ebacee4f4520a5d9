"""Notification channels, silences and escalations for the notification tests: made through the services, as the
API and the admin make them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from core.audit.services import Actor
from healing.escalations.models import Escalation
from healing.notifications import services
from healing.notifications.models import Delivery, NotificationChannel, Silence
from tests.support.escalations import raise_one, reviewer_actor
from tests.support.http_target import Target


def channel(target: Target, name: str = "hook", path: str = "/hook", **fields: Any) -> NotificationChannel:
    """A channel posting JSON to the loopback target (apprise's json:// URL), as an operator creates one."""
    data: dict[str, Any] = {"name": name, "url": f"json://{target.host}{path}", **fields}
    return services.create_channel(data=data, actor=Actor(), reason="test")


def escalation(key: str = "k", level: str = "warning", **fields: Any) -> Escalation:
    """An escalation raised as the system raises one (its first notice is 1)."""
    fields.setdefault("service", "payments")
    fields.setdefault("trigger", "critical_error")
    return raise_one(key, level, **fields)


def silence(service: str = "", level: str = "", minutes: float = 60, **kw: Any) -> Silence:
    """A silence in force from now, set by a reviewer."""
    return services.create_silence(
        service=service,
        level=level,
        ends_at=timezone.now() + timedelta(minutes=minutes),
        reason=kw.pop("reason", "maintenance"),
        actor=kw.pop("actor", None) or reviewer_actor(),
    )


def deliver(escalation_row: Escalation) -> list[Delivery]:
    """Plan the escalation's current notice and make each pending delivery's first attempt, as the tasks do;
    answers every delivery of the notice (silenced ones too)."""
    ids = services.plan_deliveries(escalation_row.pk, escalation_row.notice)
    for delivery in Delivery.objects.filter(pk__in=ids):
        services.send_delivery(delivery.pk, delivery.task_id)
    return list(
        Delivery.objects.filter(escalation=escalation_row, notice=escalation_row.notice).order_by("id")
    )

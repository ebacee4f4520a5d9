"""Reads of the notifications: channels (and which ones an escalation goes to), silences (and the one in force
for an escalation), deliveries, and the work the beat picks up. Writes live in services.py."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import TypeVar

from django.db.models import Exists, Model, OuterRef, Q, QuerySet
from django.utils import timezone

from core.api.errors import NotFound
from healing.escalations import selectors as escalation_selectors
from healing.escalations.models import LEVEL_RANK, NOT_RESOLVED, Escalation
from healing.notifications.models import Delivery, NotificationChannel, Silence

# An id in a URL: a whole number that fits a bigint (anything else is simply not found).
_ID = re.compile(r"[0-9]{1,18}")
M = TypeVar("M", bound=Model)


def _one(found: QuerySet[M], text: int | str, what: str) -> M:
    row = None
    if isinstance(text, int) or _ID.fullmatch(text or ""):
        row = found.filter(pk=int(text)).first()
    if row is None:
        raise NotFound(f"No {what} {text}.", field="id")
    return row


# --- channels ----------------------------------------------------------------------------------------------------


def channels(*, enabled: bool | None = None) -> QuerySet[NotificationChannel]:
    """Channels by name."""
    found = NotificationChannel.objects.order_by("name", "id")
    return found if enabled is None else found.filter(enabled=enabled)


def get_channel(channel_id: int | str) -> NotificationChannel:
    return _one(channels(), channel_id, "notification channel")


def matching_channels(*, level: str, service: str) -> list[NotificationChannel]:
    """The enabled channels an escalation of this level and service goes to: its level at or above the
    channel's minimum, and its service among the channel's (a channel without services takes every one)."""
    rank = LEVEL_RANK.get(level, 0)
    return [
        channel
        for channel in channels(enabled=True)
        if LEVEL_RANK.get(channel.min_level, 0) <= rank
        and (not channel.services or service in channel.services)
    ]


# --- silences ----------------------------------------------------------------------------------------------------


def _in_force(now: datetime) -> Q:
    return Q(starts_at__lte=now, ends_at__gt=now, ended_at__isnull=True)


def silences(
    *, active: bool = True, service: str | None = None, now: datetime | None = None
) -> QuerySet[Silence]:
    """Silences, newest first: those in force now (active), or every one (history)."""
    found = Silence.objects.select_related("created_by", "ended_by").order_by("-starts_at", "-id")
    if active:
        found = found.filter(_in_force(now or timezone.now()))
    if service is not None:
        found = found.filter(service=service)
    return found


def get_silence(silence_id: int | str) -> Silence:
    return _one(silences(active=False), silence_id, "silence")


def silence_for(*, service: str, level: str, now: datetime | None = None) -> Silence | None:
    """The silence in force that mutes an escalation of this service and level, if any: its service blank or
    the same, its level blank or at or above the escalation's. The one that lasts longest."""
    rank = LEVEL_RANK.get(level, 0)
    levels = [name for name, at in LEVEL_RANK.items() if at >= rank]
    return (
        Silence.objects.filter(_in_force(now or timezone.now()))
        .filter(Q(service="") | Q(service=service))
        .filter(Q(level="") | Q(level__in=levels))
        .order_by("-ends_at", "-id")
        .first()
    )


# --- deliveries --------------------------------------------------------------------------------------------------


def deliveries(*, escalation_id: int | None = None, status: str | None = None) -> QuerySet[Delivery]:
    found = Delivery.objects.select_related("channel", "escalation", "silence").order_by("-created_at", "-id")
    if escalation_id is not None:
        found = found.filter(escalation_id=escalation_id)
    if status is not None:
        found = found.filter(status=status)
    return found


def due_deliveries(now: datetime, limit: int) -> list[tuple[int, str, datetime | None]]:
    """(id, task id, next attempt) of the pending deliveries whose next attempt is due: waiting for a retry, or
    claimed by a task whose lease ran out (its message or its worker was lost). The most overdue first."""
    rows = (
        Delivery.objects.filter(status=Delivery.Status.PENDING)
        .filter(Q(next_attempt_at__lte=now) | Q(next_attempt_at__isnull=True))
        .order_by("next_attempt_at", "id")
        .values_list("pk", "task_id", "next_attempt_at")[:limit]
    )
    return list(rows)


def unplanned_notices(now: datetime, *, after_s: float, within_s: float, limit: int) -> list[tuple[int, int]]:
    """(escalation id, notice) of the escalations not resolved whose latest notice, given between `within_s`
    and `after_s` seconds ago, has no delivery at all: its notify task was lost (a broker down at the moment),
    or no channel matched. Asked again by the beat; planning twice creates nothing."""
    planned = Delivery.objects.filter(escalation_id=OuterRef("pk"), notice=OuterRef("notice"))
    found: QuerySet[Escalation] = (
        escalation_selectors.queue()
        .filter(
            state__in=NOT_RESOLVED,
            notice__gt=0,
            level_changed_at__gte=now - timedelta(seconds=within_s),
            level_changed_at__lte=now - timedelta(seconds=after_s),
        )
        .filter(~Exists(planned))
        .order_by("level_changed_at", "id")
    )
    return list(found.values_list("pk", "notice")[:limit])

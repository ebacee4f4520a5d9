"""Writes of the notifications: the channels (operators; audited), the silences (reviewers and operators;
audited), and the deliveries: planning one per matching channel for each notice of an escalation, sending
each through apprise, and retrying with backoff.

A delivery's life, every move a compare-and-set:

    plan_deliveries --silence in force--> silenced (recorded, never sent)
         '--> pending (task_id = T1, next_attempt_at = lease end) --send_delivery(T1)--> sent
                  |--attempt failed--> pending (task_id "", next_attempt_at = now + backoff) --retry_due--> T2 ...
                  '--attempt failed, NOTIFICATION_MAX_ATTEMPTS reached (or the URL refused)--> failed

Once per change: an escalation's `notice` is bumped with every change that must be told (raised, level rose,
reopened), and a Delivery is unique per (channel, escalation, notice) in the database, so however many
notify tasks run for one notice, each channel is told once.

Fenced by the task id: `task_id` names the one task allowed to make the next attempt, set with a lease
(`next_attempt_at`, the task's hard time limit and a grace) in the same compare-and-set that hands the delivery
to it. A duplicate message of another task finds another id and does nothing; a message or a worker lost is
covered by the beat (retry_due), which hands a delivery whose lease ran out to a new task id. The attempt
itself (network I/O) runs outside any transaction; its result is recorded only if the task still holds the
delivery.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from celery import current_app
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from core.access import roles
from core.api.errors import Conflict, Forbidden, InvalidInput, NotFound
from core.audit import services as audit
from core.audit.services import Actor
from core.infra.conf import rebound
from core.slugs import validate_slug
from healing.escalations import selectors as escalation_selectors
from healing.escalations import services as escalation_services
from healing.escalations.models import LEVEL_RANK, LEVELS, Escalation
from healing.notifications import metrics, selectors, sender
from healing.notifications.models import Delivery, NotificationChannel, Silence

log = logging.getLogger(__name__)

Status = Delivery.Status
# The send task (tasks.py), sent by name: services never import tasks.py, which imports them.
SEND_TASK = "healing.notifications.tasks.send_delivery"
# A send task's Celery time limits, past NOTIFICATION_TIMEOUT_SECONDS (which bounds apprise's call itself).
SOFT_LIMIT_MARGIN_S = 5.0
HARD_LIMIT_MARGIN_S = 10.0
# How long past the hard limit a claimed delivery waits before the beat hands it to another task.
LEASE_GRACE_S = 5.0
MAX_BACKOFF_S = 3600.0
BATCH = 500
# The net under a lost notify task: notices older than this without a delivery are planned by the beat...
REPLAN_AFTER_S = 60.0
# ...for this long after they were given.
REPLAN_WITHIN_S = 15 * 60.0
REPLAN_BATCH = 100
ERROR_CHARS = 2000
SYSTEM = "system"
NOTIFIED = "notified"  # EscalationEvent.Kind.NOTIFIED

CHANNEL_FIELDS = ["name", "url", "min_level", "services", "enabled"]
MAX_SERVICES = 100
AUDIT_CHANNEL = "notification_channel"
AUDIT_SILENCE = "silence"

# apprise's notify types by level: critical and emergency are failures (the red ones).
NOTIFY_TYPES = {"info": "info", "warning": "warning", "critical": "failure", "emergency": "failure"}
ESCALATION_PATH = "/api/v1/escalations/{id}"


def _now() -> datetime:
    return timezone.now()


def timeout_s() -> float:
    return float(rebound("NOTIFICATION_TIMEOUT_SECONDS"))


def lease_s() -> float:
    """How long a task holds a delivery: its hard time limit and a grace."""
    return timeout_s() + HARD_LIMIT_MARGIN_S + LEASE_GRACE_S


def backoff_s(attempts: int) -> float:
    """The wait after the `attempts`-th failed attempt: NOTIFICATION_RETRY_BASE_SECONDS, doubling each time."""
    base = float(rebound("NOTIFICATION_RETRY_BASE_SECONDS"))
    return min(base * (2 ** max(0, attempts - 1)), MAX_BACKOFF_S)


# --- the channels (operators; audited) ---------------------------------------------------------------------------


def _snapshot(channel: NotificationChannel) -> dict[str, Any]:
    """The channel for the audit trail: its URL masked (the trail is read by more people than the secret)."""
    data = audit.snapshot(channel, CHANNEL_FIELDS)
    data["url"] = sender.mask(channel.url)
    return data


def _services_problem(value: Any) -> tuple[list[str], str | None]:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        return [], "a list of service names"
    if len(value) > MAX_SERVICES:
        return [], f"at most {MAX_SERVICES} services"
    for name in value:
        try:
            validate_slug(name)
        except ValidationError:
            return [], f"{name[:100]!r} is not a service name (a lower-case slug)"
    return list(dict.fromkeys(value)), None


def _validate(channel: NotificationChannel) -> None:
    """Every problem at once, each naming its field: the URL (apprise understands it, the outbound policy
    allows it), the services, then the model's own rules."""
    problems: list[dict[str, str]] = []
    channel.url = (channel.url or "").strip()
    if channel.url:
        why = sender.problem(channel.url)
        if why:
            problems.append({"field": "url", "message": why})
    services, why = _services_problem(channel.services)
    if why:
        problems.append({"field": "services", "message": why})
    else:
        channel.services = services
    try:
        audit.full_clean(channel)
    except InvalidInput as error:
        # The model knows nothing of apprise: its own word on `url` is only "required".
        problems += [e for e in error.errors if e not in problems]
    if problems:
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in problems[:5])
        raise InvalidInput(f"Invalid input: {summary}", errors=problems)


@contextmanager
def _name_taken_is_a_conflict(name: str) -> Iterator[None]:
    # full_clean() checked the name is free; another request may have taken it since (unique in the database).
    try:
        yield
    except IntegrityError as error:
        raise Conflict(
            f"A notification channel named {name!r} was created meanwhile.", field="name"
        ) from error


def create_channel(*, data: dict[str, Any], actor: Actor, reason: str) -> NotificationChannel:
    """A new channel (audited, its URL masked in the trail)."""
    reason = audit.require_reason(reason)
    channel = NotificationChannel(**{k: v for k, v in data.items() if k in CHANNEL_FIELDS})
    _validate(channel)
    with _name_taken_is_a_conflict(channel.name), transaction.atomic():
        channel.save()
        audit.record(actor, f"{AUDIT_CHANNEL}.create", channel, reason=reason, after=_snapshot(channel))
    return channel


def update_channel(
    *, channel_id: int, data: dict[str, Any], actor: Actor, reason: str
) -> NotificationChannel:
    """Change a channel (audited). A URL left out (or, from the admin, left blank) keeps the stored one. No
    change: nothing written, nothing audited."""
    reason = audit.require_reason(reason)
    with _name_taken_is_a_conflict(str(data.get("name", ""))), transaction.atomic():
        channel = NotificationChannel.objects.select_for_update().filter(pk=channel_id).first()
        if channel is None:
            raise NotFound("The notification channel was deleted meanwhile.", field="id")
        before = audit.snapshot(channel, CHANNEL_FIELDS)
        shown_before = _snapshot(channel)
        for key, value in data.items():
            if key in CHANNEL_FIELDS:
                setattr(channel, key, value)
        _validate(channel)
        if audit.snapshot(channel, CHANNEL_FIELDS) == before:
            return channel
        channel.save()
        after = _snapshot(channel)
        if channel.url != before["url"] and after["url"] == shown_before["url"]:
            after["url"] += " (changed)"  # masked alike, yet another secret: the trail says it changed
        audit.record(
            actor, f"{AUDIT_CHANNEL}.update", channel, reason=reason, before=shown_before, after=after
        )
    return channel


def delete_channel(*, channel_id: int, actor: Actor, reason: str) -> None:
    """Delete a channel (audited). Its deliveries stay, with its name; a pending one fails when its turn comes."""
    reason = audit.require_reason(reason)
    with transaction.atomic():
        channel = NotificationChannel.objects.select_for_update().filter(pk=channel_id).first()
        if channel is None:
            raise NotFound("The notification channel was deleted meanwhile.", field="id")
        audit.record(actor, f"{AUDIT_CHANNEL}.delete", channel, reason=reason, before=_snapshot(channel))
        channel.delete()


# --- silences (reviewers and operators; audited) ----------------------------------------------------------------


def _reviewer(actor: Actor) -> Any:
    user = actor.user if actor.user is not None and getattr(actor.user, "pk", None) else None
    if actor.agent is not None or not roles.is_reviewer(user):
        raise Forbidden("Only reviewers and operators set or end silences.")
    return user


def create_silence(
    *, service: str, level: str, ends_at: datetime, reason: str, actor: Actor, now: datetime | None = None
) -> Silence:
    """Mute the escalations of `service` (blank: every service) at `level` or below (blank: every level) from
    now until `ends_at`, which must be in the future. Its reason is the audit's."""
    user = _reviewer(actor)
    reason = audit.require_reason(reason)
    now = now or _now()
    problems = []
    if service:
        try:
            validate_slug(service)
        except ValidationError:
            problems.append({"field": "service", "message": "a service's name: a lower-case slug (or blank)"})
    if level and level not in LEVEL_RANK:
        problems.append({"field": "level", "message": f"must be one of {', '.join(LEVELS)} (or blank)"})
    if ends_at is None or ends_at <= now:
        problems.append({"field": "ends_at", "message": "must be in the future"})
    if problems:
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in problems)
        raise InvalidInput(f"Invalid input: {summary}", errors=problems)
    silence = Silence(
        service=service or "",
        level=level or "",
        starts_at=now,
        ends_at=ends_at,
        reason=reason,
        created_by=user,
        created_at=now,
    )
    audit.full_clean(silence)
    with transaction.atomic():
        silence.save()
        audit.record(
            actor,
            f"{AUDIT_SILENCE}.create",
            silence,
            reason=reason,
            after=audit.snapshot(silence, ["service", "level", "starts_at", "ends_at"]),
        )
    return silence


def end_silence(*, silence_id: int | str, actor: Actor, reason: str) -> Silence:
    """End a silence in force now (audited): notices are sent again. One that ended already (or expired) is a
    409."""
    user = _reviewer(actor)
    reason = audit.require_reason(reason)
    silence = selectors.get_silence(silence_id)
    now = _now()
    with transaction.atomic():
        ended = Silence.objects.filter(pk=silence.pk, ended_at__isnull=True, ends_at__gt=now).update(
            ended_at=now, ended_by=user
        )
        if not ended:
            raise Conflict("The silence is not in force: it ended already.", field="id")
        audit.record(
            actor,
            f"{AUDIT_SILENCE}.end",
            silence,
            reason=reason,
            before={"ends_at": silence.ends_at.isoformat(), "ended_at": None},
            after={"ended_at": now.isoformat()},
        )
    return selectors.get_silence(silence.pk)


# --- the message ---------------------------------------------------------------------------------------------


def message_for(escalation: Escalation, level: str) -> sender.Message:
    """What a channel is told: "[LEVEL] title", and the escalation in a few lines with the path to it."""
    lines = []
    if escalation.summary:
        lines += [escalation.summary.strip(), ""]
    first, last = escalation.first_seen_at, escalation.last_seen_at
    lines += [
        f"Service: {escalation.service or '(none)'}",
        f"Trigger: {escalation.trigger}",
        f"Occurrences: {escalation.occurrences} (first seen {first:%Y-%m-%d %H:%M:%S} UTC, "
        f"last seen {last:%Y-%m-%d %H:%M:%S} UTC)",
        f"State: {escalation.state}",
    ]
    if escalation.recommended_action:
        lines += ["", "Recommended action:", escalation.recommended_action.strip()]
    lines += ["", f"Link: {ESCALATION_PATH.format(id=escalation.pk)}"]
    return sender.Message(
        title=f"[{level.upper()}] {escalation.title}",
        body="\n".join(lines),
        notify_type=NOTIFY_TYPES.get(level, "info"),
    )


# --- deliveries ------------------------------------------------------------------------------------------------


def enqueue_send(delivery_id: int, task_id: str) -> None:
    """Send the task that makes the delivery's next attempt, under the id it holds the delivery with. A broker
    failure is logged, not raised: the beat hands the delivery to another task once its lease ran out."""
    try:
        current_app.send_task(
            SEND_TASK,
            args=[delivery_id],
            task_id=task_id,
            soft_time_limit=timeout_s() + SOFT_LIMIT_MARGIN_S,
            time_limit=timeout_s() + HARD_LIMIT_MARGIN_S,
        )
    except Exception as error:
        log.warning("could not enqueue delivery %s: %s", delivery_id, error)


def _send_on_commit(delivery_id: int, task_id: str) -> None:
    transaction.on_commit(lambda: enqueue_send(delivery_id, task_id))


def _count_on_commit(result: str, n: int = 1) -> None:
    if n:
        transaction.on_commit(lambda: metrics.notifications_total.labels(result=result).inc(n))


def _new_task_id() -> str:
    return str(uuid.uuid4())


def plan_deliveries(escalation_id: int, notice: int) -> list[int]:
    """One Delivery per channel the escalation's notice goes to; the pending ones are sent once this commits,
    each by its own task. Answers the ids of the deliveries to send.

    Nothing is planned for a notice that is not the escalation's latest (a newer change is told by its own
    task, with the level it has now), nor for an escalation resolved meanwhile, nor twice for the same notice:
    a second run finds the rows (unique per channel, escalation and notice) and creates nothing."""
    try:
        escalation = escalation_selectors.get_escalation(int(escalation_id))
    except NotFound:
        return []
    if escalation.notice != int(notice) or escalation.is_resolved:
        return []
    channels = selectors.matching_channels(level=escalation.level, service=escalation.service)
    if not channels:
        return []
    now = _now()
    silence = selectors.silence_for(service=escalation.service, level=escalation.level, now=now)
    planned = set(
        Delivery.objects.filter(escalation_id=escalation.pk, notice=escalation.notice).values_list(
            "channel_id", flat=True
        )
    )
    to_send: list[int] = []
    silenced = 0
    with transaction.atomic():
        for channel in channels:
            if channel.pk in planned:
                continue
            delivery = Delivery(
                channel=channel,
                channel_name=channel.name,
                escalation_id=escalation.pk,
                notice=escalation.notice,
                level=escalation.level,
                created_at=now,
            )
            if silence is not None:
                delivery.status, delivery.silence = Status.SILENCED, silence
            else:
                delivery.task_id = _new_task_id()
                delivery.next_attempt_at = now + timedelta(seconds=lease_s())
            try:
                with transaction.atomic():  # a savepoint: another task's row for this channel wins
                    delivery.save()
            except IntegrityError:
                continue
            if silence is not None:
                silenced += 1
            else:
                to_send.append(delivery.pk)
                _send_on_commit(delivery.pk, delivery.task_id)
        _count_on_commit(metrics.SILENCED, silenced)
    return to_send


def send_delivery(delivery_id: int, task_id: str) -> str:
    """One attempt of a pending delivery, as the task `task_id`. Answers what happened, for the logs: "stale"
    when the delivery is not this task's any more (a duplicate message, the beat handed it to another task,
    it ended), else sent, retry or failed. A failure to send never raises."""
    now = _now()
    claimed = Delivery.objects.filter(pk=delivery_id, status=Status.PENDING, task_id=task_id).update(
        next_attempt_at=now + timedelta(seconds=lease_s()), updated_at=now
    )
    if not claimed:
        return "stale"
    delivery = Delivery.objects.select_related("channel", "escalation").get(pk=delivery_id)
    channel = delivery.channel
    if channel is None:
        outcome = sender.Outcome(False, "the channel was deleted before the notice was sent", permanent=True)
    elif not channel.enabled:
        outcome = sender.Outcome(False, "the channel was disabled before the notice was sent", permanent=True)
    else:
        # No transaction is open here: apprise's call may take NOTIFICATION_TIMEOUT_SECONDS.
        message = message_for(delivery.escalation, delivery.level)
        outcome = sender.send(channel.url, message, timeout_s=timeout_s())
    return _record(delivery, task_id, outcome)


def _record(delivery: Delivery, task_id: str, outcome: sender.Outcome) -> str:
    """The attempt's result, if the task still holds the delivery: sent (with the escalation's "notified"
    event), another attempt after the backoff, or failed."""
    now = _now()
    holding = Delivery.objects.filter(pk=delivery.pk, status=Status.PENDING, task_id=task_id)
    attempts = delivery.attempts + 1
    with transaction.atomic():
        if outcome.ok:
            if not holding.update(
                status=Status.SENT,
                sent_at=now,
                attempts=F("attempts") + 1,
                error="",
                next_attempt_at=None,
                updated_at=now,
            ):
                return "stale"
            escalation_services.record_event(
                delivery.escalation_id,
                NOTIFIED,
                actor=SYSTEM,
                text=delivery.channel_name,
                data={
                    "delivery": delivery.pk,
                    "channel": delivery.channel_name,
                    "notice": delivery.notice,
                    "level": delivery.level,
                    "attempts": attempts,
                },
            )
            _count_on_commit(metrics.SENT)
            return Status.SENT
        error = (outcome.error or "failed")[:ERROR_CHARS]
        if outcome.permanent or attempts >= int(rebound("NOTIFICATION_MAX_ATTEMPTS")):
            if not holding.update(
                status=Status.FAILED,
                attempts=F("attempts") + 1,
                error=error,
                next_attempt_at=None,
                updated_at=now,
            ):
                return "stale"
            _count_on_commit(metrics.FAILED)
            log.warning(
                "notification of escalation %s to %s failed after %d attempt(s): %s",
                delivery.escalation_id,
                delivery.channel_name,
                attempts,
                error,
            )
            return Status.FAILED
        if not holding.update(
            attempts=F("attempts") + 1,
            error=error,
            task_id="",  # nobody's until the beat hands it to the next attempt's task
            next_attempt_at=now + timedelta(seconds=backoff_s(attempts)),
            updated_at=now,
        ):
            return "stale"
    return "retry"


def retry_due(now: datetime | None = None) -> int:
    """Hand each pending delivery whose next attempt is due (its backoff passed, or the lease of a task that
    never finished ran out) to a new task, by compare-and-set on the task id and time read; only the process
    whose update won sends it. Then plan the notices whose notify task was lost. Idempotent; safe in several
    processes at once. Answers how many deliveries were sent to a task."""
    now = now or _now()
    lease_end = now + timedelta(seconds=lease_s())
    handed: list[tuple[int, str]] = []
    with transaction.atomic():
        for delivery_id, held_by, due_at in selectors.due_deliveries(now, BATCH):
            task_id = _new_task_id()
            if Delivery.objects.filter(
                pk=delivery_id, status=Status.PENDING, task_id=held_by, next_attempt_at=due_at
            ).update(task_id=task_id, next_attempt_at=lease_end, updated_at=now):
                handed.append((delivery_id, task_id))
                _send_on_commit(delivery_id, task_id)
    replan_missed(now)
    return len(handed)


def replan_missed(now: datetime | None = None) -> int:
    """Plan the recent notices that have no delivery (their notify task was lost); answers how many were."""
    now = now or _now()
    if not selectors.channels(enabled=True).exists():
        return 0
    missed = selectors.unplanned_notices(
        now, after_s=REPLAN_AFTER_S, within_s=REPLAN_WITHIN_S, limit=REPLAN_BATCH
    )
    planned = 0
    for escalation_id, notice in missed:
        try:
            planned += bool(plan_deliveries(escalation_id, notice))
        except Exception as error:  # one escalation must not stop the others
            log.warning("could not plan the notice %s of escalation %s: %s", notice, escalation_id, error)
    return planned


def notify(escalation_id: int, notice: int) -> int:
    """The notify task's work: plan the notice's deliveries (sent by their own tasks). Answers how many."""
    return len(plan_deliveries(escalation_id, notice))

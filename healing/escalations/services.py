"""Writes of the escalation review queue: raising (deduplicated by a database constraint), the human acts
(acknowledge, assign, comment, snooze, resolve, reopen: reviewers and operators, audited), automatic
resolution, and the escalation policy's timers.

An escalation's life, every move a compare-and-set on its state and an EscalationEvent row:

    (raise) --> open --ack--> acknowledged --resolve--> resolved --reopen, or raised again within the
                 | ^             |                         ^        reopen window--> open
                 | '---wake------+--snooze--> snoozed -----'
                 '--policy: still open at a level past its step's time--> the next level (notified again)

One escalation not resolved per dedup key is a partial unique index: a raise inserts, and the raisers that lose
the race to insert count their repeat into the winner (occurrences added in one UPDATE), however many arrive at
once. On PostgreSQL a repeat (nearly every raise) is one statement: the count and its history row together.
An escalation is told to the notification channels (signals.notice_due, on commit) each time its
`notice` goes up, in the same UPDATE as the change that needs telling: raised, level rose, reopened, woke.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connections, transaction
from django.db.models import F
from django.db.models import Field as ModelField
from django.utils import timezone
from prometheus_client import Histogram

from core.access import roles
from core.api.errors import Conflict, Forbidden, InvalidInput
from core.audit import services as audit
from core.audit.services import Actor
from core.infra.conf import rebound
from healing.escalations import metrics, selectors, signals
from healing.escalations.models import (
    LEVEL_RANK,
    LEVELS,
    NOT_RESOLVED,
    Escalation,
    EscalationEvent,
    EscalationPolicy,
    State,
    TriggerKind,
    higher,
)

log = logging.getLogger(__name__)

Kind = EscalationEvent.Kind
SYSTEM = "system"
POLICY = "policy"
TITLE_CHARS = 200
KEY_CHARS = 300
SERVICE_CHARS = 100
TEXT_CHARS = 10_000
MAX_SNOOZE = timedelta(days=30)
BATCH = 500
# A raise retries when another raiser or a human moved the escalation between its read and its write; each
# retry reads what they committed, so a few are plenty.
ATTEMPTS = 8
ONE_OPEN_PER_KEY = "escalation_one_open_per_key"
# What Raise.links may name: the escalation's foreign keys, by their column names.
LINKS = frozenset(
    {
        "pattern_id",
        "task_id",
        "transaction_id",
        "retry_job_id",
        "healing_run_id",
        "breaker_transition_id",
        "plan_id",
    }
)
TRIGGERS = frozenset(TriggerKind.values)


@dataclass(frozen=True)
class Raise:
    """What a trigger (or an agent) raises. Conventions for dedup keys are in docs/escalations.md."""

    trigger: str  # a TriggerKind value
    dedup_key: str  # at most 300 characters
    level: str  # a Level value
    title: str  # cut to 200 characters
    summary: str = ""
    service: str = ""
    error_class: str = ""  # for runbook matching
    context: dict[str, Any] = field(default_factory=dict)
    # Ids of what is behind it: pattern_id, task_id (Task pk), transaction_id, retry_job_id, healing_run_id,
    # breaker_transition_id, plan_id (RecoveryPlan uuid).
    links: dict[str, Any] = field(default_factory=dict)
    # False for beat sweeps that find a condition again: if one is open, change nothing.
    count_repeat: bool = True
    # How many occurrences this raise stands for: a trigger that folds several sightings into one raise (the
    # error triggers, over a storm of one error) says how many.
    occurrences: int = 1


@dataclass(frozen=True)
class Raised:
    escalation: Escalation
    outcome: str  # "raised" | "repeated" | "reopened" | "unchanged"


def _now() -> datetime:
    return timezone.now()


def _user_of(actor: Actor) -> Any:
    return actor.user if actor.user is not None and getattr(actor.user, "pk", None) else None


# --- raising -----------------------------------------------------------------------------------------------------


def raise_escalation(r: Raise, *, actor: Actor | None = None) -> Raised:
    """Raise an escalation, or count a repeat into the one not resolved with its key, or reopen the one
    resolved within ESCALATION_REOPEN_WINDOW_SECONDS. `actor` None is the system (the trigger); an agent's
    actor marks it as the agent's. A disabled trigger is for the caller to check (selectors.trigger)."""
    _check(r)
    label = (actor.label if actor is not None else f"trigger:{r.trigger}")[:200]
    in_one_statement = r.count_repeat and connections[DEFAULT_DB_ALIAS].vendor == "postgresql"
    for _ in range(ATTEMPTS):
        now = _now()
        if in_one_statement:
            counted = _repeat_in_one_statement(r, label, now)
            if counted is not None:
                return Raised(counted, "repeated")
        try:
            # The savepoint (a transaction when the caller has none): a lost race to insert or reopen rolls
            # back only this attempt, and the next one reads what the winner committed.
            with transaction.atomic():
                done = _raise_once(r, actor, label, now)
        except IntegrityError as error:
            if ONE_OPEN_PER_KEY not in str(error):
                raise
            continue
        if done is not None:
            return done
    raise Conflict(f"The escalation of key {r.dedup_key!r} kept changing; try again.", field="dedup_key")


def raise_by_agent(
    *,
    level: str,
    title: str,
    summary: str,
    dedup_key: str,
    service: str,
    context: dict[str, Any],
    actor: Actor,
) -> Raised:
    """An escalation an agent raises itself (trigger `agent`), its key namespaced by the agent so that two
    agents never share one: `agent:<agent name>:<key>`. Reviewers and operators may raise one too
    (`user:<user name>:<key>`); viewers may not."""
    if actor.agent is not None:
        namespace = f"agent:{actor.agent.name}"
    elif roles.is_reviewer(_user_of(actor)):
        namespace = f"user:{actor.user.get_username()}"
    else:
        raise Forbidden("Only agents, reviewers and operators raise escalations.")
    if selectors.trigger(TriggerKind.AGENT) is None:
        raise Forbidden(
            "Escalations raised through the API are turned off (the trigger `agent` is disabled)."
        )
    key = (dedup_key or "").strip()
    if not key:
        raise InvalidInput("A dedup key is required.", field="dedup_key")
    return raise_escalation(
        Raise(
            trigger=TriggerKind.AGENT,
            dedup_key=f"{namespace}:{key}",
            level=level,
            title=title,
            summary=summary,
            service=service,
            context=context,
        ),
        actor=actor,
    )


def _check(r: Raise) -> None:
    if r.level not in LEVEL_RANK:
        raise InvalidInput(f"must be one of {', '.join(LEVELS)}", field="level")
    if r.trigger not in TRIGGERS:
        raise InvalidInput(f"no trigger is named {r.trigger!r}", field="trigger")
    if not r.dedup_key or len(r.dedup_key) > KEY_CHARS:
        raise InvalidInput(f"A dedup key of 1 to {KEY_CHARS} characters is required.", field="dedup_key")
    if not (r.title or "").strip():
        raise InvalidInput("A title is required.", field="title")
    if len(r.service) > SERVICE_CHARS:
        raise InvalidInput(f"A service's name has at most {SERVICE_CHARS} characters.", field="service")
    if not isinstance(r.context, dict):
        raise InvalidInput("must be a JSON object", field="context")
    if r.occurrences < 1:
        raise ValueError(f"a raise stands for at least one occurrence, not {r.occurrences}")
    unknown = set(r.links) - LINKS
    if unknown:
        raise ValueError(
            f"unknown escalation links: {', '.join(sorted(unknown))} (known: {', '.join(sorted(LINKS))})"
        )


def _raise_once(r: Raise, actor: Actor | None, label: str, now: datetime) -> Raised | None:
    """One attempt, inside a transaction: None when another writer moved the escalation first."""
    current = Escalation.objects.filter(dedup_key=r.dedup_key, state__in=NOT_RESOLVED).first()
    if current is not None:
        if not r.count_repeat:
            return Raised(current, "unchanged")
        return _repeat(current, r, label, now)
    recent = _recently_resolved(r.dedup_key, now)
    if recent is not None:
        return _reopen_by_repeat(recent, r, label, now)
    return _create(r, actor, label, now)


def _recently_resolved(key: str, now: datetime) -> Escalation | None:
    window = float(rebound("ESCALATION_REOPEN_WINDOW_SECONDS"))
    if window <= 0:
        return None
    return (
        Escalation.objects.filter(
            dedup_key=key, state=State.RESOLVED, resolved_at__gte=now - timedelta(seconds=window)
        )
        .order_by("-resolved_at", "-id")
        .first()
    )


def _refreshed(r: Raise) -> dict[str, Any]:
    """What a repeat refreshes: the links it names, and the context when it carries one."""
    changes: dict[str, Any] = {name: value for name, value in r.links.items() if value is not None}
    if r.context:
        changes["context"] = r.context
    return changes


def _repeat(current: Escalation, r: Raise, label: str, now: datetime) -> Raised | None:
    """Count a repeat into the escalation not resolved: its occurrences added in one UPDATE (concurrent repeats add
    up, never overwrite), and the level raised if the new one is higher (compare-and-set on the level read, with
    the notice bumped in the same UPDATE). A repeat at the same or a lower level tells nobody."""
    rises = LEVEL_RANK[r.level] > LEVEL_RANK[current.level]
    changes: dict[str, Any] = {
        "occurrences": F("occurrences") + r.occurrences,
        "last_seen_at": now,
        "updated_at": now,
        **_refreshed(r),
    }
    matching = Escalation.objects.filter(pk=current.pk, state__in=NOT_RESOLVED)
    if rises:
        matching = matching.filter(level=current.level)
        changes.update(level=r.level, level_changed_at=now, notice=F("notice") + 1)
    if not matching.update(**changes):
        return None  # resolved, or its level changed, meanwhile: read again
    # Our UPDATE holds the row's lock until commit: what we read back is what we wrote.
    row = Escalation.objects.get(pk=current.pk)
    _event(row.pk, Kind.REPEATED, label, now, data={"occurrences": row.occurrences, "level": r.level})
    if rises:
        _event(
            row.pk,
            Kind.LEVEL_CHANGED,
            label,
            now,
            from_level=current.level,
            to_level=r.level,
            text="raised again at a higher level",
        )
        _notify_on_commit(row)
    return Raised(row, "repeated")


# PostgreSQL, a repeat at a level no higher than the escalation's (nearly every raise): the count, the refresh
# and the `repeated` event in one statement, so one round trip, atomic without a transaction of its own. The
# UPDATE locks the row until the statement commits: concurrent repeats wait and add up; one that finds the row
# resolved or at a lower level meanwhile updates nothing and takes the general path.
_REPEAT_POSTGRES = """
WITH up AS (
    UPDATE {escalation} SET occurrences = occurrences + %s, last_seen_at = %s, updated_at = %s{refresh}
    WHERE dedup_key = %s AND state IN ({not_resolved}) AND level = ANY(%s)
    RETURNING *
), event AS (
    INSERT INTO {event} (escalation_id, kind, actor, from_level, to_level, "text", data, created_at)
    SELECT id, %s, %s, '', '', '', jsonb_build_object('occurrences', occurrences, 'level', %s::text), %s FROM up
)
SELECT {columns} FROM up
"""


def _repeat_in_one_statement(r: Raise, label: str, now: datetime) -> Escalation | None:
    refreshed = sorted(_refreshed(r).items())
    db = connections[DEFAULT_DB_ALIAS]  # the proxy `connection` looks itself up on every attribute
    sql, fields, converted = _repeat_statement(tuple(name for name, _ in refreshed))
    params = [
        column.get_db_prep_value(value, db) for column, (_, value) in zip(fields, refreshed, strict=True)
    ]
    at_or_above = [level for level in LEVELS if LEVEL_RANK[level] >= LEVEL_RANK[r.level]]
    with db.cursor() as cursor:
        cursor.execute(
            sql,
            [r.occurrences, now, now, *params, r.dedup_key, at_or_above, Kind.REPEATED, label, r.level, now],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    # The escalation as the ORM loads it (its JSON decoded by its field), without a RawQuerySet's machinery:
    # that took more CPU than the rest of the raise.
    values = list(row)
    for i, column in converted:
        values[i] = column.from_db_value(values[i], None, db)
    return Escalation.from_db(db.alias, [f.attname for f in Escalation._meta.concrete_fields], values)


@functools.cache
def _repeat_statement(
    refreshed: tuple[str, ...],
) -> tuple[str, list[ModelField[Any, Any]], list[tuple[int, Any]]]:
    """The statement for a repeat refreshing these fields (built once per set of fields), the refreshed fields,
    and the returned columns that need their field's conversion (JSON), by position."""
    quote = connections[DEFAULT_DB_ALIAS].ops.quote_name
    refreshed_fields = []
    for name in refreshed:
        column = Escalation._meta.get_field(name)
        assert isinstance(column, ModelField)
        refreshed_fields.append(column)
    columns = Escalation._meta.concrete_fields
    sql = _REPEAT_POSTGRES.format(
        escalation=quote(Escalation._meta.db_table),
        event=quote(EscalationEvent._meta.db_table),
        refresh="".join(f", {quote(f.column or f.attname)} = %s" for f in refreshed_fields),
        not_resolved=", ".join(f"'{state}'" for state in NOT_RESOLVED),
        columns=", ".join(quote(f.column or f.attname) for f in columns),
    )
    converted = [(i, f) for i, f in enumerate(columns) if hasattr(f, "from_db_value")]
    return sql, refreshed_fields, converted


def _reopen_by_repeat(recent: Escalation, r: Raise, label: str, now: datetime) -> Raised | None:
    """Raised again soon after its resolution: the same escalation, open again (and told again), rather than
    a new one. Compare-and-set on the resolution read; the unique index refuses it if another one with the key
    was opened meanwhile (the caller then counts the repeat into that one)."""
    level = higher(recent.level, r.level)
    changes = {
        **_opened(now),
        "level": level,
        "occurrences": F("occurrences") + r.occurrences,
        "last_seen_at": now,
        **_refreshed(r),
    }
    moved = Escalation.objects.filter(
        pk=recent.pk, state=State.RESOLVED, resolved_at=recent.resolved_at
    ).update(**changes)
    if not moved:
        return None
    row = Escalation.objects.get(pk=recent.pk)
    window = rebound("ESCALATION_REOPEN_WINDOW_SECONDS")
    _event(
        row.pk,
        Kind.REOPENED,
        label,
        now,
        text=f"raised again within {window} s of its resolution",
        data={"resolution": recent.resolution, "auto_resolved": recent.auto_resolved, "level": r.level},
    )
    if level != recent.level:
        _event(
            row.pk,
            Kind.LEVEL_CHANGED,
            label,
            now,
            from_level=recent.level,
            to_level=level,
            text="reopened higher",
        )
    _notify_on_commit(row)
    _count_raised_on_commit(row)
    return Raised(row, "reopened")


def _opened(now: datetime) -> dict[str, Any]:
    """The fields of an escalation open again: not acknowledged, not resolved, its policy timer from now, and a
    new notice."""
    return {
        "state": State.OPEN,
        "acknowledged_by": None,
        "acknowledged_at": None,
        "snoozed_until": None,
        "resolved_by": None,
        "resolved_at": None,
        "resolution": "",
        "auto_resolved": False,
        "level_changed_at": now,
        "notice": F("notice") + 1,
        "updated_at": now,
    }


def _create(r: Raise, actor: Actor | None, label: str, now: datetime) -> Raised:
    """A new escalation. Two raisers of a new key both get here: the unique index lets one insert, and the
    other's IntegrityError sends it back to count its repeat into the winner."""
    runbook = selectors.runbook_for(service=r.service, error_class=r.error_class, trigger=r.trigger)
    row = Escalation(
        level=r.level,
        state=State.OPEN,
        title=r.title.strip()[:TITLE_CHARS],
        summary=r.summary or "",
        trigger=r.trigger,
        dedup_key=r.dedup_key,
        service=r.service,
        error_class=r.error_class,
        raised_by_agent=actor.agent if actor is not None else None,
        raised_by=label,
        occurrences=r.occurrences,
        first_seen_at=now,
        last_seen_at=now,
        level_changed_at=now,
        context=r.context,
        recommended_action=runbook.steps if runbook is not None else "",
        runbook=runbook,
        notice=1,
        created_at=now,
        **{name: value for name, value in r.links.items() if value is not None},
    )
    row.save(force_insert=True)
    _event(row.pk, Kind.RAISED, label, now, to_level=r.level, data={"trigger": r.trigger})
    _notify_on_commit(row)
    _count_raised_on_commit(row)
    return Raised(row, "raised")


# --- automatic resolution ----------------------------------------------------------------------------------------


def auto_resolve(keys: Iterable[str], *, reason: str) -> int:
    """The condition behind these keys cleared: each escalation not resolved with one of them is resolved by
    the system (auto_resolved, the reason as its resolution). Compare-and-set; answers how many."""
    wanted = list(dict.fromkeys(k for k in keys if k))
    if not wanted:
        return 0
    why = (reason or "").strip()[:TEXT_CHARS] or "the condition behind it cleared"
    found = Escalation.objects.filter(dedup_key__in=wanted, state__in=NOT_RESOLVED).order_by("id")
    resolved = 0
    for row in found[:BATCH]:
        now = _now()
        with transaction.atomic():
            moved = Escalation.objects.filter(pk=row.pk, state__in=NOT_RESOLVED).update(
                state=State.RESOLVED,
                resolved_by=None,
                resolved_at=now,
                resolution=why,
                auto_resolved=True,
                snoozed_until=None,
                updated_at=now,
            )
            if not moved:
                continue
            _event(row.pk, Kind.RESOLVED, SYSTEM, now, text=why, data={"auto_resolved": True})
            _observe_on_commit(metrics.escalation_time_to_resolve_seconds, row, now)
        resolved += 1
    return resolved


# --- the human acts ----------------------------------------------------------------------------------------------


def _reviewer(actor: Actor) -> Any:
    user = _user_of(actor)
    if actor.agent is not None or not roles.is_reviewer(user):
        raise Forbidden("Only reviewers and operators work the escalation queue.")
    return user


def _refuse_unless(row: Escalation, allowed: tuple[str, ...], verb: str) -> None:
    """A 409 naming the escalation's state when the act does not apply to it (acting on a resolved one, or
    twice)."""
    if row.state not in allowed:
        ones = ", ".join(allowed[:-1]) + (" or " if len(allowed) > 1 else "") + allowed[-1]
        raise Conflict(
            f"Escalation {row.pk} is {row.state}: only an escalation that is {ones} can be {verb}.",
            field="state",
        )


def _kept_changing(escalation_id: int | str) -> Conflict:
    return Conflict(f"Escalation {escalation_id} kept changing; look at it again.", field="state")


def acknowledge(*, escalation_id: int, actor: Actor) -> Escalation:
    """open or snoozed -> acknowledged (a snooze ends): someone is on it, and the policy stops raising it."""
    user = _reviewer(actor)
    for _ in range(ATTEMPTS):
        row = selectors.get_escalation(escalation_id)
        _refuse_unless(row, (State.OPEN, State.SNOOZED), "acknowledged")
        now = _now()
        with transaction.atomic():
            fields = {"acknowledged_by": user, "acknowledged_at": now, "snoozed_until": None}
            if not _move(row, State.ACKNOWLEDGED, now, fields):
                continue
            _event(row.pk, Kind.ACKNOWLEDGED, actor.label, now, user=user)
            _audit(
                actor, "escalation.acknowledge", row, "", {"state": row.state}, {"state": State.ACKNOWLEDGED}
            )
            _observe_on_commit(metrics.escalation_time_to_acknowledge_seconds, row, now)
        return selectors.get_escalation(row.pk)
    raise _kept_changing(escalation_id)


def assign(*, escalation_id: int, username: str, actor: Actor) -> Escalation:
    """Give the escalation to a reviewer or an operator (its state does not change)."""
    _reviewer(actor)
    name = (username or "").strip()
    assignee = get_user_model().objects.filter(username=name).first() if name else None
    if assignee is None or not roles.is_reviewer(assignee):
        raise InvalidInput(f"No reviewer or operator is named {name[:150]!r}.", field="user")
    for _ in range(ATTEMPTS):
        row = selectors.get_escalation(escalation_id)
        _refuse_unless(row, NOT_RESOLVED, "assigned")
        if row.assignee_id == assignee.pk:
            raise Conflict(f"Escalation {row.pk} is already assigned to {name}.", field="user")
        before = row.assignee.get_username() if row.assignee is not None else None
        now = _now()
        with transaction.atomic():
            moved = Escalation.objects.filter(
                pk=row.pk, state__in=NOT_RESOLVED, assignee_id=row.assignee_id
            ).update(assignee=assignee, updated_at=now)
            if not moved:
                continue
            _event(
                row.pk,
                Kind.ASSIGNED,
                actor.label,
                now,
                user=_user_of(actor),
                text=name,
                data={"from": before},
            )
            _audit(actor, "escalation.assign", row, "", {"assignee": before}, {"assignee": name})
        return selectors.get_escalation(row.pk)
    raise _kept_changing(escalation_id)


def comment(*, escalation_id: int, text: str, actor: Actor) -> EscalationEvent:
    """A note on an escalation not resolved (its state does not change)."""
    _reviewer(actor)
    said = (text or "").strip()
    if not said:
        raise InvalidInput("A comment needs some text.", field="text")
    said = said[:TEXT_CHARS]
    row = selectors.get_escalation(escalation_id)
    _refuse_unless(row, NOT_RESOLVED, "commented on")
    now = _now()
    with transaction.atomic():
        # A compare-and-set too: a resolution that commits meanwhile is not commented on afterwards.
        if not Escalation.objects.filter(pk=row.pk, state__in=NOT_RESOLVED).update(updated_at=now):
            row = selectors.get_escalation(row.pk)
            _refuse_unless(row, NOT_RESOLVED, "commented on")
            raise _kept_changing(escalation_id)
        event = _event(row.pk, Kind.COMMENTED, actor.label, now, user=_user_of(actor), text=said)
        _audit(actor, "escalation.comment", row, said, None, {"comment": event.pk})
    return event


def snooze(*, escalation_id: int, until: datetime, reason: str, actor: Actor) -> Escalation:
    """Mute an escalation not resolved until a time (at most 30 days ahead; a reason required): the policy does
    not raise it meanwhile, and it opens again (notified again) at that time. A snoozed one may be snoozed to
    another time."""
    user = _reviewer(actor)
    why = audit.require_reason(reason)[:TEXT_CHARS]
    now = _now()
    if until is None or timezone.is_naive(until):
        raise InvalidInput("A time with its zone is required.", field="until")
    if until <= now:
        raise InvalidInput("The snooze must end in the future.", field="until")
    if until > now + MAX_SNOOZE:
        raise InvalidInput(f"A snooze lasts at most {MAX_SNOOZE.days} days.", field="until")
    for _ in range(ATTEMPTS):
        row = selectors.get_escalation(escalation_id)
        _refuse_unless(row, NOT_RESOLVED, "snoozed")
        now = _now()
        with transaction.atomic():
            if not _move(row, State.SNOOZED, now, {"snoozed_until": until}, same_snooze=True):
                continue
            _event(
                row.pk, Kind.SNOOZED, actor.label, now, user=user, text=why, data={"until": until.isoformat()}
            )
            before = {
                "state": row.state,
                "snoozed_until": row.snoozed_until.isoformat() if row.snoozed_until else None,
            }
            _audit(
                actor,
                "escalation.snooze",
                row,
                why,
                before,
                {"state": State.SNOOZED, "snoozed_until": until.isoformat()},
            )
        return selectors.get_escalation(row.pk)
    raise _kept_changing(escalation_id)


def resolve(*, escalation_id: int, resolution: str, actor: Actor) -> Escalation:
    """open, acknowledged or snoozed -> resolved, saying what was done. The key is free again: raised again
    within the reopen window, this one reopens; later, a new one starts."""
    user = _reviewer(actor)
    said = (resolution or "").strip()
    if not said:
        raise InvalidInput("A resolution is required: say what was done.", field="resolution")
    said = said[:TEXT_CHARS]
    for _ in range(ATTEMPTS):
        row = selectors.get_escalation(escalation_id)
        _refuse_unless(row, NOT_RESOLVED, "resolved")
        now = _now()
        fields = {
            "resolved_by": user,
            "resolved_at": now,
            "resolution": said,
            "auto_resolved": False,
            "snoozed_until": None,
        }
        with transaction.atomic():
            if not _move(row, State.RESOLVED, now, fields):
                continue
            _event(row.pk, Kind.RESOLVED, actor.label, now, user=user, text=said)
            _audit(actor, "escalation.resolve", row, said, {"state": row.state}, {"state": State.RESOLVED})
            _observe_on_commit(metrics.escalation_time_to_resolve_seconds, row, now)
        return selectors.get_escalation(row.pk)
    raise _kept_changing(escalation_id)


def reopen(*, escalation_id: int, reason: str, actor: Actor) -> Escalation:
    """resolved -> open (notified again; its policy timer from now). Refused (409) while another escalation
    with the same key is open: work that one."""
    user = _reviewer(actor)
    why = (reason or "").strip()[:TEXT_CHARS]
    for _ in range(ATTEMPTS):
        row = selectors.get_escalation(escalation_id)
        _refuse_unless(row, (State.RESOLVED,), "reopened")
        now = _now()
        try:
            with transaction.atomic():
                moved = Escalation.objects.filter(pk=row.pk, state=State.RESOLVED).update(**_opened(now))
                if not moved:
                    continue
                fresh = Escalation.objects.get(pk=row.pk)
                _event(row.pk, Kind.REOPENED, actor.label, now, user=user, text=why)
                before = {"state": row.state, "resolution": row.resolution}
                _audit(actor, "escalation.reopen", row, why, before, {"state": State.OPEN})
                _notify_on_commit(fresh)
        except IntegrityError as error:
            if ONE_OPEN_PER_KEY not in str(error):
                raise
            other = Escalation.objects.filter(dedup_key=row.dedup_key, state__in=NOT_RESOLVED).first()
            raise Conflict(
                f"Escalation {other.pk if other else '?'} with the same key is {other.state if other else 'open'}: "
                "work that one.",
                field="state",
            ) from None
        return selectors.get_escalation(row.pk)
    raise _kept_changing(escalation_id)


def _move(
    row: Escalation, to_state: str, now: datetime, fields: dict[str, Any], *, same_snooze: bool = False
) -> bool:
    """Compare-and-set the escalation's state from the one read (for a snoozed one being snoozed again, its end
    too). False: someone moved it first, nothing written."""
    matching = Escalation.objects.filter(pk=row.pk, state=row.state)
    if same_snooze and row.state == State.SNOOZED:
        matching = matching.filter(snoozed_until=row.snoozed_until)
    return bool(matching.update(state=to_state, updated_at=now, **fields))


def _audit(
    actor: Actor,
    action: str,
    row: Escalation,
    reason: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    audit.record(actor, action, row, reason=reason, before=before, after=after)


# --- the policy's timers (beat) ----------------------------------------------------------------------------------


def apply_policy(now: datetime | None = None) -> int:
    """Each enabled step of the escalation policy: escalations still open (not acknowledged, not snoozed) at
    its from_level whose level last changed `after_s` ago or more go to its to_level (told again). Each step
    restarts the timer, so one pass moves an escalation one step at most. Idempotent; safe in several
    processes at once (compare-and-set on level and timer). Answers how many moved."""
    now = now or _now()
    moved = 0
    for step in EscalationPolicy.objects.filter(enabled=True).order_by("id"):
        if LEVEL_RANK.get(step.to_level, -1) <= LEVEL_RANK.get(step.from_level, 99):
            log.warning("escalation policy step %s never lowers a level: skipped", step)
            continue
        due = now - timedelta(seconds=step.after_s)
        waiting = Escalation.objects.filter(
            state=State.OPEN, level=step.from_level, level_changed_at__lte=due
        ).order_by("level_changed_at", "id")
        for pk in list(waiting.values_list("pk", flat=True)[:BATCH]):
            moved += _escalate(pk, step, due, now)
    return moved


def _escalate(pk: int, step: EscalationPolicy, due: datetime, now: datetime) -> int:
    with transaction.atomic():
        if not Escalation.objects.filter(
            pk=pk, state=State.OPEN, level=step.from_level, level_changed_at__lte=due
        ).update(level=step.to_level, level_changed_at=now, notice=F("notice") + 1, updated_at=now):
            return 0  # acknowledged, snoozed, resolved or raised meanwhile
        row = Escalation.objects.get(pk=pk)
        _event(
            pk,
            Kind.LEVEL_CHANGED,
            POLICY,
            now,
            from_level=step.from_level,
            to_level=step.to_level,
            text=f"not acknowledged within {step.after_s} s at {step.from_level}",
        )
        _notify_on_commit(row)
    return 1


def wake_snoozed(now: datetime | None = None) -> int:
    """Snoozed escalations whose snooze ended open again and are told again (they need attention again); the
    policy's timer restarts from now. Idempotent. Answers how many woke."""
    now = now or _now()
    woke = 0
    due = Escalation.objects.filter(state=State.SNOOZED, snoozed_until__lte=now).order_by(
        "snoozed_until", "id"
    )
    for pk, until in list(due.values_list("pk", "snoozed_until")[:BATCH]):
        with transaction.atomic():
            if not Escalation.objects.filter(pk=pk, state=State.SNOOZED, snoozed_until=until).update(
                state=State.OPEN,
                snoozed_until=None,
                level_changed_at=now,
                notice=F("notice") + 1,
                updated_at=now,
            ):
                continue
            row = Escalation.objects.get(pk=pk)
            _event(
                pk,
                Kind.WOKE,
                SYSTEM,
                now,
                text=f"snoozed until {until}",
                data={"until": until.isoformat() if until else None},
            )
            _notify_on_commit(row)
        woke += 1
    return woke


# --- history, notices and metrics ---------------------------------------------------------------------------------


def record_event(
    escalation_id: int,
    kind: str,
    *,
    actor: str,
    text: str = "",
    data: dict[str, Any] | None = None,
    user: Any = None,
) -> EscalationEvent:
    """One row of an escalation's history written by another room (notifications: "notified")."""
    if kind not in Kind.values:
        raise ValueError(f"unknown escalation event kind {kind!r}")
    return _event(escalation_id, kind, actor, _now(), text=text, data=data, user=user)


def _event(
    escalation_id: int,
    kind: str,
    actor: str,
    now: datetime,
    *,
    user: Any = None,
    from_level: str = "",
    to_level: str = "",
    text: str = "",
    data: dict[str, Any] | None = None,
) -> EscalationEvent:
    return EscalationEvent.objects.create(
        escalation_id=escalation_id,
        kind=kind,
        actor=actor[:200],
        user=user,
        from_level=from_level,
        to_level=to_level,
        text=text,
        data=data or {},
        created_at=now,
    )


def _notify_on_commit(row: Escalation) -> None:
    """Tell the channels once the change is committed (never a notice for a change rolled back)."""
    pk, notice, level = row.pk, row.notice, row.level
    transaction.on_commit(
        lambda: signals.notice_due.send_robust(
            sender=Escalation, escalation_id=pk, notice=notice, level=level
        )
    )


def _count_raised_on_commit(row: Escalation) -> None:
    trigger, level = row.trigger, row.level
    transaction.on_commit(lambda: metrics.escalations_raised_total.labels(trigger=trigger, level=level).inc())


def _observe_on_commit(histogram: Histogram, row: Escalation, now: datetime) -> None:
    """How long the escalation waited, from when it last opened (raised or reopened) to `now`, by level."""
    opened = selectors.latest_opening(row.pk)
    since = opened.created_at if opened is not None else row.first_seen_at
    seconds, level = max(0.0, (now - since).total_seconds()), row.level
    transaction.on_commit(lambda: histogram.labels(level=level).observe(seconds))

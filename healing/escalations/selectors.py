"""Reads of the escalation review queue: the queue itself, one escalation with its history, the triggers in
force (cached per process), the open keys a trigger auto-resolves, the runbook for an escalation, and the open
counts the metrics read at scrape time. Writes live in healing.escalations.services."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

from django.db.models import Case, Count, IntegerField, Prefetch, Q, QuerySet, Value, When

from core.access.models import Agent
from core.api.errors import InvalidInput, NotFound
from healing.escalations.models import (
    LEVEL_RANK,
    LEVELS,
    NOT_RESOLVED,
    Escalation,
    EscalationEvent,
    EscalationTrigger,
    Runbook,
    State,
)

# An id in a URL: a whole number that fits a bigint (anything else is simply not found).
_ID = re.compile(r"[0-9]{1,18}")
STATES = [s.value for s in State]


# --- the queue ---------------------------------------------------------------------------------------------------


def queue(
    *,
    state: str | None = None,
    level: str | None = None,
    service: str | None = None,
    assignee: str | None = None,
    mine: Any = None,
    agent: Agent | None = None,
) -> QuerySet[Escalation]:
    """Not resolved first, then by level (emergency first), then oldest first. `assignee` is a user name; `mine`
    a user (only those assigned to them); `agent`: only the escalations that agent raised."""
    if state and state not in STATES:
        raise InvalidInput(f"must be one of {', '.join(STATES)}", field="state")
    if level and level not in LEVEL_RANK:
        raise InvalidInput(f"must be one of {', '.join(LEVELS)}", field="level")
    qs = _escalations()
    if state:
        qs = qs.filter(state=state)
    if level:
        qs = qs.filter(level=level)
    if service:
        qs = qs.filter(service=service)
    if assignee:
        qs = qs.filter(assignee__username=assignee)
    if mine is not None:
        qs = qs.filter(assignee_id=getattr(mine, "pk", None))
    if agent is not None:
        qs = qs.filter(raised_by_agent=agent)
    resolved_last = Case(
        When(state=State.RESOLVED, then=Value(1)), default=Value(0), output_field=IntegerField()
    )
    # Highest rank first: the rank of each level, negated.
    by_level = Case(
        *(When(level=name, then=Value(-rank)) for name, rank in LEVEL_RANK.items()),
        default=Value(0),
        output_field=IntegerField(),
    )
    return qs.annotate(_resolved_last=resolved_last, _by_level=by_level).order_by(
        "_resolved_last", "_by_level", "first_seen_at", "id"
    )


def open_queue(*, agent: Agent | None = None) -> QuerySet[Escalation]:
    """The queue's escalations not resolved yet (open, acknowledged or snoozed), in its order; an agent's own
    only when `agent` is given (rebound://escalations/open)."""
    return queue(agent=agent).filter(state__in=NOT_RESOLVED)


def _escalations() -> QuerySet[Escalation]:
    return Escalation.objects.select_related(
        "assignee", "acknowledged_by", "resolved_by", "raised_by_agent", "runbook"
    )


def get_escalation(escalation_id: int | str, *, agent: Agent | None = None) -> Escalation:
    """One escalation; NotFound for no such id, or (for an agent) one another agent raised."""
    return _one(_escalations(), escalation_id, agent)


def detail(escalation_id: int | str, *, agent: Agent | None = None) -> Escalation:
    """One escalation with its events (oldest first) and its deliveries (newest first) prefetched."""
    events = EscalationEvent.objects.select_related("user").order_by("created_at", "id")
    # The deliveries live a floor above (healing.notifications): reached by the reverse name, never imported.
    delivery = Escalation._meta.get_field("deliveries").related_model
    deliveries = delivery._default_manager.select_related("channel").order_by("-created_at", "-id")
    found = _escalations().prefetch_related(
        Prefetch("events", queryset=events), Prefetch("deliveries", queryset=deliveries)
    )
    return _one(found, escalation_id, agent)


def _one(found: QuerySet[Escalation], escalation_id: int | str, agent: Agent | None) -> Escalation:
    row = None
    if isinstance(escalation_id, int) or _ID.fullmatch(escalation_id or ""):
        if agent is not None:
            found = found.filter(raised_by_agent=agent)
        row = found.filter(pk=int(escalation_id)).first()
    if row is None:
        raise NotFound(f"No escalation {escalation_id}.", field="id")
    return row


def latest_opening(escalation_id: int) -> EscalationEvent | None:
    """The event that last opened the escalation (raised or reopened): the time to acknowledge or to resolve
    counts from it."""
    return (
        EscalationEvent.objects.filter(
            escalation_id=escalation_id,
            kind__in=(EscalationEvent.Kind.RAISED, EscalationEvent.Kind.REOPENED),
        )
        .order_by("-created_at", "-id")
        .first()
    )


# --- what the triggers read ----------------------------------------------------------------------------------------

# The triggers are read on hot paths (every stored error): each process keeps them this long. An edit is in
# force everywhere within that time, and at once in the process that made it (on_trigger_change).
TRIGGER_CACHE_S = 5.0
_lock = threading.Lock()
_triggers: dict[str, Any] = {"expires": 0.0, "rows": {}}


def trigger(kind: str) -> EscalationTrigger | None:
    """The trigger of this kind if it is enabled, else None (a disabled trigger raises nothing)."""
    now = time.monotonic()
    if now >= _triggers["expires"]:
        rows = {row.kind: row for row in EscalationTrigger.objects.all()}
        with _lock:
            _triggers["rows"] = rows
            _triggers["expires"] = now + TRIGGER_CACHE_S
    found: EscalationTrigger | None = _triggers["rows"].get(kind)
    return found if found is not None and found.enabled else None


def clear_trigger_cache() -> None:
    """Forget the cached triggers (tests; caches.reset_all; a trigger saved in this process)."""
    with _lock:
        _triggers["rows"] = {}
        _triggers["expires"] = 0.0


def on_trigger_change(sender: object, **_: object) -> None:
    """Receiver of EscalationTrigger's post_save and post_delete (connected in HealingConfig.ready())."""
    clear_trigger_cache()


def open_escalations(*, trigger: str) -> QuerySet[Escalation]:
    """The escalations of this trigger not resolved yet (what its auto-resolve looks at)."""
    return Escalation.objects.filter(trigger=trigger, state__in=NOT_RESOLVED)


def open_keys(*, trigger: str, service: str | None = None) -> list[str]:
    found = open_escalations(trigger=trigger)
    if service is not None:
        found = found.filter(service=service)
    return list(found.order_by("dedup_key").values_list("dedup_key", flat=True))


def runbook_for(*, service: str, error_class: str, trigger: str) -> Runbook | None:
    """The enabled runbook that matches: each of its service, error class and trigger blank (any) or equal.
    The most specific wins (the most fields set), then the lowest priority, then the oldest."""
    specific = sum(
        (
            Case(When(**{name: ""}, then=Value(0)), default=Value(1), output_field=IntegerField())
            for name in ("service", "error_class", "trigger")
        ),
        Value(0),
    )
    return (
        Runbook.objects.filter(enabled=True)
        .filter(Q(service="") | Q(service=service))
        .filter(Q(error_class="") | Q(error_class=error_class))
        .filter(Q(trigger="") | Q(trigger=trigger))
        .annotate(_specific=specific)
        .order_by("-_specific", "priority", "id")
        .first()
    )


# --- counts ------------------------------------------------------------------------------------------------------


def open_counts(service: str | None = None) -> dict[str, int]:
    """Escalations not resolved (open, acknowledged or snoozed), by level; every level present. Of one service
    when named (None: every escalation, the metrics' count)."""
    counts = dict.fromkeys(LEVELS, 0)
    found = Escalation.objects.filter(state__in=NOT_RESOLVED)
    if service is not None:
        found = found.filter(service=service)
    rows = found.order_by().values_list("level").annotate(n=Count("id"))
    for level, n in rows:
        counts[level] = n
    return counts


def open_by_service() -> dict[str, dict[str, int]]:
    """Escalations not resolved, by service then level (only the levels present): one GROUP BY query. The
    escalations that name no service are under ""."""
    counts: dict[str, dict[str, int]] = {}
    rows = (
        Escalation.objects.filter(state__in=NOT_RESOLVED)
        .order_by()
        .values_list("service", "level")
        .annotate(n=Count("id"))
    )
    for service, level, n in rows:
        counts.setdefault(service, {})[level] = n
    return counts


def newest_open(service: str | None = None, limit: int = 5) -> list[Escalation]:
    """The newest escalations not resolved (first raised last first), of one service or of every service
    (None): one query."""
    found = Escalation.objects.filter(state__in=NOT_RESOLVED)
    if service is not None:
        found = found.filter(service=service)
    return list(found.order_by("-first_seen_at", "-id")[:limit])

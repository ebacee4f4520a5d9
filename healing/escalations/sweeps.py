"""The beat sweep of the escalation triggers (healing.escalations.tasks.sweep_triggers, every 30 s): what time
alone makes true or false, which no single event announces.

- 11. breaker_open_too_long: an essential service whose breaker has not closed for longer than the trigger's
  `duration_s` (an open breaker that lets a trial call through and opens again is the same outage: counted from
  when it left closed). Raised with count_repeat=False, so that every sweep re-finding it changes nothing, and
  once per outage: one a human resolved while the breaker stayed open is not raised again until it closes and
  opens anew. Resolved here too once the breaker is closed, should the transition's signal have been missed.
- heartbeat_missed: resolved once the task is no longer stale (a heartbeat or a checkpoint cleared stale_at) or
  has ended. (Raised by event: recovery's mark_stale sends tasks_went_stale, event_triggers.py.)
- the error triggers' own sweep (error_triggers.sweep_rates: repeated patterns and error rates back under their
  thresholds).

Idempotent: running it twice, or in two processes at once, raises and resolves nothing more than once. Each
part runs even if another fails (logged)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from django.utils import timezone

from healing.escalations import error_triggers, selectors
from healing.escalations.event_triggers import breaker_key, heartbeat_key, raise_if_enabled, resolve
from healing.escalations.models import Escalation, State, TriggerKind
from recovery.breakers import selectors as breaker_selectors
from recovery.checkpoints import selectors as checkpoint_selectors

log = logging.getLogger(__name__)

DEFAULT_DURATION_S = 600  # where an operator blanked the trigger's duration_s (the built-in row carries it)
NOT_CLOSED = ("open", "half_open")  # the automatic states of a breaker that stops calls
CLOSED = "closed"


def sweep(now: datetime | None = None) -> dict[str, int]:
    """One pass of every time-based trigger; how many escalations each part raised or resolved."""
    now = now or timezone.now()
    parts: dict[str, Callable[[], int]] = {
        "breakers_raised": lambda: raise_long_open_breakers(now),
        "breakers_resolved": resolve_closed_breakers,
        "heartbeats_resolved": resolve_live_tasks,
        "rates_resolved": lambda: error_triggers.sweep_rates(now),
    }
    done: dict[str, int] = {}
    for name, part in parts.items():
        try:
            done[name] = part()
        except Exception:
            log.exception("escalation sweep: %s failed", name)
            done[name] = 0
    return done


# --- 11: essential services' breakers open too long --------------------------------------------------------


def raise_long_open_breakers(now: datetime) -> int:
    rule = selectors.trigger(TriggerKind.BREAKER_OPEN_TOO_LONG)
    if rule is None:
        return 0
    limit = timedelta(seconds=rule.duration_s or DEFAULT_DURATION_S)
    raised = 0
    for service in breaker_selectors.essential_services():
        # An operator's override is a human's decision already: only the automatic states count.
        if breaker_selectors.effective_state(service) not in NOT_CLOSED:
            continue
        since, opened_by = breaker_selectors.outage_start(service)
        if since is None or now - since < limit:
            continue
        dedup_key = breaker_key(service.name)
        if _resolved_since(dedup_key, since):
            continue
        minutes = (now - since).total_seconds() / 60
        done = raise_if_enabled(
            TriggerKind.BREAKER_OPEN_TOO_LONG,
            dedup_key,
            title=f"The breaker of essential service {service.name} has been open for {minutes:.0f} minutes",
            summary=(
                f"Not closed since {since.isoformat()} (longer than {limit.total_seconds():g} s): agents' calls "
                f"to {service.name} are refused or limited to trial calls."
                + (f" It opened because: {opened_by.reason}" if opened_by is not None else "")
            ),
            service=service.name,
            context={"open_since": since.isoformat(), "limit_s": limit.total_seconds()},
            links={"breaker_transition_id": opened_by.pk} if opened_by is not None else {},
            count_repeat=False,
        )
        raised += done is not None and done.outcome != "unchanged"
    return raised


def _resolved_since(dedup_key: str, since: datetime) -> bool:
    """An escalation of this key resolved after the outage began: this outage was dealt with by a human (or the
    breaker closed meanwhile and opened again, when `since` is later)."""
    return Escalation.objects.filter(
        dedup_key=dedup_key, state=State.RESOLVED, resolved_at__gte=since
    ).exists()


def resolve_closed_breakers() -> int:
    """The open breaker_open_too_long escalations whose breaker is closed now (the closing's signal missed)."""
    names = set(
        selectors.open_escalations(trigger=TriggerKind.BREAKER_OPEN_TOO_LONG).values_list(
            "service", flat=True
        )
    )
    closed = [
        service.name
        for service in breaker_selectors.services().filter(name__in=names)
        if breaker_selectors.effective_state(service) == CLOSED
    ]
    return sum(resolve([breaker_key(name)], f"the breaker of {name} is closed") for name in closed)


# --- heartbeats ----------------------------------------------------------------------------------------------


def resolve_live_tasks() -> int:
    """The open heartbeat_missed escalations whose task is no longer stale, has ended, or is gone."""
    keys = selectors.open_keys(trigger=TriggerKind.HEARTBEAT_MISSED)
    by_task: dict[int, str] = {}
    for dedup_key in keys:
        tail = dedup_key.rsplit(":", 1)[-1]
        if tail.isdigit():
            by_task[int(tail)] = dedup_key
    if not by_task:
        return 0
    still = set(checkpoint_selectors.stale_tasks().filter(pk__in=list(by_task)).values_list("pk", flat=True))
    live = [heartbeat_key(pk) for pk in by_task if pk not in still]
    return resolve(live, "the task is no longer stale: it sent a heartbeat or a checkpoint, or it ended")

"""get_error_status: what is broken now, for one service or the fleet. Breakers (state, why, until when), errors
by class and severity over a window, the busiest patterns, the open escalations and the degradation level in
force, each read through its room's selectors (the bulk reads of the console's fleet page: the fleet's answer
costs the same queries for 3 services as for 300)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from django.utils import timezone
from pydantic import BaseModel, Field

from core.slugs import Slug
from healing.escalations import selectors as escalation_selectors
from healing.escalations.models import Escalation
from mcp_server import callers
from mcp_server.running import tool
from recovery.breakers import registry
from recovery.breakers import selectors as breaker_selectors
from recovery.breakers.models import BreakerTransition, Service
from recovery.degradation import selectors as degradation_selectors
from recovery.errors import selectors as error_selectors
from recovery.errors.models import ErrorPattern

MAX_LISTED = 50  # the fleet's breakers listed (the worst); `more` counts the rest
TOP_PATTERNS = 5
NEWEST_ESCALATIONS = 5
# Worst first: a breaker that blocks calls, then one letting trials through, then one nobody can read, then one
# pinned closed by an operator. Closed breakers are not listed in the fleet's answer.
STATE_RANK = {"open": 0, "forced_open": 0, "half_open": 1, "unknown": 2, "forced_closed": 3, "disabled": 3}


# --- the answer ------------------------------------------------------------------------------------------------


class OverrideOut(BaseModel):
    mode: str = Field(description="forced_open, forced_closed or disabled (the breaker never blocks).")
    reason: str
    until: datetime | None = Field(description="When the override lapses; null: until an operator lifts it.")
    set_by: str | None = Field(description="Who set it: `user <name>`, `agent <name>`; null when unknown.")


class BreakerStatusOut(BaseModel):
    service: str
    criticality: str = Field(description="essential or non_critical.")
    state: str = Field(
        description="What a call finds now: closed, open, half_open, or an override in force (forced_open, "
        "forced_closed, disabled); unknown when the breaker store cannot be read."
    )
    automatic_state: str = Field(description="The breaker's own state, under any override.")
    why: str | None = Field(
        description="The override's reason, else the reason of the breaker's last change."
    )
    since: datetime | None = Field(description="When the breaker last changed state; null: never.")
    until: datetime | None = Field(
        description="Open: when it lets a trial call through. Forced: when the override lapses. Else null."
    )
    override: OverrideOut | None = Field(description="The operator's override in force, if any.")


class BreakersOut(BaseModel):
    by_state: dict[str, int] = Field(
        description="How many breakers are in each state (the service's one alone)."
    )
    listed: list[BreakerStatusOut] = Field(
        description=f"The service's breaker; for the fleet every breaker not closed, worst first (at most "
        f"{MAX_LISTED})."
    )
    more: int = Field(description="Breakers not closed beyond those listed.")


class ErrorCountOut(BaseModel):
    error_class: str
    severity: str
    count: int


class ErrorsOut(BaseModel):
    total: int = Field(description="Errors reported in the window.")
    by_class: dict[str, int]
    by_severity: dict[str, int]
    by_class_and_severity: list[ErrorCountOut] = Field(description="Largest count first.")


class PatternOut(BaseModel):
    id: int
    service: str
    error_class: str
    severity: str
    message_template: str = Field(description="The error's message with its variable parts replaced.")
    count_in_window: int
    total_count: int = Field(description="Since the pattern was first seen.")
    last_seen_at: datetime


class EscalationBriefOut(BaseModel):
    id: int
    level: str = Field(description="info, warning, critical or emergency.")
    state: str = Field(description="open, acknowledged or snoozed.")
    title: str
    service: str = Field(description="Empty when it names no service.")
    trigger: str = Field(description="What raised it (a trigger's kind, or `agent`).")
    occurrences: int
    opened_at: datetime = Field(description="When it was first raised.")


class EscalationsOut(BaseModel):
    open: int = Field(description="Escalations not resolved (open, acknowledged or snoozed).")
    by_level: dict[str, int]
    newest: list[EscalationBriefOut] = Field(description=f"The {NEWEST_ESCALATIONS} raised last.")


class DegradationOut(BaseModel):
    scope: str = Field(
        description="Whose level this is: `*` for the fleet's, or the service's own (the worse)."
    )
    level: str = Field(description="normal, degraded, minimal or emergency.")
    source: str = Field(description="automatic (a rule) or operator.")
    reason: str
    since: datetime | None
    until: datetime | None = Field(description="When a forced level lapses; null: no end set, or automatic.")
    forced: bool = Field(description="An operator forced this level.")


class ErrorStatusOut(BaseModel):
    scope: str = Field(description="`fleet` or the service's name.")
    since: datetime = Field(description="The start of the window the errors and patterns are counted over.")
    now: datetime
    breakers: BreakersOut
    errors: ErrorsOut
    top_patterns: list[PatternOut] = Field(description="The busiest patterns of the window, busiest first.")
    escalations: EscalationsOut
    degradation: DegradationOut


# --- the tool --------------------------------------------------------------------------------------------------


@tool(title="Error status", read_only=True)
def get_error_status(
    caller: callers.Caller,
    service: Annotated[
        Slug | None, Field(description="A service's name; leave it out for the whole fleet.")
    ] = None,
    since_minutes: Annotated[
        int, Field(ge=1, le=1440, description="The window errors and patterns are counted over, in minutes.")
    ] = 60,
) -> ErrorStatusOut:
    """What is broken now, for one service or the whole fleet: breakers (state, why, until when), errors by
    class and severity over the last `since_minutes`, the busiest error patterns, open escalations and the
    degradation level in force. Call it before relying on a service, or when calls start failing. Reads only;
    any agent key, or a user key with a role."""
    callers.require_reader(caller, "get_error_status")
    one = breaker_selectors.known_service(service) if service is not None else None
    name = one.name if one is not None else None
    now = timezone.now()
    since = now - timedelta(minutes=since_minutes)
    return ErrorStatusOut(
        scope=name or "fleet",
        since=since,
        now=now,
        breakers=_service_breaker(one) if one is not None else _fleet_breakers(),
        errors=_errors(error_selectors.error_counts(since, name)),
        top_patterns=[
            _pattern(p) for p in error_selectors.busiest_patterns(since, service=name, limit=TOP_PATTERNS)
        ],
        escalations=_escalations(name),
        degradation=_degradation(degradation_selectors.current(name)),
    )


# --- shaping ---------------------------------------------------------------------------------------------------


def _fleet_breakers() -> BreakersOut:
    services = list(breaker_selectors.services())
    states = breaker_selectors.breaker_states(services)
    by_state: dict[str, int] = {}
    for breaker in states.values():
        by_state[breaker.state] = by_state.get(breaker.state, 0) + 1
    broken = sorted(
        (s for s in services if states[s.name].state != "closed"),
        key=lambda s: (
            STATE_RANK.get(states[s.name].state, 2),
            s.criticality != Service.Criticality.ESSENTIAL,
            s.name,
        ),
    )
    listed = broken[:MAX_LISTED]
    details = breaker_selectors.breaker_details(listed)
    setters = breaker_selectors.override_setters(listed)
    return BreakersOut(
        by_state=by_state,
        listed=[_breaker(s, states[s.name].state, details[s.name], setters.get(s.name)) for s in listed],
        more=len(broken) - len(listed),
    )


def _service_breaker(service: Service) -> BreakersOut:
    detail = breaker_selectors.breaker_details([service])[service.name]
    override = registry.override_in_force(service)
    state = override if override != Service.Override.AUTO else detail.automatic_state
    setter = breaker_selectors.override_setters([service]).get(service.name)
    return BreakersOut(by_state={state: 1}, listed=[_breaker(service, state, detail, setter)], more=0)


def _breaker(
    service: Service, state: str, detail: breaker_selectors.BreakerDetail, setter: str | None
) -> BreakerStatusOut:
    forced = registry.override_in_force(service) != Service.Override.AUTO
    last: BreakerTransition | None = detail.last
    if forced:
        until = service.override_until
    elif state == "open":
        until = detail.open_until
    else:
        until = None
    return BreakerStatusOut(
        service=service.name,
        criticality=service.criticality,
        state=state,
        automatic_state=detail.automatic_state,
        why=service.override_reason if forced else (last.reason if last is not None else None),
        since=last.created_at if last is not None else detail.opened_at,
        until=until,
        override=OverrideOut(
            mode=service.override, reason=service.override_reason, until=service.override_until, set_by=setter
        )
        if forced
        else None,
    )


def _errors(rows: list[tuple[str, str, int]]) -> ErrorsOut:
    by_class: dict[str, int] = {}
    by_severity: dict[str, int] = {}
    for error_class, severity, n in rows:
        by_class[error_class] = by_class.get(error_class, 0) + n
        by_severity[severity] = by_severity.get(severity, 0) + n
    return ErrorsOut(
        total=sum(n for _, _, n in rows),
        by_class=by_class,
        by_severity=by_severity,
        by_class_and_severity=[ErrorCountOut(error_class=c, severity=s, count=n) for c, s, n in rows],
    )


def _pattern(row: ErrorPattern) -> PatternOut:
    return PatternOut(
        id=row.pk,
        service=row.service,
        error_class=row.error_class,
        severity=row.severity,
        message_template=row.message_template,
        count_in_window=row.in_window,  # type: ignore[attr-defined]
        total_count=row.total_count,
        last_seen_at=row.last_seen_at,
    )


def _escalations(service: str | None) -> EscalationsOut:
    by_level = escalation_selectors.open_counts(service)
    return EscalationsOut(
        open=sum(by_level.values()),
        by_level=by_level,
        newest=[_escalation(e) for e in escalation_selectors.newest_open(service, NEWEST_ESCALATIONS)],
    )


def _escalation(row: Escalation) -> EscalationBriefOut:
    return EscalationBriefOut(
        id=row.pk,
        level=row.level,
        state=row.state,
        title=row.title,
        service=row.service,
        trigger=row.trigger,
        occurrences=row.occurrences,
        opened_at=row.first_seen_at,
    )


def _degradation(view: degradation_selectors.LevelView) -> DegradationOut:
    return DegradationOut(
        scope=view.scope,
        level=view.level,
        source=view.source,
        reason=view.reason,
        since=view.since,
        until=view.until,
        forced=view.source == "operator",
    )

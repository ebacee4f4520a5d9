"""Graceful degradation: reading the level in force, and what the API shows of it. (Writes: forcing, rules with
hysteresis, expiry live in recovery.degradation.services.)"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet
from django.utils import timezone

from recovery.breakers.models import Service
from recovery.degradation.models import (
    GLOBAL_SCOPE,
    LEVEL_RANK,
    DegradationEvent,
    DegradationLevel,
    DegradationState,
)

Level = DegradationLevel

# Where a service's skip_from_level is blank: non-critical services are skipped from "minimal", essential never.
DEFAULT_SKIP: dict[str, str] = {
    Service.Criticality.NON_CRITICAL.value: Level.MINIMAL.value,
    Service.Criticality.ESSENTIAL.value: "never",
}


@dataclass(frozen=True)
class LevelView:
    scope: str
    level: str
    source: str  # "automatic" or "operator"
    reason: str
    until: datetime | None
    since: datetime | None


def forced_in_force(state: DegradationState, now: datetime | None = None) -> bool:
    if not state.forced_level:
        return False
    return state.forced_until is None or state.forced_until > (now or timezone.now())


def view_of(state: DegradationState | None, scope: str, now: datetime | None = None) -> LevelView:
    if state is None:
        return LevelView(scope, Level.NORMAL.value, "automatic", "", None, None)
    if forced_in_force(state, now):
        return LevelView(
            scope, state.forced_level, "operator", state.forced_reason, state.forced_until, state.changed_at
        )
    return LevelView(
        scope, state.automatic_level, "automatic", state.automatic_reason, None, state.changed_at
    )


def worse(a: LevelView, b: LevelView) -> LevelView:
    return b if LEVEL_RANK[b.level] > LEVEL_RANK[a.level] else a


def current(service: str | None = None) -> LevelView:
    """The level in force: the fleet's, or for a service the worse of the fleet's and its own."""
    scopes = [GLOBAL_SCOPE] + ([service] if service else [])
    rows = {s.scope: s for s in DegradationState.objects.filter(scope__in=scopes)}
    now = timezone.now()
    level = view_of(rows.get(GLOBAL_SCOPE), GLOBAL_SCOPE, now)
    if service:
        level = worse(level, view_of(rows.get(service), service, now))
    return level


def skip_from(service: Service) -> str:
    return service.skip_from_level or DEFAULT_SKIP.get(service.criticality, "never")


def skipped_at(level: str, service: Service) -> bool:
    """Should agents skip this service at this level? Essential services are never skipped by default."""
    start = skip_from(service)
    if start == "never":
        return False
    return LEVEL_RANK[level] >= LEVEL_RANK[start]


# --- what the API and the admin show ---------------------------------------------------------------------


@dataclass(frozen=True)
class ScopeState:
    """One scope in full: the level in force, and the row with the automatic and forced levels behind it."""

    view: LevelView
    state: DegradationState | None
    forced_in_force: bool


def scope_state(scope: str, now: datetime | None = None) -> ScopeState:
    state = DegradationState.objects.select_related("forced_by").filter(scope=scope).first()
    in_force = forced_in_force(state, now) if state is not None else False
    return ScopeState(view_of(state, scope, now), state, in_force)


@dataclass(frozen=True)
class Skip:
    service: str
    criticality: str
    level: str
    skip_from: str


@dataclass(frozen=True)
class Overview:
    fleet: LevelView
    services: list[LevelView]  # every service whose own level is not normal, by name
    skip: list[Skip]  # the services to skip now, non-critical first


def _skip_order(item: Skip) -> tuple[bool, int, str]:
    # Non-critical services first: they are what agents should drop before anything essential.
    essential = item.criticality == Service.Criticality.ESSENTIAL
    return essential, -LEVEL_RANK[item.level], item.service


def overview(now: datetime | None = None) -> Overview:
    """The fleet's level, every service whose own level is not normal, and the services to skip now."""
    now = now or timezone.now()
    rows = {s.scope: s for s in DegradationState.objects.all()}
    fleet = view_of(rows.get(GLOBAL_SCOPE), GLOBAL_SCOPE, now)
    own = {scope: view_of(row, scope, now) for scope, row in rows.items() if scope != GLOBAL_SCOPE}
    raised = {scope: view for scope, view in own.items() if view.level != Level.NORMAL.value}
    candidates = Service.objects.only("name", "criticality", "skip_from_level")
    if fleet.level == Level.NORMAL.value:
        # Only services with a level of their own can be skipped while the fleet is normal: no full scan.
        candidates = candidates.filter(name__in=list(raised))
    skip = []
    for service in candidates:
        level = worse(fleet, raised[service.name]) if service.name in raised else fleet
        if skipped_at(level.level, service):
            skip.append(Skip(service.name, service.criticality, level.level, skip_from(service)))
    return Overview(fleet, [view for _, view in sorted(raised.items())], sorted(skip, key=_skip_order))


@dataclass(frozen=True)
class ServiceLevel:
    service: str
    criticality: str
    level: LevelView  # the worse of the fleet's and the service's own
    skip: bool
    skip_from: str


def for_service(service: Service) -> ServiceLevel:
    """The level in force for one service (the worse of the fleet's and its own), and whether to skip it."""
    view = current(service.name)
    return ServiceLevel(
        service.name, service.criticality, view, skipped_at(view.level, service), skip_from(service)
    )


def events(scope: str | None = None) -> QuerySet[DegradationEvent]:
    qs = DegradationEvent.objects.select_related("actor_user")
    return qs.filter(scope=scope) if scope else qs


# --- the whole fleet at once (the console's fleet page) ------------------------------------------------------


@dataclass(frozen=True)
class Forced:
    """A level an operator forced, in force now: for the banner of everything forced."""

    scope: str
    level: str
    reason: str
    until: datetime | None
    by: str  # the operator's user name ("" when no user forced it)


def levels_of(names: list[str], now: datetime | None = None) -> tuple[dict[str, LevelView], list[Forced]]:
    """The level in force for each named service (the worse of the fleet's and its own, as `current`) and every
    forced level in force (any scope, the fleet first): one query, whatever the number of services."""
    now = now or timezone.now()
    rows = {s.scope: s for s in DegradationState.objects.select_related("forced_by")}
    fleet = view_of(rows.get(GLOBAL_SCOPE), GLOBAL_SCOPE, now)
    levels = {name: worse(fleet, view_of(rows[name], name, now)) if name in rows else fleet for name in names}
    forced = [
        Forced(
            row.scope,
            row.forced_level,
            row.forced_reason,
            row.forced_until,
            row.forced_by.get_username() if row.forced_by is not None else "",
        )
        for row in sorted(rows.values(), key=lambda r: (r.scope != GLOBAL_SCOPE, r.scope))
        if forced_in_force(row, now)
    ]
    return levels, forced

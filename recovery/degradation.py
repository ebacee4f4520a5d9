"""Graceful degradation: reading the level in force. (Writes: forcing, rules with hysteresis, expiry live in
recovery.degradation_services.)"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from recovery.models import GLOBAL_SCOPE, LEVEL_RANK, DegradationLevel, DegradationState, Service

Level = DegradationLevel

# Where a service's skip_from_level is blank: non-critical services are skipped from "minimal", essential never.
DEFAULT_SKIP = {Service.Criticality.NON_CRITICAL: Level.MINIMAL.value, Service.Criticality.ESSENTIAL: "never"}


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
    return service.skip_from_level or DEFAULT_SKIP.get(service.criticality, "never")  # type: ignore[call-overload]


def skipped_at(level: str, service: Service) -> bool:
    """Should agents skip this service at this level? Essential services are never skipped by default."""
    start = skip_from(service)
    if start == "never":
        return False
    return LEVEL_RANK[level] >= LEVEL_RANK[start]

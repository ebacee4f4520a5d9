"""The fleet at a glance, read through each room's selectors."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from django.utils import timezone

from recovery.breakers.selectors import effective_state, services
from recovery.checkpoints import selectors as checkpoint_selectors
from recovery.degradation import selectors as degradation_selectors
from recovery.errors import selectors as error_selectors
from recovery.retries import selectors as retry_selectors
from recovery.sagas import selectors as saga_selectors
from recovery.status.schemas import (
    FleetStatusOut,
    StatusLevelOut,
    StatusPatternOut,
    StatusRetriesOut,
    StatusRollbacksOut,
    StatusServiceHealthOut,
    StatusStaleTaskOut,
    StatusStaleTasksOut,
)

# Each service's health comes from the floor above (healing's health checks), which registers a function here
# when its app is ready: recovery never imports healing. A source answers {service: {"state": ..., "checks":
# [{"name", "state", "last_result_at"}, ...]}}; with none registered, the status has no health to show.
HealthSource = Callable[[], Mapping[str, Any]]
_health_sources: list[HealthSource] = []


def register_health_source(source: HealthSource) -> None:
    """Add a source of services' health to GET /status (idempotent: registering twice counts once)."""
    if source not in _health_sources:
        _health_sources.append(source)


def services_health() -> dict[str, StatusServiceHealthOut]:
    """Every registered source's services, by name (a later source's entry for a service replaces an earlier
    one's: there is one source today)."""
    health: dict[str, StatusServiceHealthOut] = {}
    for source in _health_sources:
        for service, entry in source().items():
            health[service] = StatusServiceHealthOut.model_validate(entry)
    return dict(sorted(health.items()))


def stale_tasks(limit: int = 5) -> StatusStaleTasksOut:
    """Running tasks that went quiet: how many, and the longest quiet few."""
    stale = checkpoint_selectors.stale_tasks()
    oldest = [
        StatusStaleTaskOut.model_validate(
            {"agent": t.agent.name, "task_id": t.task_id, "stale_at": t.stale_at, "last_seq": t.last_seq}
        )
        for t in stale[:limit]
    ]
    return StatusStaleTasksOut(count=stale.count(), oldest=oldest)


def breakers_by_state() -> dict[str, int]:
    by_state: dict[str, int] = {}
    for service in services():
        state = effective_state(service)
        by_state[state] = by_state.get(state, 0) + 1
    return by_state


def fleet_status() -> dict[str, Any]:
    """The fleet at a glance, as FleetStatusOut shapes it: breakers by state, the degradation level, what
    waits for a human, errors by class over 5 and 60 minutes, the top patterns, each service's health."""
    now = timezone.now()
    return FleetStatusOut(
        breakers=breakers_by_state(),
        degradation=StatusLevelOut.model_validate(degradation_selectors.current()),
        retries_needing_human=StatusRetriesOut.model_validate(retry_selectors.needing_human()),
        rollbacks_needing_human=StatusRollbacksOut.model_validate(saga_selectors.needing_human()),
        stale_tasks=stale_tasks(),
        errors_last_5m=error_selectors.errors_by_class(now - timedelta(minutes=5)),
        errors_last_60m=error_selectors.errors_by_class(now - timedelta(minutes=60)),
        top_patterns=[StatusPatternOut.model_validate(p) for p in error_selectors.top_patterns()],
        health=services_health(),
    ).model_dump()

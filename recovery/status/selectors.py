"""The fleet at a glance, read through each room's selectors."""

from __future__ import annotations

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
    StatusStaleTaskOut,
    StatusStaleTasksOut,
)


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
    waits for a human, errors by class over 5 and 60 minutes, the top patterns."""
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
    ).model_dump()

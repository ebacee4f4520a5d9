from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Count, QuerySet
from django.utils import timezone

from recovery.breakers.selectors import effective_state, services
from recovery.checkpoints import selectors as checkpoint_selectors
from recovery.degradation import selectors as degradation_selectors
from recovery.errors.models import ErrorEvent
from recovery.errors.selectors import patterns
from recovery.retries import selectors as retry_selectors
from recovery.sagas import selectors as saga_selectors


def _stale_tasks(stale: QuerySet[Any], limit: int = 5) -> dict[str, Any]:
    """Running tasks that went quiet: how many, and the longest quiet few."""
    return {
        "count": stale.count(),
        "oldest": [
            {"agent": t.agent.name, "task_id": t.task_id, "stale_at": t.stale_at, "last_seq": t.last_seq}
            for t in stale[:limit]
        ],
    }


def fleet_status() -> dict[str, Any]:
    """The fleet at a glance: breakers by state, errors by class over 5 and 60 minutes, the top patterns."""

    now = timezone.now()
    by_state: dict[str, int] = {}
    for service in services():
        state = effective_state(service)
        by_state[state] = by_state.get(state, 0) + 1

    def by_class(minutes: int) -> dict[str, int]:
        rows = (
            ErrorEvent.objects.filter(occurred_at__gte=now - timedelta(minutes=minutes))
            .values("error_class")
            .annotate(n=Count("id"))
        )
        return {r["error_class"]: r["n"] for r in rows}

    recent: Any = patterns(since=now - timedelta(minutes=60))  # annotated with recent_5m and recent_60m
    top = recent.order_by("-recent_60m", "-last_seen_at")[:5]
    return {
        "breakers": by_state,
        "degradation": degradation_selectors.level_json(degradation_selectors.current()),
        "retries_needing_human": retry_selectors.needing_human(),
        "rollbacks_needing_human": saga_selectors.needing_human(),
        "stale_tasks": _stale_tasks(checkpoint_selectors.stale_tasks()),
        "errors_last_5m": by_class(5),
        "errors_last_60m": by_class(60),
        "top_patterns": [
            {
                "id": p.pk,
                "service": p.service,
                "error_class": p.error_class,
                "severity": p.severity,
                "message_template": p.message_template,
                "recent_60m": p.recent_60m,
                "total_count": p.total_count,
            }
            for p in top
        ],
    }

"""Reads of the recovery app."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from recovery.models import BreakerTransition, ClassificationRule, ErrorEvent, ErrorPattern, Service


def patterns(
    *,
    error_class: str | None = None,
    severity: str | None = None,
    service: str | None = None,
    since: datetime | None = None,
    search: str | None = None,
) -> QuerySet[ErrorPattern]:
    """Patterns newest first, each with its counts over the last 5 and 60 minutes."""
    now = timezone.now()
    qs = ErrorPattern.objects.all()
    if error_class:
        qs = qs.filter(error_class=error_class)
    if severity:
        qs = qs.filter(severity=severity)
    if service:
        qs = qs.filter(service=service)
    if since:
        qs = qs.filter(last_seen_at__gte=since)
    if search:
        qs = qs.filter(Q(message_template__icontains=search) | Q(type_name__icontains=search))
    return qs.annotate(
        recent_5m=Count("events", filter=Q(events__occurred_at__gte=now - timedelta(minutes=5))),
        recent_60m=Count("events", filter=Q(events__occurred_at__gte=now - timedelta(minutes=60))),
    ).order_by("-last_seen_at", "-id")


def rules() -> QuerySet[ClassificationRule]:
    return ClassificationRule.objects.order_by("priority", "id")


def live_breaker(service: Service) -> dict[str, Any]:
    """The breaker's automatic state and window as its store holds them now (an override is not applied)."""
    from recovery import breakers, registry

    try:
        peek = breakers.store().peek(service, registry.config_of(service))
        live: dict[str, Any] = {
            "state": peek.state,
            "window": {
                "calls": peek.calls,
                "failures": peek.failures,
                "rate": round(100.0 * peek.failures / peek.calls, 2) if peek.calls else 0.0,
                "consecutive_failures": peek.consecutive,
                "trial_permits_in_use": peek.trials_in_use,
            },
            "opened_at": _ms(peek.opened_at) if peek.state != "closed" else None,
            "open_until": _ms(peek.open_until) if peek.state == "open" else None,
        }
        if peek.state == "open" and peek.open_until <= peek.now:
            live["state"] = "half_open"  # what the next permit will find
    except redis.RedisError:
        live = {"state": "unknown", "window": None, "opened_at": None, "open_until": None}
    return live


def breaker_view(service: Service) -> dict[str, Any]:
    """A breaker as operators and agents read it: state, settings, the live window, and why."""
    from recovery import registry

    live = live_breaker(service)
    override = registry.override_in_force(service)
    last = service.transitions.order_by("-created_at", "-id").first()
    return {
        "service": service.name,
        "criticality": service.criticality,
        **live,
        "automatic_state": live["state"],
        "state": override if override != Service.Override.AUTO else live["state"],
        "override": {"mode": override, "reason": service.override_reason, "until": service.override_until}
        if override != Service.Override.AUTO
        else None,
        "why": {
            "reason": last.reason,
            "from_state": last.from_state,
            "to_state": last.to_state,
            "at": last.created_at,
            "window": last.window,
        }
        if last
        else None,
        "settings": service_settings(service),
    }


def service_settings(service: Service) -> dict[str, Any]:
    from recovery.breakers import SETTINGS_FIELDS

    return {
        name: getattr(service, name)
        for name in SETTINGS_FIELDS
        if name not in ("kind", "criticality", "description")
    }


def _ms(value: int) -> datetime | None:
    return datetime.fromtimestamp(value / 1000, tz=UTC) if value else None


def services() -> QuerySet[Service]:
    return Service.objects.order_by("name")


def transitions_after(after_id: int, limit: int = 500) -> list[BreakerTransition]:
    return list(
        BreakerTransition.objects.select_related("service").filter(pk__gt=after_id).order_by("id")[:limit]
    )


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
    from recovery import checkpoint_selectors, degradation, retry_selectors, saga_selectors
    from recovery.breakers import effective_state

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
        "degradation": degradation.level_json(degradation.current()),
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

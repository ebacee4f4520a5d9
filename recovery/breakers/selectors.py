"""Reads of the recovery app."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis
from django.db.models import Max, QuerySet

from core.api.errors import NotFound
from core.slugs import service_slug
from recovery.breakers import registry
from recovery.breakers.models import SETTINGS_FIELDS, BreakerTransition, Service
from recovery.breakers.store import current_store


def live_breaker(service: Service) -> dict[str, Any]:
    """The breaker's automatic state and window as its store holds them now (an override is not applied)."""

    try:
        peek = current_store().peek(service, registry.config_of(service))
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

    live = live_breaker(service)
    override = registry.override_in_force(service)
    last = (
        service.transitions.select_related("actor_user", "actor_agent").order_by("-created_at", "-id").first()
    )
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
            "actor": last.actor,
            "actor_name": last.actor_name,
            "actor_label": last.actor_label,
        }
        if last
        else None,
        "settings": service_settings(service),
    }


def service_settings(service: Service) -> dict[str, Any]:

    return {
        name: getattr(service, name)
        for name in SETTINGS_FIELDS
        if name not in ("kind", "criticality", "description")
    }


# The last millisecond a datetime can hold (9999-12-31T23:59:59.999Z). The stores clamp what they read far below
# it (now + MAX_RETRY_AFTER_S); this only keeps a reader from ever failing on a date.
LAST_MS = 253_402_300_799_999


def _ms(value: int) -> datetime | None:
    return datetime.fromtimestamp(min(value, LAST_MS) / 1000, tz=UTC) if value > 0 else None


def services() -> QuerySet[Service]:
    return Service.objects.order_by("name")


def essential_services() -> QuerySet[Service]:
    return services().filter(criticality=Service.Criticality.ESSENTIAL)


def transitions_after(after_id: int, limit: int = 500) -> list[BreakerTransition]:
    return list(
        BreakerTransition.objects.select_related("service", "actor_user", "actor_agent")
        .filter(pk__gt=after_id)
        .order_by("id")[:limit]
    )


def last_transition_id() -> int:
    """The id of the last transition written (0 before the first): where a reader of the feed starts."""
    return BreakerTransition.objects.aggregate(last=Max("id"))["last"] or 0


# --- operators -------------------------------------------------------------------------------------------


def effective_state(service: Service) -> str:
    override = registry.override_in_force(service)
    if override != Service.Override.AUTO:
        return override
    try:
        return current_store().peek(service, registry.config_of(service)).state
    except redis.RedisError:
        return "unknown"


def known_service(name: str) -> Service:
    """The service of that name, for a route or a query naming it: 400 if the name is no slug, 404 if unknown."""
    service = services().filter(name=service_slug(name)).first()
    if service is None:
        raise NotFound(f"Unknown service {name!r}.", field="service")
    return service


def outage_start(service: Service) -> tuple[datetime | None, BreakerTransition | None]:
    """When the breaker last left closed, and the transition that took it out: the first transition after its
    last one to closed. The store's opened_at (the latest opening) when no row says it yet (rows are written
    just after the store's change)."""
    history = BreakerTransition.objects.filter(service_id=service.pk)
    last_closed = history.filter(to_state="closed").order_by("-created_at", "-id").first()
    if last_closed is not None:
        history = history.filter(created_at__gt=last_closed.created_at)
    first = history.order_by("created_at", "id").first()
    opened_at = live_breaker(service).get("opened_at")
    candidates = [t for t in (first.created_at if first is not None else None, opened_at) if t is not None]
    return (min(candidates) if candidates else None), first

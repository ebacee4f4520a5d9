"""Reads of the recovery app."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

import redis
from django.db.models import Max, OuterRef, QuerySet, Subquery
from django.utils import timezone

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


def transitions_of(service: Service, limit: int = 200) -> list[BreakerTransition]:
    """One service's breaker transitions (automatic, operators' overrides and resets), newest first."""
    return list(
        BreakerTransition.objects.select_related("actor_user", "actor_agent")
        .filter(service_id=service.pk)
        .order_by("-created_at", "-id")[:limit]
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


# --- the whole fleet at once (the console's fleet page) ------------------------------------------------------


class BreakerNow(NamedTuple):
    """A breaker as a permit finds it now, and when its state last changed (its last transition; None: never)."""

    state: (
        str  # closed, open, half_open, an override in force (forced_open, forced_closed, disabled), unknown
    )
    since: datetime | None


def breaker_states(services: list[Service]) -> dict[str, BreakerNow]:
    """Every breaker's effective state (as effective_state reads one) and the time of its last transition, by
    service name: one round trip to the store, one aggregate query (and two more for breakers whose stored
    state must be rebuilt), whatever the number of services. Without the store: unknown, overrides still
    shown."""
    now = timezone.now()
    last = dict(
        BreakerTransition.objects.filter(service_id__in=[s.pk for s in services])
        .order_by()
        .values_list("service_id")
        .annotate(last=Max("created_at"))
    )
    automatic = [s for s in services if registry.override_in_force(s, now) == Service.Override.AUTO]
    try:
        peeks = current_store().peek_many(automatic, [registry.config_of(s) for s in automatic])
        live = {s.name: _permit_state(p) for s, p in zip(automatic, peeks, strict=True)}
    except redis.RedisError:
        live = {s.name: "unknown" for s in automatic}
    return {
        s.name: BreakerNow(live.get(s.name) or registry.override_in_force(s, now), last.get(s.pk))
        for s in services
    }


def _permit_state(peek: Any) -> str:
    # An open breaker whose wait is over is half-open for the next permit.
    if peek.state == "open" and peek.open_until <= peek.now:
        return "half_open"
    return str(peek.state)


def override_setters(services: list[Service]) -> dict[str, str]:
    """Who set each override in force (the services passed whose override is not auto): the actor of the
    last transition into that override's mode, as text ("user alice"); one query. A service with no such
    transition is missing."""
    now = timezone.now()
    forced = {s.pk: s for s in services if registry.override_in_force(s, now) != Service.Override.AUTO}
    if not forced:
        return {}
    found: dict[str, str] = {}
    rows = (
        BreakerTransition.objects.select_related("actor_user", "actor_agent")
        .filter(service_id__in=list(forced), to_state__in=[s.override for s in forced.values()])
        .order_by("-created_at", "-id")
    )
    for row in rows:
        service = forced[row.service_id]
        if row.to_state == service.override and service.name not in found:
            found[service.name] = row.actor_label
    return found


class BreakerDetail(NamedTuple):
    """What breaker_view says of a breaker's state and why, without its settings and window."""

    automatic_state: str  # the store's state (no override applied); half_open once an open wait is over
    opened_at: datetime | None  # when it last left closed (None: closed)
    open_until: datetime | None  # while open: when it lets a trial call through
    last: BreakerTransition | None  # its last transition (actors selected), None: never changed


def breaker_details(services: list[Service]) -> dict[str, BreakerDetail]:
    """breaker_view's state, times and last transition of many breakers, by service name: one round trip to
    the store (as breaker_states) and one query for the last transitions, whatever the number of services.
    Without the store: unknown, with no times."""
    try:
        peeks = current_store().peek_many(services, [registry.config_of(s) for s in services])
        live = {s.name: p for s, p in zip(services, peeks, strict=True)}
    except redis.RedisError:
        live = {}
    latest = (
        BreakerTransition.objects.filter(service_id=OuterRef("pk"))
        .order_by("-created_at", "-id")
        .values("pk")[:1]
    )
    last_ids = Service.objects.filter(pk__in=[s.pk for s in services]).annotate(last=Subquery(latest))
    last = {
        row.service_id: row
        for row in BreakerTransition.objects.select_related("actor_user", "actor_agent").filter(
            pk__in=last_ids.values("last")
        )
    }
    details = {}
    for s in services:
        peek = live.get(s.name)
        if peek is None:
            details[s.name] = BreakerDetail("unknown", None, None, last.get(s.pk))
            continue
        details[s.name] = BreakerDetail(
            _permit_state(peek),
            _ms(peek.opened_at) if peek.state != "closed" else None,
            _ms(peek.open_until) if peek.state == "open" else None,
            last.get(s.pk),
        )
    return details

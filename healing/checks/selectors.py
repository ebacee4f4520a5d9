"""Reads of the health checks: one check, lists with each check's newest result, results and transitions, and
what other rooms ask (has a check passed since a moment, each service's health for GET /status)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from django.db.models import OuterRef, Prefetch, QuerySet, Subquery

from core.api.errors import NotFound
from core.slugs import SLUG
from healing.checks.models import HealthCheck, HealthCheckResult, HealthCheckTransition

_SLUG = re.compile(SLUG)
LATEST = "latest_results"  # the attribute a prefetch of each check's newest result fills
State = HealthCheck.State


def get_check(name: str) -> HealthCheck:
    """The check of this name, or NotFound (404). A name that is no slug cannot exist and is not looked up."""
    check = HealthCheck.objects.filter(name=name).first() if _SLUG.match(name) else None
    if check is None:
        raise NotFound(f"No health check named {name[:100]!r}.", field="name")
    return check


def _newest_first() -> QuerySet[HealthCheckResult]:
    return HealthCheckResult.objects.order_by("-created_at", "-id")


def checks(
    *,
    service: str | None = None,
    state: str | None = None,
    kind: str | None = None,
    enabled: bool | None = None,
) -> QuerySet[HealthCheck]:
    """Checks by name, each with its newest result prefetched (one query per page, whatever its size)."""
    found = HealthCheck.objects.order_by("name").prefetch_related(
        Prefetch("results", queryset=_newest_first()[:1], to_attr=LATEST)
    )
    if service is not None:
        found = found.filter(service=service)
    if state is not None:
        found = found.filter(state=state)
    if kind is not None:
        found = found.filter(kind=kind)
    if enabled is not None:
        found = found.filter(enabled=enabled)
    return found


def check_detail(name: str) -> HealthCheck:
    """One check with its newest result prefetched (see last_result); NotFound otherwise."""
    check = checks().filter(name=name).first() if _SLUG.match(name) else None
    if check is None:
        raise NotFound(f"No health check named {name[:100]!r}.", field="name")
    return check


def last_result(check: HealthCheck) -> HealthCheckResult | None:
    """The check's newest result: the prefetched one when the check came from checks(), else one query."""
    prefetched: list[HealthCheckResult] | None = getattr(check, LATEST, None)
    if prefetched is not None:
        return prefetched[0] if prefetched else None
    return _newest_first().filter(health_check=check).first()


def results(check: HealthCheck) -> QuerySet[HealthCheckResult]:
    """Every result of a check, newest first."""
    return _newest_first().filter(health_check=check)


def transitions(check: HealthCheck) -> QuerySet[HealthCheckTransition]:
    """Every change of a check's state, newest first."""
    return HealthCheckTransition.objects.filter(health_check=check).order_by("-created_at", "-id")


def transitions_of_service(service: str, limit: int = 100) -> list[HealthCheckTransition]:
    """Every check's state changes for one service, newest first, with their checks: one query however many
    checks the service has (the console's timeline)."""
    return list(
        HealthCheckTransition.objects.select_related("health_check")
        .filter(health_check__service=service)
        .order_by("-created_at", "-id")[:limit]
    )


def newest_ping(check_id: int) -> HealthCheckResult | None:
    return _newest_first().filter(health_check_id=check_id, source=HealthCheckResult.Source.PING).first()


def passed_since(check_id: int, since: datetime) -> bool:
    """Whether the check is healthy now and its newest result, taken at or after `since`, passed: what a healing
    run waits for before it calls its action verified."""
    check = HealthCheck.objects.filter(pk=check_id).only("state").first()
    if check is None or check.state != State.HEALTHY:
        return False
    newest = _newest_first().filter(health_check_id=check_id).only("ok", "created_at").first()
    return newest is not None and newest.ok and newest.created_at >= since


# --- each service's health (GET /api/v1/status) --------------------------------------------------------------

# The worst state among a service's checks is the service's: one unhealthy check makes it unhealthy; one
# without a verdict yet leaves it unknown.
_WORST = {State.UNHEALTHY.value: 2, State.UNKNOWN.value: 1, State.HEALTHY.value: 0}


def service_health() -> dict[str, dict[str, Any]]:
    """Each service with enabled checks: its state (the worst of its checks') and each check's state and the
    time of its newest result. The function recovery.status.selectors.register_health_source takes."""
    newest = Subquery(_newest_first().filter(health_check=OuterRef("pk")).values("created_at")[:1])
    rows = (
        HealthCheck.objects.filter(enabled=True)
        .annotate(last_result_at=newest)
        .order_by("service", "name")
        .values("service", "name", "state", "last_result_at")
    )
    health: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = health.setdefault(row["service"], {"state": State.HEALTHY.value, "checks": []})
        entry["checks"].append(
            {"name": row["name"], "state": row["state"], "last_result_at": row["last_result_at"]}
        )
        if _WORST.get(row["state"], 1) > _WORST[entry["state"]]:
            entry["state"] = row["state"]
    return health


def transition(transition_id: int) -> HealthCheckTransition | None:
    """One change of a check's state, with its check and the result that caused it (None: gone)."""
    return (
        HealthCheckTransition.objects.select_related("health_check", "result")
        .filter(pk=transition_id)
        .first()
    )

"""Rows the remediation tests (tests/healing/remediation/) start from: checks and their transitions,
breakers and theirs, errors, actions and rules. Built directly: the checks, the breakers and the error
intake have tests of their own."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from healing.actions.models import HealingAction
from healing.checks.models import HealthCheck, HealthCheckTransition
from healing.remediation.models import RemediationRule
from recovery.breakers.models import BreakerTransition, Service
from recovery.errors.models import ErrorEvent, ErrorPattern

LOW_ACTION = "flush_fallback_cache"  # the built-ins of healing/migrations/0005: low risk
MEDIUM_ACTION = "reset_breaker"  # medium risk


def ago(seconds: float) -> datetime:
    return timezone.now() - timedelta(seconds=seconds)


def check(name: str = "db-http", service: str = "db", state: str = "unhealthy") -> HealthCheck:
    return HealthCheck.objects.create(
        name=name, service=service, kind="http", url="http://127.0.0.1:9/health", state=state
    )


def check_turns(
    health_check: HealthCheck, to_state: str = "unhealthy", *, at: datetime | None = None
) -> HealthCheckTransition:
    """A transition of the check, as the checks record one."""
    return HealthCheckTransition.objects.create(
        health_check=health_check,
        from_state="healthy" if to_state == "unhealthy" else "unhealthy",
        to_state=to_state,
        reason="3 failures in a row: connection refused" if to_state == "unhealthy" else "2 passes in a row",
        created_at=at or timezone.now(),
    )


def breaker(name: str = "payments") -> Service:
    return Service.objects.get_or_create(name=name)[0]


def breaker_goes(
    service: Service, to_state: str = "open", *, from_state: str = "closed", at: datetime | None = None
) -> BreakerTransition:
    return BreakerTransition.objects.create(
        service=service,
        from_state=from_state,
        to_state=to_state,
        reason="failure rate 80% over 10 calls",
        created_at=at or timezone.now(),
    )


def errors(service: str, count: int, error_class: str = "transient", *, at: datetime | None = None) -> None:
    moment = at or timezone.now()
    pattern, _ = ErrorPattern.objects.get_or_create(
        fingerprint=f"{service}-{error_class}",
        defaults={
            "service": service,
            "error_class": error_class,
            "severity": "medium",
            "kind": "connection_timeout",
            "first_seen_at": moment,
            "last_seen_at": moment,
        },
    )
    ErrorEvent.objects.bulk_create(
        ErrorEvent(
            pattern=pattern, occurred_at=moment, service=service, error_class=error_class, severity="medium"
        )
        for _ in range(count)
    )


def action(name: str = LOW_ACTION) -> HealingAction:
    return HealingAction.objects.get(name=name)


def critical_action() -> HealingAction:
    return HealingAction.objects.create(
        name="failover-db",
        kind="webhook",
        risk="critical",
        url="http://127.0.0.1:9/failover",
        parameters_schema={"type": "object"},
    )


def rule(
    name: str = "heal-db",
    *,
    trigger: str = "check_unhealthy",
    health_check: HealthCheck | None = None,
    service: str = "",
    act: str | HealingAction = LOW_ACTION,
    **fields: Any,
) -> RemediationRule:
    healing_action = act if isinstance(act, HealingAction) else action(act)
    return RemediationRule.objects.create(
        name=name,
        trigger=trigger,
        health_check=health_check,
        service=service,
        action=healing_action,
        **fields,
    )

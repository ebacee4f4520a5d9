"""Reads of recovery decisions the API needs (the planner's own reads live in fallbacks.py and policies.py)."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from recovery.decisions.models import RecoveryPlan, RetryPolicy


def retry_policies() -> QuerySet[RetryPolicy]:
    """Every retry policy by name, with its service."""
    return RetryPolicy.objects.select_related("service").order_by("name")


# How many plans `recovering_plans` counts at most: beyond this many, an error storm is the recovery's to show.
RECOVERING_MAX = 10_000


def recovering_plans(
    service: str, fingerprint: str, *, since: datetime, at_most: int = RECOVERING_MAX
) -> int:
    """Plans answered since then for this error pattern that recovered or are still being followed (succeeded
    or pending), counted up to `at_most` on the (service, created_at) index: the errors of the pattern that
    Rebound is handling, which the escalation queue's repeated-pattern trigger does not count as a human's."""
    plans = RecoveryPlan.objects.filter(
        service=service,
        created_at__gte=since,
        fingerprint=fingerprint,
        result__in=[RecoveryPlan.Result.SUCCEEDED, RecoveryPlan.Result.PENDING],
    )
    return plans[:at_most].count()

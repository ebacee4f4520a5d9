"""Reads of recovery decisions the API needs (the planner's own reads live in fallbacks.py and policies.py)."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Q, QuerySet

from recovery.decisions.models import RecoveryPlan, RetryPolicy


def retry_policies() -> QuerySet[RetryPolicy]:
    """Every retry policy by name, with its service."""
    return RetryPolicy.objects.select_related("service").order_by("name")


# How many plans `recovering_plans` counts at most: beyond this many, an error storm is the recovery's to show.
RECOVERING_MAX = 10_000


def recovering_plans(
    service: str, fingerprint: str, *, since: datetime, at_most: int = RECOVERING_MAX
) -> int:
    """Plans answered since then for this error pattern that are part of a recovery that has not given up:
    succeeded, still followed (pending), or a retry or wait that failed with attempts left (the agent asks again:
    a retry that works at the third attempt is one recovery, not two failures). Counted up to `at_most` on the
    (service, created_at) index: the errors of the pattern Rebound is handling, which the escalation queue's
    repeated-pattern trigger leaves to the recovery. An abort, an escalation, a last attempt or a fallback that
    failed, or a plan whose outcome never came, is not handling anything."""
    Result, Action = RecoveryPlan.Result, RecoveryPlan.Action
    going_on = Q(result__in=[Result.SUCCEEDED, Result.PENDING]) | Q(
        result=Result.FAILED, action__in=[Action.RETRY, Action.WAIT], attempts_left__gt=0
    )
    plans = RecoveryPlan.objects.filter(service=service, created_at__gte=since, fingerprint=fingerprint)
    return plans.filter(going_on)[:at_most].count()

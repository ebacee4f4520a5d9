"""Reads of recovery decisions the API needs (the planner's own reads live in fallbacks.py and policies.py)."""

from __future__ import annotations

from django.db.models import QuerySet

from recovery.decisions.models import RetryPolicy


def retry_policies() -> QuerySet[RetryPolicy]:
    """Every retry policy by name, with its service."""
    return RetryPolicy.objects.select_related("service").order_by("name")

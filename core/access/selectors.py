"""Reads of agents: what the console's search and other readers need, without reaching into the models."""

from __future__ import annotations

from django.db.models import QuerySet

from core.access.models import Agent


def agents(*, search: str | None = None, active: bool | None = None) -> QuerySet[Agent]:
    """Agents by name; `search` keeps those whose name contains it (any case), `active` those (not) active."""
    qs = Agent.objects.all()
    if search:
        qs = qs.filter(name__icontains=search)
    if active is not None:
        qs = qs.filter(is_active=active)
    return qs.order_by("name", "id")

"""Reads of the audit trail."""

from __future__ import annotations

from datetime import datetime

from django.apps import apps
from django.db import models
from django.db.models import QuerySet

from core.audit.models import AuditEvent, audit_label


def audit_events(
    *,
    action: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    since: datetime | None = None,
) -> QuerySet[AuditEvent]:
    qs = AuditEvent.objects.select_related("actor_user", "actor_agent")
    if action:
        qs = qs.filter(action=action)
    if target_type:
        qs = qs.filter(target_type=target_type)
    if target_id:
        qs = qs.filter(target_id=target_id)
    if since:
        qs = qs.filter(occurred_at__gte=since)
    return qs.order_by("-occurred_at", "-id")


def recent_changes(limit: int = 10) -> list[AuditEvent]:
    """The newest audit events of everyone (people, agents, the system), for the admin's front page."""
    return list(audit_events()[:limit])


def target_model(target_type: str) -> type[models.Model] | None:
    """The model an audit row's target_type names (by its audit label, which outlives a move between apps)."""
    for model in apps.get_models():
        if audit_label(model) == target_type:
            return model
    return None

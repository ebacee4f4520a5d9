from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from healing.models import AuditEvent


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

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from recovery.errors.models import ClassificationRule, ErrorPattern


def patterns(
    *,
    error_class: str | None = None,
    severity: str | None = None,
    service: str | None = None,
    since: datetime | None = None,
    search: str | None = None,
) -> QuerySet[ErrorPattern]:
    """Patterns newest first, each with its counts over the last 5 and 60 minutes."""
    now = timezone.now()
    qs = ErrorPattern.objects.all()
    if error_class:
        qs = qs.filter(error_class=error_class)
    if severity:
        qs = qs.filter(severity=severity)
    if service:
        qs = qs.filter(service=service)
    if since:
        qs = qs.filter(last_seen_at__gte=since)
    if search:
        qs = qs.filter(Q(message_template__icontains=search) | Q(type_name__icontains=search))
    return qs.annotate(
        recent_5m=Count("events", filter=Q(events__occurred_at__gte=now - timedelta(minutes=5))),
        recent_60m=Count("events", filter=Q(events__occurred_at__gte=now - timedelta(minutes=60))),
    ).order_by("-last_seen_at", "-id")


def rules() -> QuerySet[ClassificationRule]:
    return ClassificationRule.objects.order_by("priority", "id")

"""Reads of errors: patterns and rules, as the API, the admin and other rooms need them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db.models import Count, Max, Q, QuerySet
from django.utils import timezone

from core.api.errors import NotFound
from recovery.errors.models import ClassificationRule, ErrorEvent, ErrorPattern


def patterns(
    *,
    error_class: str | None = None,
    severity: str | None = None,
    service: str | None = None,
    since: datetime | None = None,
    search: str | None = None,
    busiest_first: bool = False,
) -> QuerySet[ErrorPattern]:
    """Patterns newest first (or seen most over the last hour first), each with its counts over the last 5
    and 60 minutes."""
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
        qs = qs.filter(
            Q(message_template__icontains=search)
            | Q(type_name__icontains=search)
            | Q(fingerprint__startswith=search.lower())
        )
    return qs.annotate(
        recent_5m=Count("events", filter=Q(events__occurred_at__gte=now - timedelta(minutes=5))),
        recent_60m=Count("events", filter=Q(events__occurred_at__gte=now - timedelta(minutes=60))),
    ).order_by(*(("-recent_60m", "-last_seen_at") if busiest_first else ("-last_seen_at", "-id")))


def rules() -> QuerySet[ClassificationRule]:
    return ClassificationRule.objects.order_by("priority", "id")


def pattern(pk: int) -> ErrorPattern:
    """One pattern with its recent counts, or a 404."""
    found = patterns().filter(pk=pk).first()
    if found is None:
        raise NotFound(f"No error pattern {pk}.")
    return found


def pattern_ids(fingerprints: Iterable[str]) -> dict[str, int]:
    """The pattern id of each fingerprint that has a pattern, in one indexed query (no counts)."""
    found = ErrorPattern.objects.filter(fingerprint__in=list(fingerprints)).values_list("fingerprint", "id")
    return dict(found)


def rule(pk: int) -> ClassificationRule:
    found = rules().filter(pk=pk).first()
    if found is None:
        raise NotFound(f"No classification rule {pk}.")
    return found


def errors_by_class(since: datetime) -> dict[str, int]:
    """How many errors of each class were reported since then."""
    rows = ErrorEvent.objects.filter(occurred_at__gte=since).values("error_class").annotate(n=Count("id"))
    return {r["error_class"]: r["n"] for r in rows}


def top_patterns(limit: int = 5) -> QuerySet[ErrorPattern]:
    """The patterns seen most over the last hour, with their counts over the last 5 and 60 minutes."""
    return patterns(since=timezone.now() - timedelta(minutes=60), busiest_first=True)[:limit]


def error_count(*, service: str, since: datetime, error_class: str = "", at_most: int | None = None) -> int:
    """How many errors the service reported since then (of that class, or of any when blank): what a
    remediation rule's pattern_count trigger compares with its threshold. With `at_most`, counting stops
    there (a LIMIT under the COUNT): a threshold of 10 never counts a million rows of a busy day."""
    qs = ErrorEvent.objects.filter(service=service, occurred_at__gte=since)
    if error_class:
        qs = qs.filter(error_class=error_class)
    return qs[:at_most].count() if at_most is not None else qs.count()


def pattern_event_count(
    pattern_id: int, *, since: datetime, until: datetime | None = None, at_most: int
) -> int:
    """How many events the pattern had since then (up to `until`), counting at most `at_most`: a LIMIT under
    the COUNT on the (pattern, occurred_at) index, so a threshold of 5 never counts a busy pattern's day."""
    qs = ErrorEvent.objects.filter(pattern_id=pattern_id, occurred_at__gte=since)
    if until is not None:
        qs = qs.filter(occurred_at__lte=until)
    return qs[:at_most].count()


def top_pattern_by_service(since: datetime) -> dict[str, ErrorPattern]:
    """Each service's busiest pattern since then: the most events since then, the most recently seen on a tie
    (`recent` holds the count). One query over the patterns seen since then, whatever the number of services."""
    found: dict[str, ErrorPattern] = {}
    rows = (
        ErrorPattern.objects.filter(last_seen_at__gte=since)
        .annotate(recent=Count("events", filter=Q(events__occurred_at__gte=since)))
        .order_by("service", "-recent", "-last_seen_at", "-id")
    )
    for row in rows:
        found.setdefault(row.service, row)
    return found


# --- one service or the fleet over a window (the MCP server's get_error_status) ------------------------------


def error_counts(since: datetime, service: str | None = None) -> list[tuple[str, str, int]]:
    """(error_class, severity, count) of the errors reported since then, of the service or of every service
    (None): one GROUP BY query over the window's events, largest count first."""
    qs = ErrorEvent.objects.filter(occurred_at__gte=since)
    if service is not None:
        qs = qs.filter(service=service)
    rows = qs.order_by().values_list("error_class", "severity").annotate(n=Count("id"))
    return sorted(((c, s, n) for c, s, n in rows), key=lambda row: (-row[2], row[0], row[1]))


def busiest_patterns(since: datetime, *, service: str | None = None, limit: int = 5) -> list[ErrorPattern]:
    """The patterns with the most events since then (of the service, or of every service), the most recently
    seen first on a tie; each with `in_window`, its count since then. Two queries: the window's events grouped by
    pattern (on the occurred_at index, never a busy pattern's whole history), then those patterns."""
    events = ErrorEvent.objects.filter(occurred_at__gte=since)
    if service is not None:
        events = events.filter(service=service)
    counted = list(
        events.order_by()
        .values_list("pattern_id")
        .annotate(n=Count("id"), last=Max("occurred_at"))
        .order_by("-n", "-last", "-pattern_id")[:limit]
    )
    found = ErrorPattern.objects.in_bulk([pattern_id for pattern_id, _, _ in counted])
    busiest = []
    for pattern_id, n, _ in counted:
        row = found.get(pattern_id)
        if row is not None:  # pruned between the two queries
            row.in_window = n  # type: ignore[attr-defined]
            busiest.append(row)
    return busiest

"""Errors over a window, of one service or of the fleet (recovery.errors.selectors.error_counts and
busiest_patterns): what get_error_status shows, in one and two queries."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from recovery.errors import selectors
from recovery.errors.models import ErrorEvent, ErrorPattern

pytestmark = pytest.mark.django_db


def errors(
    service: str, n: int, error_class: str = "transient", severity: str = "medium", minutes_ago: int = 0
) -> ErrorPattern:
    at = timezone.now() - timedelta(minutes=minutes_ago)
    pattern = ErrorPattern.objects.create(
        fingerprint=uuid.uuid4().hex,
        service=service,
        error_class=error_class,
        severity=severity,
        kind="connection_timeout",
        first_seen_at=at,
        last_seen_at=at,
        total_count=n,
    )
    ErrorEvent.objects.bulk_create(
        ErrorEvent(
            pattern=pattern, occurred_at=at, service=service, error_class=error_class, severity=severity
        )
        for _ in range(n)
    )
    return pattern


def window() -> datetime:
    return timezone.now() - timedelta(minutes=60)


def test_error_counts_group_the_windows_errors_by_class_and_severity_in_one_query() -> None:
    errors("a", 3, "transient", "medium")
    errors("b", 1, "transient", "medium")
    errors("b", 2, "rate_limit", "low")
    errors("a", 7, "transient", "medium", minutes_ago=90)
    with CaptureQueriesContext(connection) as captured:
        counts = selectors.error_counts(window())
    assert len(captured) == 1
    assert counts == [("transient", "medium", 4), ("rate_limit", "low", 2)]


def test_error_counts_of_a_service_count_only_its_errors() -> None:
    errors("a", 3)
    errors("b", 2, "rate_limit", "low")
    assert selectors.error_counts(window(), "b") == [("rate_limit", "low", 2)]
    assert selectors.error_counts(window(), "nobody") == []


def test_busiest_patterns_are_the_windows_busiest_in_two_queries() -> None:
    quiet = errors("a", 1)
    busy = errors("b", 3)
    errors("a", 9, minutes_ago=120)  # busier, but before the window
    with CaptureQueriesContext(connection) as captured:
        top = selectors.busiest_patterns(window())
    assert len(captured) == 2
    assert [(p.pk, p.in_window) for p in top] == [(busy.pk, 3), (quiet.pk, 1)]  # type: ignore[attr-defined]


def test_busiest_patterns_put_the_most_recently_seen_first_on_a_tie() -> None:
    older = errors("a", 2, minutes_ago=10)
    newer = errors("a", 2, minutes_ago=1)
    assert [p.pk for p in selectors.busiest_patterns(window())] == [newer.pk, older.pk]


def test_busiest_patterns_of_a_service_and_at_most_the_limit() -> None:
    mine = [errors("a", n) for n in (1, 2, 3)]
    errors("b", 5)
    top = selectors.busiest_patterns(window(), service="a", limit=2)
    assert [p.pk for p in top] == [mine[2].pk, mine[1].pk]

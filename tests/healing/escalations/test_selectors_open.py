"""Open escalations of one service or of every service (healing.escalations.selectors.open_counts with a
service, newest_open): what get_error_status shows, one query each."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from healing.escalations import selectors
from healing.escalations.models import Escalation
from tests.support.escalations import raise_one

pytestmark = pytest.mark.django_db


def test_open_counts_of_a_service_count_only_its_escalations_not_resolved() -> None:
    raise_one("a1", level="critical", service="alpha")
    raise_one("a2", level="warning", service="alpha")
    raise_one("b1", level="emergency", service="beta")
    resolved = raise_one("a3", level="warning", service="alpha")
    Escalation.objects.filter(pk=resolved.pk).update(state="resolved")
    with CaptureQueriesContext(connection) as captured:
        counts = selectors.open_counts("alpha")
    assert len(captured) == 1
    assert counts == {"info": 0, "warning": 1, "critical": 1, "emergency": 0}
    assert selectors.open_counts() == {"info": 0, "warning": 1, "critical": 1, "emergency": 1}


def test_newest_open_lists_the_last_raised_first_in_one_query() -> None:
    first = raise_one("k1", service="alpha")
    second = raise_one("k2", service="beta")
    third = raise_one("k3", service="alpha")
    Escalation.objects.filter(pk=second.pk).update(state="acknowledged")
    resolved = raise_one("k4", service="alpha")
    Escalation.objects.filter(pk=resolved.pk).update(state="resolved")
    with CaptureQueriesContext(connection) as captured:
        newest = selectors.newest_open()
    assert len(captured) == 1
    assert [e.pk for e in newest] == [third.pk, second.pk, first.pk]


def test_newest_open_of_a_service_and_at_most_the_limit() -> None:
    first = raise_one("k1", service="alpha")
    raise_one("k2", service="beta")
    third = raise_one("k3", service="alpha")
    assert [e.pk for e in selectors.newest_open("alpha")] == [third.pk, first.pk]
    assert [e.pk for e in selectors.newest_open(limit=1)] == [third.pk]

"""Open escalations counted by service and level (healing.escalations.selectors.open_by_service): the fleet
page's column, one GROUP BY query."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from healing.escalations import selectors
from healing.escalations.models import Escalation
from tests.support.escalations import raise_one

pytestmark = pytest.mark.django_db


def test_it_counts_escalations_not_resolved_by_service_and_level() -> None:
    raise_one("a1", level="critical", service="alpha")
    raise_one("a2", level="warning", service="alpha")
    raise_one("a3", level="warning", service="alpha")
    raise_one("b1", level="emergency", service="beta")
    raise_one("n1", level="info")
    resolved = raise_one("a4", level="critical", service="alpha")
    Escalation.objects.filter(pk=resolved.pk).update(state="resolved")
    Escalation.objects.filter(dedup_key="a3").update(state="acknowledged")
    with CaptureQueriesContext(connection) as captured:
        counts = selectors.open_by_service()
    assert len(captured) == 1
    assert counts == {"alpha": {"critical": 1, "warning": 2}, "beta": {"emergency": 1}, "": {"info": 1}}


def test_it_is_empty_without_open_escalations() -> None:
    assert selectors.open_by_service() == {}

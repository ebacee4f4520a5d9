"""The admin shows what learning found on the error pattern's page and on the service's page, lists the rows
read-only, and forgets them only through services.reset with a reason (audited, source admin)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from core.audit.models import AuditEvent
from recovery.breakers.models import Service
from recovery.errors import services as error_services
from recovery.errors.classification import ErrorReport
from recovery.errors.models import ErrorPattern
from recovery.learning.models import Effectiveness
from tests.support.admin_helpers import confirmed, run_action, url

pytestmark = pytest.mark.django_db
CHANGELIST = "recovery_effectiveness_changelist"


def effectiveness(**fields: Any) -> Effectiveness:
    now = timezone.now()
    values: dict[str, Any] = {
        "scope": "service",
        "service": "openai",
        "error_class": "transient",
        "action": "retry",
        "tries": 20.0,
        "successes": 18.0,
        "as_of_s": now.timestamp(),
        "total_tries": 20,
        "total_successes": 18,
        "first_result_at": now - timedelta(days=1),
        "last_result_at": now,
        **fields,
    }
    return Effectiveness.objects.create(**values)


@pytest.fixture
def pattern() -> ErrorPattern:
    report = ErrorReport(service="openai", type_name="httpx.ConnectTimeout", message="timed out")
    error_services.record_errors([report], agent=None)
    return ErrorPattern.objects.get()


def forget(client: Client, rows: list[Effectiveness], **extra: str) -> Any:
    return run_action(client, CHANGELIST, "forget", [r.pk for r in rows], **extra)


def test_it_shows_the_patterns_figures_on_its_page(viewer: Client, pattern: ErrorPattern) -> None:
    effectiveness(
        scope="pattern",
        fingerprint=pattern.fingerprint,
        error_class=pattern.error_class,
        action="fallback:cache",
        tries=50.0,
        successes=47.0,
    )

    response = viewer.get(url("recovery_errorpattern_change", pattern.pk))

    assert response.status_code == 200
    page = response.content.decode()
    assert "What recovery has learned" in page
    assert "fallback to cache" in page
    assert "47.0 of 50.0" in page
    assert "94%" in page


def test_it_says_nothing_was_learned_on_a_patterns_page_without_rows(
    viewer: Client, pattern: ErrorPattern
) -> None:
    page = viewer.get(url("recovery_errorpattern_change", pattern.pk)).content.decode()

    assert "Nothing learned yet" in page


def test_it_shows_the_services_figures_on_its_page(operator: Client) -> None:
    service = Service.objects.create(name="openai")
    effectiveness(action="wait", tries=12.0, successes=3.0)
    effectiveness(service="web-search", action="fallback:static")

    response = operator.get(url("recovery_service_change", service.pk))

    assert response.status_code == 200
    page = response.content.decode()
    assert "What recovery has learned" in page
    assert "3.0 of 12.0" in page
    assert "fallback:static" not in page  # another service's row


def test_it_lists_the_rows_with_their_figures(viewer: Client) -> None:
    effectiveness()

    response = viewer.get(url(CHANGELIST))

    assert response.status_code == 200
    page = response.content.decode()
    assert "18.0 of 20.0" in page
    assert "90%" in page


def test_it_asks_for_a_reason_before_forgetting(operator: Client) -> None:
    row = effectiveness()

    asked = forget(operator, [row])
    nothing = forget(operator, [row], **confirmed(""))

    assert asked.status_code == 200
    assert "reason" in asked.content.decode()
    assert nothing.status_code == 200
    assert Effectiveness.objects.filter(pk=row.pk).exists()


def test_it_forgets_the_selected_rows_service_through_the_service(operator: Client) -> None:
    row = effectiveness()
    effectiveness(error_class="rate_limit")  # the same service: forgotten with it
    kept = effectiveness(service="web-search")

    done = forget(operator, [row], **confirmed("INC-42 fixed"))

    assert done.status_code == 302
    assert list(Effectiveness.objects.values_list("pk", flat=True)) == [kept.pk]
    event = AuditEvent.objects.get(action="learning.reset")
    assert (event.reason, event.source) == ("INC-42 fixed", "admin")
    assert event.actor_user == operator.user  # type: ignore[attr-defined]


def test_it_forgets_a_pattern_rows_pattern_only(operator: Client, pattern: ErrorPattern) -> None:
    row = effectiveness(scope="pattern", fingerprint=pattern.fingerprint, error_class=pattern.error_class)
    kept = effectiveness()

    forget(operator, [row], **confirmed("the pattern's cause is fixed"))

    assert list(Effectiveness.objects.values_list("pk", flat=True)) == [kept.pk]


def test_it_offers_a_viewer_no_forgetting(viewer: Client) -> None:
    row = effectiveness()

    listed = viewer.get(url(CHANGELIST)).content.decode()
    forget(viewer, [row], **confirmed("no"))

    assert 'value="forget"' not in listed
    assert Effectiveness.objects.filter(pk=row.pk).exists()
    assert not AuditEvent.objects.filter(action="learning.reset").exists()


def test_it_offers_an_operator_the_forget_action(operator: Client) -> None:
    effectiveness()

    assert 'value="forget"' in operator.get(url(CHANGELIST)).content.decode()

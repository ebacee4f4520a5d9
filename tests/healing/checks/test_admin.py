"""The admin of health checks: the list with states, adding and changing only with a reason (through the
service, audited as admin), run now, delete with a reason; results and transitions shown, never edited."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from core.audit.models import AuditEvent
from healing.checks import services
from healing.checks.models import HealthCheck, HealthCheckResult
from healing.checks.probes import Outcome
from tests.support.admin_helpers import confirmed, run_action, url
from tests.support.health_checks import make_check
from tests.support.http_target import Target

pytestmark = pytest.mark.django_db
CHANGELIST = "healing_healthcheck_changelist"


def form(**changes: Any) -> dict[str, Any]:
    """The check's add or change form as a browser posts it."""
    data: dict[str, Any] = {
        "name": "api",
        "service": "svc",
        "kind": "heartbeat",
        "description": "",
        "interval_s": "30",
        "timeout_s": "5",
        "rise": "2",
        "fall": "3",
        "enabled": "on",
        "method": "GET",
        "url": "",
        "expected_status": "[]",
        "body_contains": "",
        "host": "",
        "port": "",
        "queue": "",
        "grace_s": "0",
        "audit_reason": "watch it",
        "results-TOTAL_FORMS": "0",
        "results-INITIAL_FORMS": "0",
        "transitions-TOTAL_FORMS": "0",
        "transitions-INITIAL_FORMS": "0",
        **changes,
    }
    return {k: v for k, v in data.items() if v is not None}


def test_it_lists_checks_with_their_state(operator: Client) -> None:
    down = make_check("down", fall=1)
    services.record(down.pk, Outcome(False, error="x"), source="manual")
    make_check("fresh")
    page = operator.get(url(CHANGELIST)).content.decode()
    assert "rebound-health-unhealthy" in page and "rebound-health-unknown" in page
    assert ">down<" in page and ">fresh<" in page


def test_a_viewer_reads_but_does_not_add(viewer: Client) -> None:
    check = make_check("beat")
    assert viewer.get(url(CHANGELIST)).status_code == 200
    assert viewer.get(url("healing_healthcheck_change", check.pk)).status_code == 200
    assert viewer.get(url("healing_healthcheck_add")).status_code == 403


def test_an_operator_adds_a_check_through_the_service(operator: Client, target: Target) -> None:
    response = operator.post(
        url("healing_healthcheck_add"), form(kind="http", url=target.url("/health"), expected_status="[200]")
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    check = HealthCheck.objects.get(name="api")
    assert (check.kind, check.expected_status, check.next_due_at is not None) == ("http", [200], True)
    event = AuditEvent.objects.get(action="health_check.create")
    assert (event.source, event.reason, event.actor_label) == ("admin", "watch it", f"user:{operator.user}")  # type: ignore[attr-defined]


def test_the_admin_refuses_what_the_service_refuses(operator: Client, target: Target) -> None:
    missing_reason = operator.post(url("healing_healthcheck_add"), form(audit_reason=""))
    other_kind = operator.post(url("healing_healthcheck_add"), form(port="80"))
    no_url = operator.post(url("healing_healthcheck_add"), form(kind="http"))
    assert [r.status_code for r in (missing_reason, other_kind, no_url)] == [200, 200, 200]
    assert "port is for tcp checks" in other_kind.content.decode()
    assert "a http check needs url" in no_url.content.decode()
    assert not HealthCheck.objects.exists() and not AuditEvent.objects.exists()


def test_an_operator_changes_a_check_with_a_reason(operator: Client) -> None:
    check = make_check("api")
    services.record(check.pk, Outcome(True), source="manual")
    response = operator.post(
        url("healing_healthcheck_change", check.pk), form(interval_s="60", audit_reason="calmer")
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    check.refresh_from_db()
    assert (check.interval_s, check.consecutive_passes) == (60, 1)  # the streak survives a change of settings
    event = AuditEvent.objects.get(action="health_check.update")
    assert event.before is not None and event.after is not None
    assert (event.source, event.reason, event.before["interval_s"], event.after["interval_s"]) == (
        "admin",
        "calmer",
        30,
        60,
    )


def test_the_page_shows_the_newest_results_and_transitions(operator: Client) -> None:
    check = make_check("api", fall=1)
    services.record(check.pk, Outcome(False, error="connection refused by the far end"), source="manual")
    page = operator.get(url("healing_healthcheck_change", check.pk)).content.decode()
    assert "connection refused by the far end" in page
    assert "failed 1 checks in a row" in page
    assert "Every result" in page and "Run now" in page


def test_run_now_records_a_manual_result(operator: Client) -> None:
    check = make_check("beat")
    response = run_action(operator, CHANGELIST, "run_now", [check.pk])
    assert response.status_code == 302
    result = HealthCheckResult.objects.get()
    assert (result.source, result.ok) == ("manual", False)
    assert AuditEvent.objects.get(action="health_check.run").source == "admin"
    page = operator.get(url(CHANGELIST)).content.decode()
    assert "Ran beat: failed: no ping within 30 s (never pinged); now unknown." in page


def test_deleting_asks_why(operator: Client) -> None:
    check = make_check("beat")
    asked = run_action(operator, CHANGELIST, "delete_checks", [check.pk])
    assert asked.status_code == 200 and HealthCheck.objects.exists()
    done = run_action(operator, CHANGELIST, "delete_checks", [check.pk], **confirmed("retired"))
    assert done.status_code == 302
    assert not HealthCheck.objects.exists()
    assert AuditEvent.objects.get(action="health_check.delete").reason == "retired"


def test_results_and_transitions_are_read_only(operator: Client) -> None:
    check = make_check("beat", fall=1)
    services.record(check.pk, Outcome(False, error="x"), source="manual")
    assert operator.get(url("healing_healthcheckresult_changelist")).status_code == 200
    assert operator.get(url("healing_healthchecktransition_changelist")).status_code == 200
    assert operator.get(url("healing_healthcheckresult_add")).status_code == 403

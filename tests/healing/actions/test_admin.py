"""The healing admin: actions edited through the service (audited, with a reason), runs approved and rejected
with buttons that call the same services as the API (the policy holds there too), holds cleared with a reason."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from core.audit.models import AuditEvent
from healing.actions import services
from healing.actions.models import HealingAction, HealingHold
from tests.support.admin_helpers import confirmed, run_action, url
from tests.support.healing_runs import ask

pytestmark = pytest.mark.django_db
RUNS = "healing_healingrun_changelist"


def test_it_shows_every_healing_page(
    webhook: Callable[..., HealingAction], operator: Client, viewer: Client, enqueued: list[int]
) -> None:
    action = webhook(risk="medium")
    run, _ = ask("restart-pods", "agent")
    hold = HealingHold.objects.create(
        action=action, service="web-search", reason="looping", created_at=services._now()
    )
    for client in (operator, viewer):
        for page in (
            url("healing_healingaction_changelist"),
            url("healing_healingaction_change", action.pk),
            url(RUNS),
            url("healing_healingrun_change", run.pk),
            url("healing_healinghold_changelist"),
            url("healing_healinghold_change", hold.pk),
        ):
            assert client.get(page).status_code == 200, page
    page = operator.get(url("healing_healingrun_change", run.pk)).content.decode()
    assert "approve_runs" in page and "reject_runs" in page


def test_an_operator_approves_a_run_with_the_button(
    webhook: Callable[..., HealingAction],
    operator: Client,
    django_capture_on_commit_callbacks: Any,
    enqueued: list[int],
) -> None:
    webhook(risk="medium")
    run, _ = ask("restart-pods", "agent")
    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(operator, RUNS, "approve_runs", [run.pk])
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.state == "approved"
    assert enqueued == [run.pk]
    event = AuditEvent.objects.get(action="healing_run.approve")
    assert (event.source, event.actor_user_id) == ("admin", operator.user.pk)  # type: ignore[attr-defined]


def test_the_admin_keeps_the_requester_from_approving_a_high_risk_run(
    webhook: Callable[..., HealingAction], operator: Client, enqueued: list[int]
) -> None:
    webhook(risk="high")
    run, _ = ask("restart-pods", "operator", actor=services.Actor(user=operator.user))  # type: ignore[attr-defined]
    run_action(operator, RUNS, "approve_runs", [run.pk])
    run.refresh_from_db()
    assert run.state == "pending_approval"
    assert not run.approvals.exists()


def test_an_operator_rejects_a_run_with_a_reason(
    webhook: Callable[..., HealingAction], operator: Client
) -> None:
    webhook(risk="medium")
    run, _ = ask("restart-pods", "agent")
    asked = run_action(operator, RUNS, "reject_runs", [run.pk])
    assert asked.status_code == 200 and "reason" in asked.content.decode()
    run.refresh_from_db()
    assert run.state == "pending_approval"  # nothing happens before the reason
    done = run_action(operator, RUNS, "reject_runs", [run.pk], **confirmed("not our outage"))
    assert done.status_code == 302
    run.refresh_from_db()
    assert run.state == "rejected"
    assert list(run.approvals.values_list("decision", "reason")) == [("reject", "not our outage")]
    assert AuditEvent.objects.get(action="healing_run.reject").source == "admin"


def test_a_viewer_cannot_approve_in_the_admin(
    webhook: Callable[..., HealingAction], viewer: Client, enqueued: list[int]
) -> None:
    webhook(risk="medium")
    run, _ = ask("restart-pods", "agent")
    listing = viewer.get(url(RUNS)).content.decode()
    assert "approve_runs" not in listing
    run_action(viewer, RUNS, "approve_runs", [run.pk])
    run.refresh_from_db()
    assert run.state == "pending_approval"
    assert not run.approvals.exists()


def test_an_operator_edits_an_action_with_a_reason_audited(operator: Client) -> None:
    action = HealingAction.objects.get(name="flush_fallback_cache")
    page = url("healing_healingaction_change", action.pk)
    form = {
        "description": action.description,
        "risk": "medium",
        "enabled": "on",
        "cooldown_s": "60",
        "max_runs_per_hour": "12",
        "timeout_s": "60",
        "parameters_schema": '{"type": "object", "properties": {}, "additionalProperties": false}',
        "verify_check": "",
        "verify_within_s": "120",
        "url": "",
        "method": "POST",
        "body_template": "null",
        "audit_reason": "flushing hurt the p99 (INC-60)",
    }
    response = operator.post(page, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    action.refresh_from_db()
    assert action.risk == "medium"
    event = AuditEvent.objects.get(action="healing_action.update")
    assert (event.reason, event.source, event.after["risk"]) == (
        "flushing hurt the p99 (INC-60)",
        "admin",
        "medium",
    )


def test_the_admin_refuses_an_invalid_schema_and_keeps_the_page(operator: Client) -> None:
    action = HealingAction.objects.get(name="flush_fallback_cache")
    form = {
        "description": action.description,
        "risk": "low",
        "enabled": "on",
        "cooldown_s": "60",
        "max_runs_per_hour": "12",
        "timeout_s": "60",
        "parameters_schema": '{"type": "object", "patternProperties": {"^a": {}}}',
        "verify_check": "",
        "verify_within_s": "120",
        "url": "",
        "method": "POST",
        "body_template": "null",
        "audit_reason": "try",
    }
    response = operator.post(url("healing_healingaction_change", action.pk), form)
    assert response.status_code == 200
    assert "patternProperties is not supported" in response.content.decode()
    action.refresh_from_db()
    assert "patternProperties" not in action.parameters_schema
    assert not AuditEvent.objects.filter(action="healing_action.update").exists()


def test_an_operator_clears_a_hold_with_a_reason(
    webhook: Callable[..., HealingAction], operator: Client
) -> None:
    action = webhook()
    hold = HealingHold.objects.create(
        action=action, service="web-search", reason="looping", created_at=services._now()
    )
    changelist = "healing_healinghold_changelist"
    assert run_action(operator, changelist, "clear_holds", [hold.pk]).status_code == 200
    done = run_action(operator, changelist, "clear_holds", [hold.pk], **confirmed("cluster resized"))
    assert done.status_code == 302
    hold.refresh_from_db()
    assert (hold.cleared_reason, hold.cleared_by_id) == ("cluster resized", operator.user.pk)  # type: ignore[attr-defined]
    assert AuditEvent.objects.get(action="healing_hold.clear").source == "admin"

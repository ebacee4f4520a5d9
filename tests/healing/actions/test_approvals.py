"""Approvals, rejections, cancellations and expiry: every decision an Approval row and an audit event, every
move a transition row, and a 409 for a decision the run's state does not allow."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from prometheus_client import REGISTRY

from core.audit.models import AuditEvent
from healing.actions import services
from healing.actions.models import Approval, HealingAction
from tests.support import factories
from tests.support.healing_runs import ask, execute, operator_actor

pytestmark = pytest.mark.django_db


def moves(run: Any) -> list[tuple[str, str]]:
    return list(run.transitions.order_by("created_at", "id").values_list("from_state", "to_state"))


def test_it_starts_a_medium_run_once_an_operator_approves(
    webhook: Callable[..., HealingAction],
    operator_client: Any,
    django_capture_on_commit_callbacks: Any,
    enqueued: list[int],
) -> None:
    webhook(risk="medium")
    run, _ = ask("restart-pods", "agent")
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(
            f"/api/v1/healing/runs/{run.pk}/approve", {"reason": "seen it too"}, format="json"
        )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["state"] == "approved"
    assert [(a["who"], a["decision"], a["reason"]) for a in body["approvals"]] == [
        (operator_client.user.username, "approve", "seen it too")
    ]
    assert [(h["from_state"], h["to_state"]) for h in body["history"]] == [
        (None, "pending_approval"),
        ("pending_approval", "approved"),
    ]
    assert enqueued == [run.pk]
    event = AuditEvent.objects.get(action="healing_run.approve", target_id=str(run.pk))
    assert (event.actor_user_id, event.reason) == (operator_client.user.pk, "seen it too")


def test_it_answers_a_repeated_approval_without_a_second_row(
    webhook: Callable[..., HealingAction], operator_client: Any, enqueued: list[int]
) -> None:
    webhook(risk="high")
    run, _ = ask("restart-pods", "agent")
    for _ in range(3):
        response = operator_client.post(f"/api/v1/healing/runs/{run.pk}/approve", {}, format="json")
        assert response.status_code == 200
    assert Approval.objects.filter(run=run).count() == 1
    assert AuditEvent.objects.filter(action="healing_run.approve", target_id=str(run.pk)).count() == 1
    run.refresh_from_db()
    assert run.state == "pending_approval"


def test_it_answers_409_to_approving_a_running_run(
    webhook: Callable[..., HealingAction], operator_client: Any, enqueued: list[int]
) -> None:
    webhook(risk="low")
    run, _ = ask("restart-pods", "agent")
    services.HealingRun.objects.filter(pk=run.pk).update(state="running")
    response = operator_client.post(f"/api/v1/healing/runs/{run.pk}/approve", {}, format="json")
    assert response.status_code == 409, response.json()
    assert not Approval.objects.filter(run=run).exists()


@pytest.mark.parametrize("verb", ["reject", "cancel"])
@pytest.mark.parametrize("body", [{}, {"reason": ""}, {"reason": "   "}])
def test_it_needs_a_reason_to_reject_or_cancel(
    verb: str, body: dict[str, Any], webhook: Callable[..., HealingAction], operator_client: Any
) -> None:
    webhook(risk="medium")
    run, _ = ask("restart-pods", "agent")
    response = operator_client.post(f"/api/v1/healing/runs/{run.pk}/{verb}", body, format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["errors"][0]["field"] == "reason"
    run.refresh_from_db()
    assert run.state == "pending_approval"
    assert not Approval.objects.filter(run=run).exists()


def test_it_rejects_with_a_row_an_audit_event_and_a_transition(
    webhook: Callable[..., HealingAction], operator_client: Any
) -> None:
    webhook(risk="medium")
    run, _ = ask("restart-pods", "agent")
    response = operator_client.post(
        f"/api/v1/healing/runs/{run.pk}/reject", {"reason": "their outage, not ours"}, format="json"
    )
    assert response.status_code == 200, response.json()
    run.refresh_from_db()
    assert run.state == "rejected"
    assert run.finished_at is not None
    assert "their outage, not ours" in run.state_reason
    assert list(Approval.objects.filter(run=run).values_list("decision", "reason")) == [
        ("reject", "their outage, not ours")
    ]
    assert AuditEvent.objects.filter(action="healing_run.reject", target_id=str(run.pk)).count() == 1
    assert moves(run)[-1] == ("pending_approval", "rejected")
    again = operator_client.post(f"/api/v1/healing/runs/{run.pk}/reject", {"reason": "again"}, format="json")
    assert again.status_code == 409


def test_it_cancels_an_approved_run_whose_execution_then_does_nothing(
    webhook: Callable[..., HealingAction], target: Any, enqueued: list[int]
) -> None:
    webhook(risk="low")
    run, _ = ask("restart-pods", "agent")
    services.cancel(run_id=run.pk, actor=operator_actor(), reason="not now")
    assert execute(run) == "stale"
    assert run.state == "cancelled"
    assert target.seen == []
    assert moves(run) == [("", "approved"), ("approved", "cancelled")]
    assert AuditEvent.objects.filter(action="healing_run.cancel", target_id=str(run.pk)).count() == 1


def test_it_does_not_cancel_a_running_run(
    webhook: Callable[..., HealingAction], operator_client: Any, enqueued: list[int]
) -> None:
    webhook(risk="low")
    run, _ = ask("restart-pods", "agent")
    services.HealingRun.objects.filter(pk=run.pk).update(state="running")
    response = operator_client.post(
        f"/api/v1/healing/runs/{run.pk}/cancel", {"reason": "stop"}, format="json"
    )
    assert response.status_code == 409
    run.refresh_from_db()
    assert run.state == "running"


def test_it_expires_a_run_nobody_decided_on(webhook: Callable[..., HealingAction]) -> None:
    webhook(risk="medium")
    with override_settings(REBOUND=factories.rebound_settings(HEALING_APPROVAL_TIMEOUT_SECONDS=60)):
        run, _ = ask("restart-pods", "agent")
        assert run.approval_deadline is not None
        assert services.maintain_runs(run.approval_deadline - timedelta(seconds=1))["expired"] == 0
        assert services.maintain_runs(run.approval_deadline + timedelta(seconds=1))["expired"] == 1
    run.refresh_from_db()
    assert run.state == "expired"
    assert run.state_reason.startswith("expired")
    assert moves(run) == [("", "pending_approval"), ("pending_approval", "expired")]
    with pytest.raises(services.Conflict):
        services.approve(run_id=run.pk, actor=operator_actor())


def test_it_answers_404_for_a_run_that_does_not_exist(operator_client: Any) -> None:
    for run_id in ("999999", "abc", "9" * 40, "-1"):
        response = operator_client.post(f"/api/v1/healing/runs/{run_id}/approve", {}, format="json")
        assert response.status_code == 404, (run_id, response.json())
        assert operator_client.get(f"/api/v1/healing/runs/{run_id}").status_code == 404


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_it_counts_final_states_and_the_wait_for_approval(
    webhook: Callable[..., HealingAction], django_capture_on_commit_callbacks: Any, enqueued: list[int]
) -> None:
    webhook(risk="medium", cooldown_s=600)
    waits = _sample("healing_approval_wait_seconds_count")
    rejected = _sample("healing_runs_total", action="restart-pods", result="rejected")
    with django_capture_on_commit_callbacks(execute=True):
        run, _ = ask("restart-pods", "agent")
        services.approve(run_id=run.pk, actor=operator_actor())
    assert _sample("healing_approval_wait_seconds_count") == waits + 1
    assert execute(run) == "succeeded"
    with django_capture_on_commit_callbacks(execute=True):
        skipped, _ = ask("restart-pods", "agent")  # within the cooldown
        other, _ = ask("restart-pods", "agent", service="billing")
        services.reject(run_id=other.pk, actor=operator_actor(), reason="not now")
    assert skipped.state == "skipped"
    assert _sample("healing_runs_total", action="restart-pods", result="skipped") >= 1
    assert _sample("healing_runs_total", action="restart-pods", result="rejected") == rejected + 1


def test_maintenance_starts_a_run_whose_approvals_were_counted_too_early(
    webhook: Callable[..., HealingAction], django_capture_on_commit_callbacks: Any, enqueued: list[int]
) -> None:
    webhook(risk="medium")
    run, _ = ask("restart-pods", "agent")
    # An approval whose own count missed it (committed inside a caller's longer transaction, say).
    Approval.objects.create(
        run=run, user=factories.operator(), decision="approve", created_at=services._now()
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert services.maintain_runs()["started"] == 1
    run.refresh_from_db()
    assert run.state == "approved"
    assert enqueued == [run.pk]
    assert services.maintain_runs()["started"] == 0

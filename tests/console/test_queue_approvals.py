"""The review queue's healing runs waiting for approval: operators approve and reject in place through the same
service functions as the API (an Approval row, an audit event with source console, the run moving on as the
policy says); reviewers and viewers see them and may not decide."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.audit.models import AuditEvent
from healing.actions import services
from healing.actions.models import Approval, HealingAction, HealingRun
from tests.support import factories
from tests.support.admin_helpers import login
from tests.support.escalations import reviewer
from tests.support.healing_runs import ask, operator_actor, run_row

pytestmark = pytest.mark.django_db

QUEUE = "/console/queue/"
HTMX = {"HX-Request": "true"}


def decide(run: HealingRun | int, verb: str) -> str:
    pk = run if isinstance(run, int) else run.pk
    return f"/console/runs/{pk}/{verb}/"


@pytest.fixture
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The run ids whose execution the services sent (recorded, not sent to the broker)."""
    sent: list[int] = []
    monkeypatch.setattr(services, "enqueue_execution", lambda run_id, timeout_s: sent.append(run_id))
    return sent


def action(risk: str, name: str = "restart-pods") -> HealingAction:
    """A webhook action of this risk (never executed here: the execution is only enqueued)."""
    return HealingAction.objects.create(
        name=name, kind="webhook", risk=risk, cooldown_s=0, url="http://127.0.0.1:9/heal", method="POST"
    )


def waiting(risk: str) -> HealingRun:
    """A run an agent asked for that waits for approval (medium: one operator; high: two)."""
    action(risk)
    run, created = ask("restart-pods", "agent")
    assert created and run.state == "pending_approval"
    return run


def row_of(html: str, run: HealingRun) -> str:
    start = html.index(f'data-run="{run.pk}"')
    return html[start : html.index("</tr>", start)]


# --- the table -----------------------------------------------------------------------------------------------------


def test_it_lists_runs_waiting_for_approval_with_what_a_decision_needs(viewer: Client) -> None:
    run = waiting("medium")
    HealingRun.objects.filter(pk=run.pk).update(parameters={"replicas": 3})
    done = run_row(action("low", "flush-cache"), "succeeded")
    html = viewer.get(QUEUE).content.decode()
    assert f'<tr id="run-{run.pk}" data-run="{run.pk}" data-state="pending_approval">' in html
    assert f'data-run="{done.pk}"' not in html
    row = row_of(html, run)
    assert "restart-pods" in row and 'href="/console/services/web-search/"' in row
    assert '<span class="pill medium">medium</span>' in row
    assert "{&quot;replicas&quot;: 3}" in row and "search answers 503" in row
    assert "none yet" in row and "0 of 1: waits for 1 more approver" in row
    assert "data-action" not in html


def test_it_shows_an_operator_approve_and_reject(operator: Client) -> None:
    run = waiting("medium")
    row = row_of(operator.get(QUEUE).content.decode(), run)
    assert row.count('data-action="approve"') == 1 and row.count('data-action="reject"') == 1
    assert 'name="reason"' in row and 'name="next" value="/console/queue/"' in row


def test_it_shows_a_reviewer_no_decision(viewer: Client) -> None:
    run = waiting("medium")
    html = login(reviewer()).get(QUEUE).content.decode()
    assert f'data-run="{run.pk}"' in html
    assert 'data-action="approve"' not in html and 'data-action="reject"' not in html


def test_it_filters_runs_by_service_too(viewer: Client) -> None:
    run = waiting("medium")
    html = viewer.get(QUEUE, {"service": "billing"}).content.decode()
    assert f'data-run="{run.pk}"' not in html
    assert f'data-run="{run.pk}"' in viewer.get(QUEUE, {"service": "web-search"}).content.decode()


def test_it_shows_the_second_approver_of_a_high_risk_run_who_approved_first(operator: Client) -> None:
    run = waiting("high")
    first = factories.operator(username="alice")
    services.approve(run_id=run.pk, actor=operator_actor(first))
    row = row_of(operator.get(QUEUE).content.decode(), run)
    assert "approved by alice" in row
    assert "1 of 2: waits for a second approver, not the requester" in row
    assert 'data-action="approve"' in row


def test_it_tells_the_first_approver_they_approved_already(operator: Client, enqueued: list[int]) -> None:
    run = waiting("high")
    services.approve(run_id=run.pk, actor=operator_actor(operator.user))  # type: ignore[attr-defined]
    row = row_of(operator.get(QUEUE).content.decode(), run)
    assert "you approved" in row and 'data-action="approve"' not in row
    assert 'data-action="reject"' in row


def test_it_reads_the_runs_in_a_bounded_number_of_queries(operator: Client) -> None:
    medium = action("medium")
    approver = factories.operator()

    def queries(count: int) -> int:
        HealingRun.objects.all().delete()
        for n in range(count):
            run = run_row(medium, "pending_approval", service=f"svc-{n}", approvals_required=2)
            Approval.objects.create(run=run, user=approver, decision="approve", created_at=timezone.now())
        with CaptureQueriesContext(connection) as captured:
            html = operator.get(QUEUE).content.decode()
        assert len(re.findall(r"data-run=", html)) == count
        return len(captured.captured_queries)

    assert queries(5) == queries(30)


# --- approve --------------------------------------------------------------------------------------------------------


def test_it_approves_a_medium_run_which_moves_on_as_through_the_api(
    operator: Client, enqueued: list[int], django_capture_on_commit_callbacks: Any
) -> None:
    run = waiting("medium")
    with django_capture_on_commit_callbacks(execute=True):
        response = operator.post(decide(run, "approve"), {"next": "/console/queue/?service=web-search"})
    assert response.status_code == 303
    assert response["Location"] == "/console/queue/?service=web-search"
    run.refresh_from_db()
    assert run.state == "approved"
    assert enqueued == [run.pk]
    (approval,) = Approval.objects.filter(run=run)
    assert (approval.user, approval.decision) == (operator.user, "approve")  # type: ignore[attr-defined]
    assert list(run.transitions.values_list("from_state", "to_state")) == [
        ("", "pending_approval"),
        ("pending_approval", "approved"),
    ]
    (audit,) = AuditEvent.objects.filter(action="healing_run.approve", target_id=str(run.pk))
    assert (audit.source, audit.actor_user) == ("console", operator.user)  # type: ignore[attr-defined]


def test_it_answers_an_htmx_approval_with_the_run_row_as_it_is_now(
    operator: Client, enqueued: list[int]
) -> None:
    run = waiting("medium")
    response = operator.post(decide(run, "approve"), {"next": QUEUE}, headers=HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert html.startswith(f'<tr id="run-{run.pk}" data-run="{run.pk}" data-state="approved">')
    assert f"Run #{run.pk} approved" in html and 'hx-swap-oob="innerHTML"' in html
    assert 'data-action="approve"' not in html


def test_it_keeps_a_high_risk_run_waiting_after_the_first_approval(
    operator: Client, enqueued: list[int]
) -> None:
    run = waiting("high")
    response = operator.post(decide(run, "approve"), headers=HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-state="pending_approval"' in html and "waits for another operator" in html
    assert f"approved by {operator.user.username}" in html  # type: ignore[attr-defined]
    run.refresh_from_db()
    assert run.state == "pending_approval" and enqueued == []
    second = login(factories.operator())
    assert second.post(decide(run, "approve")).status_code == 303
    run.refresh_from_db()
    assert run.state == "approved"
    assert Approval.objects.filter(run=run, decision="approve").count() == 2


def test_it_refuses_the_requester_of_a_high_risk_run_with_403(operator: Client) -> None:
    action("high")
    run, _ = ask("restart-pods", "operator", actor=operator_actor(operator.user))  # type: ignore[attr-defined]
    response = operator.post(decide(run, "approve"))
    assert response.status_code == 403
    assert not Approval.objects.filter(run=run).exists()


def test_it_answers_approving_a_run_no_longer_waiting_with_409(operator: Client) -> None:
    run = waiting("medium")
    HealingRun.objects.filter(pk=run.pk).update(state="running")
    assert operator.post(decide(run, "approve")).status_code == 409
    assert not Approval.objects.filter(run=run).exists()


# --- reject ---------------------------------------------------------------------------------------------------------


def test_it_rejects_with_a_reason(operator: Client) -> None:
    run = waiting("medium")
    response = operator.post(decide(run, "reject"), {"reason": "not during the sale"})
    assert response.status_code == 303
    run.refresh_from_db()
    assert run.state == "rejected" and run.finished_at is not None
    (decision,) = Approval.objects.filter(run=run)
    assert (decision.decision, decision.reason) == ("reject", "not during the sale")
    (audit,) = AuditEvent.objects.filter(action="healing_run.reject", target_id=str(run.pk))
    assert (audit.source, audit.reason, audit.after) == (
        "console",
        "not during the sale",
        {"state": "rejected"},
    )


@pytest.mark.parametrize("data", [{}, {"reason": ""}, {"reason": "   "}])
def test_it_refuses_a_rejection_without_a_reason_naming_it(operator: Client, data: dict[str, str]) -> None:
    run = waiting("medium")
    response = operator.post(decide(run, "reject"), data)
    assert response.status_code == 400
    assert "reason:" in response.content.decode()
    run.refresh_from_db()
    assert run.state == "pending_approval"
    assert not Approval.objects.filter(run=run).exists()


def test_it_answers_an_htmx_rejection_with_the_rejected_row(operator: Client) -> None:
    run = waiting("medium")
    html = operator.post(decide(run, "reject"), {"reason": "no"}, headers=HTMX).content.decode()
    assert f'data-run="{run.pk}" data-state="rejected"' in html
    assert "data-action" not in html


# --- who may --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["approve", "reject"])
@pytest.mark.parametrize("role", ["viewer", "reviewer"])
def test_it_refuses_a_viewer_or_a_reviewer_with_403_and_changes_nothing(
    viewer: Client, verb: str, role: str, enqueued: list[int]
) -> None:
    client = viewer if role == "viewer" else login(reviewer())
    run = waiting("medium")
    response = client.post(decide(run, verb), {"reason": "because"})
    assert response.status_code == 403
    assert "needs an operator" in response.content.decode()
    run.refresh_from_db()
    assert run.state == "pending_approval"
    assert not Approval.objects.filter(run=run).exists()
    assert not AuditEvent.objects.filter(target_id=str(run.pk), source="console").exists()


def test_it_answers_an_unknown_run_with_404(operator: Client) -> None:
    assert operator.post(decide(987654, "approve")).status_code == 404
    assert operator.post(decide(10**20, "reject"), {"reason": "x"}).status_code == 404


def test_it_answers_an_unknown_decision_with_404(operator: Client) -> None:
    run = waiting("medium")
    assert operator.post(decide(run, "cancel"), {"reason": "x"}).status_code == 404
    run.refresh_from_db()
    assert run.state == "pending_approval"

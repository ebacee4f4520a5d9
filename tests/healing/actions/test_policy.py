"""The approval policy by risk and trigger, enforced in the service layer (docs/healing.md has the table)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from core.api.errors import Forbidden
from core.audit.models import AuditEvent
from healing.actions import policy, services
from healing.actions.models import Approval, HealingAction, HealingHold
from tests.support import factories
from tests.support.healing_runs import ask, operator_actor

pytestmark = pytest.mark.django_db

# (risk, trigger) -> (state of the new run, approvals required); None: refused with 403.
TABLE: dict[tuple[str, str], tuple[str, int] | None] = {
    ("low", "agent"): ("approved", 0),
    ("low", "rule"): ("approved", 0),
    ("low", "operator"): ("approved", 0),
    ("medium", "agent"): ("pending_approval", 1),
    ("medium", "rule"): ("pending_approval", 1),
    ("medium", "operator"): ("approved", 1),  # the operator's own request is the approval
    ("high", "agent"): ("pending_approval", 2),
    ("high", "rule"): ("pending_approval", 2),
    ("high", "operator"): ("pending_approval", 2),
    ("critical", "agent"): None,
    ("critical", "rule"): None,
    ("critical", "operator"): ("pending_approval", 2),
}


@pytest.mark.parametrize(("risk", "trigger"), list(TABLE))
def test_it_applies_the_policy_table(
    risk: str, trigger: str, webhook: Callable[..., HealingAction], enqueued: list[int]
) -> None:
    webhook(risk=risk)
    expected = TABLE[(risk, trigger)]
    if expected is None:
        with pytest.raises(Forbidden):
            ask("restart-pods", trigger)
        assert not services.HealingRun.objects.exists()
        return
    run, created = ask("restart-pods", trigger)
    run.refresh_from_db()
    assert created
    assert (run.state, run.approvals_required, run.risk, run.trigger) == (*expected, risk, trigger)
    assert list(run.transitions.values_list("from_state", "to_state")) == [("", expected[0])]
    assert (
        run.approval_deadline is not None
        if expected[0] == "pending_approval"
        else run.approval_deadline is None
    )


def test_it_counts_an_operators_own_medium_request_as_the_approval(
    webhook: Callable[..., HealingAction], django_capture_on_commit_callbacks: Any, enqueued: list[int]
) -> None:
    webhook(risk="medium")
    user = factories.operator()
    with django_capture_on_commit_callbacks(execute=True):
        run, _ = ask("restart-pods", "operator", actor=operator_actor(user))
    assert run.state == "approved"
    assert list(run.approvals.values_list("user", "decision")) == [(user.pk, "approve")]
    assert AuditEvent.objects.filter(action="healing_run.approve", target_id=str(run.pk)).count() == 1
    assert enqueued == [run.pk]


def test_it_refuses_the_requester_as_an_approver_of_a_high_risk_run(
    webhook: Callable[..., HealingAction], enqueued: list[int]
) -> None:
    webhook(risk="high")
    user = factories.operator()
    run, _ = ask("restart-pods", "operator", actor=operator_actor(user))
    with pytest.raises(Forbidden):
        services.approve(run_id=run.pk, actor=operator_actor(user))
    run.refresh_from_db()
    assert run.state == "pending_approval"
    assert not Approval.objects.filter(run=run).exists()


def test_it_needs_two_different_operators_for_a_high_risk_run(
    webhook: Callable[..., HealingAction], django_capture_on_commit_callbacks: Any, enqueued: list[int]
) -> None:
    webhook(risk="high")
    run, _ = ask("restart-pods", "agent")
    first = operator_actor()
    services.approve(run_id=run.pk, actor=first)
    services.approve(run_id=run.pk, actor=first)  # the same operator twice is one approval
    run.refresh_from_db()
    assert run.state == "pending_approval"
    with django_capture_on_commit_callbacks(execute=True):
        services.approve(run_id=run.pk, actor=operator_actor())
    run.refresh_from_db()
    assert run.state == "approved"
    assert run.approvals.filter(decision="approve").count() == 2
    assert enqueued == [run.pk]


def test_it_refuses_a_critical_run_asked_for_by_an_agent_through_the_api(
    webhook: Callable[..., HealingAction], agent_client: Any
) -> None:
    webhook(risk="critical")
    response = agent_client.post(
        "/api/v1/healing/runs",
        {"action": "restart-pods", "service": "web-search", "reason": "down"},
        format="json",
    )
    assert response.status_code == 403, response.json()
    assert response.json()["errors"][0]["field"] == "action"
    assert not services.HealingRun.objects.exists()


@pytest.mark.parametrize("trigger", ["agent", "rule"])
def test_it_makes_an_automatic_low_risk_request_wait_for_an_operator_while_held(
    trigger: str, webhook: Callable[..., HealingAction], enqueued: list[int]
) -> None:
    action = webhook(risk="low")
    HealingHold.objects.create(
        action=action, service="web-search", reason="looping", created_at=services._now()
    )
    run, _ = ask("restart-pods", trigger)
    assert (run.state, run.approvals_required) == ("pending_approval", 1)
    other, _ = ask("restart-pods", trigger, service="billing")  # another target is not held
    assert other.state == "approved"


def test_it_lets_an_operators_request_run_while_held(
    webhook: Callable[..., HealingAction], enqueued: list[int]
) -> None:
    action = webhook(risk="low")
    HealingHold.objects.create(
        action=action, service="web-search", reason="looping", created_at=services._now()
    )
    run, _ = ask("restart-pods", "operator")
    assert run.state == "approved"


@pytest.mark.parametrize("who", ["viewer", "agent"])
def test_it_lets_only_operators_approve(
    who: str, webhook: Callable[..., HealingAction], viewer_client: Any, agent_client: Any
) -> None:
    webhook(risk="medium")
    run, _ = ask("restart-pods", "agent")
    client = viewer_client if who == "viewer" else agent_client
    for verb, body in (("approve", {}), ("reject", {"reason": "no"}), ("cancel", {"reason": "no"})):
        response = client.post(f"/api/v1/healing/runs/{run.pk}/{verb}", body, format="json")
        assert response.status_code == 403, (verb, response.json())
    run.refresh_from_db()
    assert run.state == "pending_approval"
    assert not Approval.objects.filter(run=run).exists()


def test_it_refuses_an_agent_as_an_approver_in_the_service_layer(
    webhook: Callable[..., HealingAction],
) -> None:
    webhook(risk="medium")
    run, _ = ask("restart-pods", "agent")
    with pytest.raises(Forbidden):
        services.approve(run_id=run.pk, actor=services.Actor(agent=factories.AgentFactory()))
    viewer = services.Actor(user=factories.viewer())
    with pytest.raises(Forbidden):
        services.approve(run_id=run.pk, actor=viewer)


def test_the_requirement_refuses_critical_automatic_triggers() -> None:
    for trigger in ("agent", "rule", "escalation"):
        with pytest.raises(policy.Refused):
            policy.requirement("critical", trigger)
    assert policy.requirement("critical", "operator").approvals == 2

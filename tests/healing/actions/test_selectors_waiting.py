"""selectors.approvals_missing: how many more operators a run pending approval waits for, counted as the services
count approvals (a high or critical run's requester does not count; a rejection is no approval)."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from healing.actions import selectors
from healing.actions.models import Approval, HealingAction, HealingRun
from tests.support import factories
from tests.support.healing_runs import run_row

pytestmark = pytest.mark.django_db


def decide(run: HealingRun, user: Any, decision: str = "approve") -> None:
    Approval.objects.create(run=run, user=user, decision=decision, created_at=timezone.now())


def pending(risk: str, required: int, requester: Any = None) -> HealingRun:
    action = HealingAction.objects.get(name="reset_breaker")
    return run_row(
        action, "pending_approval", risk=risk, approvals_required=required, requested_by_user=requester
    )


def test_it_counts_every_approval_still_needed_by_a_run_nobody_approved() -> None:
    assert selectors.approvals_missing(pending("high", 2)) == 2


def test_it_counts_an_approval_given() -> None:
    run = pending("high", 2)
    decide(run, factories.operator())
    assert selectors.approvals_missing(run) == 1


def test_it_does_not_count_the_approval_of_a_high_risk_runs_requester() -> None:
    requester = factories.operator()
    run = pending("high", 2, requester=requester)
    decide(run, requester)
    decide(run, factories.operator())
    assert selectors.approvals_missing(run) == 1


def test_it_counts_the_approval_of_a_medium_risk_runs_requester() -> None:
    requester = factories.operator()
    run = pending("medium", 1, requester=requester)
    decide(run, requester)
    assert selectors.approvals_missing(run) == 0


def test_it_does_not_count_a_rejection() -> None:
    run = pending("medium", 1)
    decide(run, factories.operator(), decision="reject")
    assert selectors.approvals_missing(run) == 1


def test_it_answers_zero_for_a_run_not_pending_approval() -> None:
    action = HealingAction.objects.get(name="reset_breaker")
    run = run_row(action, "approved", approvals_required=1)
    assert selectors.approvals_missing(run) == 0

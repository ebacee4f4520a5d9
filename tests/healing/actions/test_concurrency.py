"""Races with real threads against PostgreSQL: fifty approvals at once start one execution and make one webhook
call; ten requests at once for the same target make one run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from healing.actions import services
from healing.actions.models import Approval, HealingAction, HealingRun
from tests.support import factories
from tests.support.healing_runs import agent_actor, ask, execute, operator_actor
from tests.support.races import at_once

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.mark.slow  # fifty threads, each with a database connection of its own: about a second
def test_fifty_approvals_at_once_start_one_execution_and_one_webhook_call(
    webhook: Callable[..., HealingAction], target: Any, enqueued: list[int]
) -> None:
    webhook(risk="high")  # two operators needed: many approvers see "enough" at once
    run, _ = ask("restart-pods", "agent", parameters={"replicas": 2})
    approvers = [operator_actor() for _ in range(50)]
    results = at_once(50, lambda i: services.approve(run_id=run.pk, actor=approvers[i]))
    # An approval that arrives once the run is approved is a 409 (nothing left to approve), never an error.
    late = [r for r in results if isinstance(r, services.Conflict)]
    assert [r for r in results if isinstance(r, Exception) and r not in late] == []
    run.refresh_from_db()
    assert run.state == "approved"
    assert Approval.objects.filter(run=run, decision="approve").count() == 50 - len(late) >= 2
    assert list(run.transitions.values_list("from_state", "to_state")) == [
        ("", "pending_approval"),
        ("pending_approval", "approved"),
    ]
    assert enqueued == [run.pk]
    # Every message a broker could deliver for it (the one sent, and a duplicate of it): one call.
    answers = [execute(run, f"task-{n}") for n in range(3)]
    assert answers == ["succeeded", "stale", "stale"]
    assert len(target.seen) == 1
    assert target.seen[0].headers["Idempotency-Key"] == str(run.pk)


@pytest.mark.slow  # fifty threads, each with a database connection of its own
def test_fifty_clicks_of_one_operator_are_one_approval(
    webhook: Callable[..., HealingAction], enqueued: list[int]
) -> None:
    webhook(risk="high")
    run, _ = ask("restart-pods", "agent")
    user = factories.operator()
    results = at_once(50, lambda i: services.approve(run_id=run.pk, actor=operator_actor(user)))
    assert [r for r in results if isinstance(r, Exception)] == []
    assert Approval.objects.filter(run=run).count() == 1
    run.refresh_from_db()
    assert run.state == "pending_approval"
    assert enqueued == []


def test_ten_requests_at_once_for_one_target_make_one_run(
    webhook: Callable[..., HealingAction], enqueued: list[int]
) -> None:
    webhook(risk="medium")
    actors = [agent_actor() for _ in range(10)]
    results = at_once(
        10,
        lambda i: services.request_run(
            action="restart-pods",
            service="web-search",
            parameters={},
            reason="503s",
            trigger="agent",
            actor=actors[i],
        ),
    )
    assert [r for r in results if isinstance(r, Exception)] == []
    assert HealingRun.objects.count() == 1
    run = HealingRun.objects.get()
    assert {r[0].pk for r in results} == {run.pk}
    assert sum(1 for r in results if r[1]) == 1

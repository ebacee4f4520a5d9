"""trigger_healing, called as the plain tool function with a verified caller: the same approval policy as
POST /api/v1/healing/runs (low runs, medium and high wait, critical refused to agents), the open run joined, the
parameters checked naming `parameters.<path>`, the request audited as the agent's through MCP, and what the run
waits for in words."""

from __future__ import annotations

from datetime import timedelta
from importlib import import_module

import pytest
from django.apps import apps
from django.utils import timezone

from core.api.errors import Forbidden, InvalidInput
from core.audit.models import AuditEvent
from healing.actions import services as healing_services
from healing.actions.models import HealingAction, HealingHold, HealingRun
from mcp_server import callers
from mcp_server.tools.healing import trigger_healing
from tests.support.healing_runs import run_row
from tests.support.mcp_calls import through_sdk

pytestmark = pytest.mark.django_db

REASON = "search answers 503 for 5 minutes"


@pytest.fixture(autouse=True)
def builtin_actions() -> None:
    """The built-in actions as migration healing/0005 creates them (a transactional test elsewhere may have
    emptied the table; tests/healing/actions/conftest.py does the same)."""
    import_module("healing.migrations.0005_builtin_healing_actions").create(apps, None)


@pytest.fixture(autouse=True)
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The runs whose execution the services send, recorded instead: these tests look at the request."""
    sent: list[int] = []
    monkeypatch.setattr(healing_services, "enqueue_execution", lambda run_id, timeout_s: sent.append(run_id))
    return sent


def test_it_runs_a_low_risk_action_at_once(agent_caller: callers.Caller) -> None:
    out = trigger_healing(agent_caller, action="flush_fallback_cache", service="web-search", reason=REASON)

    run = HealingRun.objects.get()
    assert (out.created, out.run.id, out.run.state, out.waiting_for) == (True, run.pk, "approved", None)
    assert (run.state, run.trigger, run.requested_by_agent) == ("approved", "agent", agent_caller.agent)


def test_it_says_a_medium_risk_run_of_an_agent_waits_for_one_operator(agent_caller: callers.Caller) -> None:
    out = trigger_healing(agent_caller, action="reset_breaker", service="web-search", reason=REASON)

    assert (out.run.state, out.run.approvals_required) == ("pending_approval", 1)
    assert out.waiting_for == "approval by 1 more operator(s)"


def test_it_says_a_high_risk_run_of_an_operator_waits_for_two_others(operator_caller: callers.Caller) -> None:
    out = trigger_healing(operator_caller, action="restart_worker_pool", service="celery", reason=REASON)

    assert (out.run.state, out.run.trigger, out.run.approvals) == ("pending_approval", "operator", [])
    assert out.waiting_for == "approval by 2 more operator(s) other than the requester"


def test_it_says_a_held_action_waits_for_an_operator(agent_caller: callers.Caller) -> None:
    action = HealingAction.objects.get(name="flush_fallback_cache")
    HealingHold.objects.create(
        action=action, service="web-search", reason="looping", created_at=timezone.now()
    )

    out = trigger_healing(agent_caller, action="flush_fallback_cache", service="web-search", reason=REASON)

    assert out.run.state == "pending_approval"
    assert out.waiting_for is not None
    assert out.waiting_for.startswith("approval by 1 more operator(s)")
    assert "until an operator clears the hold" in out.waiting_for


def test_it_says_a_run_in_the_cooldown_may_be_asked_for_again_later(agent_caller: callers.Caller) -> None:
    action = HealingAction.objects.get(name="flush_fallback_cache")
    done = timezone.now() - timedelta(seconds=10)
    run_row(action, "succeeded", created_at=done, started_at=done, finished_at=done)

    out = trigger_healing(agent_caller, action="flush_fallback_cache", service="web-search", reason=REASON)

    assert out.run.state == "skipped"
    assert out.run.not_before == done + timedelta(seconds=action.cooldown_s)
    assert out.waiting_for is not None
    assert out.waiting_for.startswith(f"the cooldown: not before {out.run.not_before.isoformat()}")


def test_it_refuses_an_agent_a_critical_action_saying_why(agent_caller: callers.Caller) -> None:
    HealingAction.objects.filter(name="reset_breaker").update(risk="critical")

    with pytest.raises(Forbidden) as refused:
        trigger_healing(agent_caller, action="reset_breaker", service="web-search", reason=REASON)

    assert "a critical action is never started by an agent" in refused.value.message
    assert refused.value.field == "action"
    assert HealingRun.objects.count() == 0


def test_it_answers_the_open_run_to_the_same_request(agent_caller: callers.Caller) -> None:
    first = trigger_healing(agent_caller, action="reset_breaker", service="web-search", reason=REASON)
    again = trigger_healing(agent_caller, action="reset_breaker", service="web-search", reason=REASON)

    assert (first.created, again.created) == (True, False)
    assert again.run.id == first.run.id
    assert HealingRun.objects.count() == 1


def test_it_names_the_parameter_at_fault(agent_caller: callers.Caller) -> None:
    with pytest.raises(InvalidInput) as refused:
        trigger_healing(
            agent_caller,
            action="replay_dead_letters",
            service="web-search",
            reason=REASON,
            parameters={"limit": 0},
        )

    assert [e["field"] for e in refused.value.errors] == ["parameters.limit"]
    assert HealingRun.objects.count() == 0


def test_it_audits_the_request_as_the_agents_through_mcp(agent_caller: callers.Caller) -> None:
    out = trigger_healing(agent_caller, action="reset_breaker", service="web-search", reason=REASON)

    event = AuditEvent.objects.get(action="healing_run.request")
    assert (event.target_id, event.actor_agent, event.actor_user, event.source, event.reason) == (
        str(out.run.id),
        agent_caller.agent,
        None,
        "mcp",
        REASON,
    )


def test_it_refuses_a_viewer(viewer_caller: callers.Caller) -> None:
    with pytest.raises(Forbidden):
        trigger_healing(viewer_caller, action="flush_fallback_cache", service="web-search", reason=REASON)
    assert HealingRun.objects.count() == 0


def test_it_takes_json_arguments_as_the_sdk_validates_them(agent_caller: callers.Caller) -> None:
    arguments = {
        "action": "replay_dead_letters",
        "service": "web-search",
        "reason": REASON,
        "parameters": {"limit": 5},
    }
    content = through_sdk(agent_caller, "trigger_healing", arguments)

    run = HealingRun.objects.get()
    assert (content["created"], content["run"]["id"], content["run"]["parameters"]) == (
        True,
        run.pk,
        {"limit": 5},
    )
    assert content["waiting_for"] == "approval by 1 more operator(s)"

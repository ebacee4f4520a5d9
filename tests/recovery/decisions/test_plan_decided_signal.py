"""The level an escalation carries (the planner, pure), and plan_decided: sent once a plan is committed, with what
the escalation queue needs, and never the plan's failure when a receiver fails."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from recovery.breakers.models import Service
from recovery.decisions import planner, policies, signals
from recovery.decisions.models import RecoveryPlan
from recovery.decisions.planner import BreakerInput, BudgetInput, Inputs, PolicyInput

POLICY = PolicyInput(
    name="transient", max_attempts=3, deadline_s=None, retries_class=True, attempts_left=2, delay_s=1.0
)
EXHAUSTED = replace(POLICY, attempts_left=0)


def inputs(**changes: Any) -> Inputs:
    base = Inputs(
        service="svc",
        operation="op",
        error_class="transient",
        kind="connection_timeout",
        severity="medium",
        needs_human=False,
        retry_after_s=None,
        attempt=1,
        elapsed_s=None,
        idempotent=True,
        has_idempotency_key=False,
        operation_critical=None,
        essential=True,
        policy=POLICY,
        budget=BudgetInput(allowed=True, retries=0, calls=10, limit=3, window_s=10),
        breaker=BreakerInput("closed"),
    )
    return replace(base, **changes)


@pytest.mark.parametrize(
    ("given", "action", "level"),
    [
        ({"error_class": "authentication", "kind": "authentication_failed"}, "escalate", "warning"),
        ({"error_class": "authentication", "kind": "permission_denied"}, "escalate", "warning"),
        ({"error_class": "resource", "kind": "quota_exhausted", "needs_human": True}, "escalate", "warning"),
        ({"policy": EXHAUSTED}, "escalate", "critical"),
        ({"breaker": BreakerInput("forced_open", None)}, "escalate", "critical"),
        ({"policy": EXHAUSTED, "essential": False}, "degrade", None),
        ({}, "retry", None),
        ({"error_class": "fatal", "kind": "configuration"}, "abort", None),
    ],
    ids=[
        "authentication",
        "permission",
        "quota",
        "critical exhausted",
        "forced open",
        "degrade",
        "retry",
        "fatal",
    ],
)
def test_it_gives_an_escalation_the_level_its_reason_carries(
    given: dict[str, Any], action: str, level: str | None
) -> None:
    decision = planner.decide(inputs(**given))
    assert (decision.action, decision.escalation_level) == (action, level)


# --- the signal --------------------------------------------------------------------------------------------


@pytest.fixture
def heard() -> Iterator[list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []

    def receiver(sender: object, **kwargs: Any) -> None:
        calls.append({k: v for k, v in kwargs.items() if k != "signal"})

    signals.plan_decided.connect(receiver, dispatch_uid="test-plan-heard")
    yield calls
    signals.plan_decided.disconnect(dispatch_uid="test-plan-heard")


@pytest.fixture(autouse=True)
def fresh_policies() -> Iterator[None]:
    policies.forget()
    yield
    policies.forget()


def plan(client: Any, **body: Any) -> dict[str, Any]:
    error = body.pop("error", {"type": "TimeoutError", "message": "timed out"})
    response = client.post(
        "/api/v1/recovery/plan",
        {"service": "svc", "operation": "charge", "error": error, **body},
        format="json",
    )
    assert response.status_code == 200, response.json()
    return response.json()  # type: ignore[no-any-return]


@pytest.mark.django_db
@pytest.mark.redis
def test_it_announces_a_committed_plan_with_what_it_decided(
    agent_client: Any, heard: list[dict[str, Any]], django_capture_on_commit_callbacks: Any
) -> None:
    Service.objects.create(name="svc", criticality="essential")
    with django_capture_on_commit_callbacks(execute=False) as pending:
        answer = plan(agent_client, attempt=50)
    assert heard == []  # nothing before the commit
    for callback in pending:
        callback()

    assert heard == [
        {
            "plan_id": answer["plan_id"],
            "service": "svc",
            "operation": "charge",
            "action": "escalate",
            "chain_exhausted": True,
            "escalation_level": "critical",
            "reason": answer["reason"],
            "error_class": "transient",
            "severity": "medium",
            "kind": "connection_timeout",
        }
    ]


@pytest.mark.django_db
@pytest.mark.redis
def test_it_says_a_human_error_escalates_at_warning(
    agent_client: Any, heard: list[dict[str, Any]], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        plan(agent_client, error={"status_code": 401})
    [call] = heard
    assert (call["action"], call["chain_exhausted"], call["escalation_level"]) == (
        "escalate",
        False,
        "warning",
    )
    assert (call["error_class"], call["kind"]) == ("authentication", "authentication_failed")


@pytest.mark.django_db
@pytest.mark.redis
def test_a_failing_receiver_never_fails_the_plan(
    agent_client: Any, django_capture_on_commit_callbacks: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(sender: object, **_: Any) -> None:
        raise RuntimeError("the queue is down")

    signals.plan_decided.connect(explode, dispatch_uid="test-plan-explode")
    try:
        with caplog.at_level(logging.ERROR), django_capture_on_commit_callbacks(execute=True):
            answer = plan(agent_client)
    finally:
        signals.plan_decided.disconnect(dispatch_uid="test-plan-explode")
    assert RecoveryPlan.objects.get().pk.hex == answer["plan_id"].replace("-", "")
    assert "plan_decided receiver" in caplog.text and "the queue is down" in caplog.text

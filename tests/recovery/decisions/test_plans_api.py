"""POST /recovery/plan, GET /recovery/options, plan results from outcomes, and the retry policies' endpoints,
against PostgreSQL and Redis (the breakers and the retry budget live there)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.conf import settings
from django.test import override_settings
from django.utils import timezone
from prometheus_client import REGISTRY

from recovery.breakers.models import Service
from recovery.decisions import budget, policies
from recovery.decisions import services as decision_services
from recovery.decisions import tasks as decision_tasks
from recovery.decisions.models import FallbackInvocation, FallbackOption, Operation, RecoveryPlan, RetryPolicy
from recovery.degradation.models import GLOBAL_SCOPE, DegradationState
from tests.support import factories
from tests.support.factories import rebound_settings

pytestmark = [pytest.mark.django_db, pytest.mark.redis]
TEST_REDIS_URL: str = settings.TEST_REDIS_URL  # type: ignore[misc]

TIMEOUT = {"type": "TimeoutError", "message": "timed out"}
PLAN_KEYS = {
    "plan_id",
    "action",
    "delay_s",
    "fallback",
    "attempts_left",
    "reason",
    "error_class",
    "severity",
    "kind",
    "retry_after_s",
    "breaker_state",
    "degradation_level",
    "policy",
}


@pytest.fixture(autouse=True)
def fresh_policies() -> Iterator[None]:
    policies.forget()
    yield
    policies.forget()
    budget.use_store(None)  # the next test picks the store its settings say


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def ask(client: Any, **body: Any) -> Any:
    response = client.post(
        "/api/v1/recovery/plan", {"service": "svc", "error": TIMEOUT, **body}, format="json"
    )
    assert response.status_code == 200, response.json()
    return response.json()


def trip(client: Any, name: str) -> None:
    fail = {"service": name, "success": False, "error": {"status_code": 503}}
    assert client.post("/api/v1/outcomes", [fail] * 5, format="json").status_code == 200


# --- plans -------------------------------------------------------------------------------------------------


def _plan_a_retry(agent_client: Any, capture: Any) -> dict[str, Any]:
    with capture(execute=True):
        return ask(agent_client, operation="chat", task_id="task-1", elapsed_s=2.5)  # type: ignore[no-any-return]


def test_it_plans_a_retry_by_the_policy_and_says_why(
    agent_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    answer = _plan_a_retry(agent_client, django_capture_on_commit_callbacks)

    assert set(answer) == PLAN_KEYS
    assert {k: v for k, v in answer.items() if k not in ("plan_id", "reason")} == {
        "action": "retry",
        "delay_s": 1.0,
        "fallback": None,
        "attempts_left": 3,
        "error_class": "transient",
        "severity": "medium",
        "kind": "connection_timeout",
        "retry_after_s": None,
        "breaker_state": "closed",
        "degradation_level": "normal",
        "policy": "connection timeout",
    }
    assert answer["reason"] == (
        "a transient error (connection_timeout): retry in 1 s, attempt 2 of 4 (policy connection timeout)"
    )


def test_it_records_the_plan_with_its_request_and_decision(
    agent_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    answer = _plan_a_retry(agent_client, django_capture_on_commit_callbacks)
    plan = RecoveryPlan.objects.get()
    assert str(plan.pk) == answer["plan_id"]
    assert (plan.agent, plan.service, plan.operation, plan.task_id) == (
        agent_client.agent,
        "svc",
        "chat",
        "task-1",
    )
    assert (plan.attempt, plan.elapsed_s, plan.idempotency_key) == (1, 2.5, "")
    assert (plan.error_class, plan.severity, plan.kind) == ("transient", "medium", "connection_timeout")
    assert (plan.action, plan.delay_s, plan.fallback, plan.attempts_left) == ("retry", 1.0, None, 3)
    assert plan.policy == RetryPolicy.objects.get(name="connection timeout")
    assert (plan.reason, plan.result, plan.result_at) == (answer["reason"], "pending", None)


def test_it_records_the_inputs_the_plan_was_made_from(
    agent_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    _plan_a_retry(agent_client, django_capture_on_commit_callbacks)
    plan = RecoveryPlan.objects.get()
    assert plan.inputs["policy"]["name"] == "connection timeout"
    assert plan.inputs["budget"] == {
        "allowed": True,
        "retries": 1,
        "calls": 1,
        "limit": 3,
        "window_s": 10,
        "note": "",
    }
    assert plan.inputs["breaker"] == {"state": "closed", "open_for_s": None}
    assert FallbackInvocation.objects.count() == 0


def test_it_counts_the_call_and_spends_the_retry_from_the_budget(
    agent_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    planned_before = metric("retries_total", service="svc", outcome="planned")
    plans_before = metric("recovery_plans_total", action="retry")
    _plan_a_retry(agent_client, django_capture_on_commit_callbacks)
    # The plan request counted a call and the retry spent from the budget.
    assert budget.peek(Service.objects.get(name="svc")).retries == 1
    assert metric("retries_total", service="svc", outcome="planned") == planned_before + 1
    assert metric("recovery_plans_total", action="retry") == plans_before + 1


@pytest.mark.parametrize(
    ("error", "action", "reason"),
    [
        ({"status_code": 401}, "escalate", "authentication failed: a human must act"),
        ({"status_code": 403}, "escalate", "permission denied"),
        ({"status_code": 400, "message": "bad"}, "abort", "a validation error (invalid_input)"),
        ({"message": "fatal: disk corrupted"}, "abort", "a fatal error"),
    ],
)
def test_it_plans_what_no_retry_can_fix(
    agent_client: Any, error: dict[str, Any], action: str, reason: str
) -> None:
    answer = ask(agent_client, error=error)
    assert (answer["action"], answer["delay_s"], answer["attempts_left"]) == (action, None, None)
    assert reason in answer["reason"]
    assert RecoveryPlan.objects.get().action == action
    assert budget.peek(Service.objects.get(name="svc")).retries == 0


def test_it_waits_for_retry_after(agent_client: Any) -> None:
    answer = ask(agent_client, error={"status_code": 429, "headers": {"Retry-After": "20"}})
    assert (answer["action"], answer["delay_s"], answer["retry_after_s"]) == ("wait", 20.0, 20.0)
    assert (answer["error_class"], answer["policy"], answer["attempts_left"]) == (
        "rate_limit",
        "rate limit",
        2,
    )
    assert "wait 20 s (Retry-After)" in answer["reason"]


def test_it_grows_the_delay_with_the_attempt(agent_client: Any) -> None:
    answers = [ask(agent_client, attempt=n)["delay_s"] for n in (1, 2, 3)]
    assert answers == [1.0, 2.0, 4.0]


@pytest.mark.parametrize("attempt", [2000, 10_000])
def test_it_plans_for_a_very_late_attempt_without_overflowing_the_delay(
    agent_client: Any, attempt: int
) -> None:
    answer = ask(agent_client, attempt=attempt)

    assert answer["action"] in ("degrade", "escalate")  # the policy's attempts are long spent
    plan = RecoveryPlan.objects.get()
    assert plan.attempt == attempt
    policy = RetryPolicy.objects.get(name=plan.inputs["policy"]["name"])
    assert plan.inputs["policy"]["delay_s"] == policy.max_delay_s  # the cap of 2 ** (attempt - 1)


def test_it_caps_a_policy_delay_at_the_longest_wait(agent_client: Any) -> None:
    svc = Service.objects.create(name="svc")
    RetryPolicy.objects.create(
        name="patient",
        service=svc,
        strategy="exponential",
        max_attempts=10_000,
        base_delay_s=1,
        max_delay_s=1e9,
    )
    with override_settings(REBOUND=rebound_settings(MAX_RETRY_AFTER_S=600)):
        answer = ask(agent_client, attempt=5000)

    assert (answer["action"], answer["delay_s"]) == ("retry", 600.0)


def test_it_falls_back_to_another_service_while_the_breaker_is_open(
    agent_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    svc = Service.objects.create(name="svc", minimum_calls=4, consecutive_failures=0, wait_duration_s=30)
    backup = Service.objects.create(name="backup")
    option = FallbackOption.objects.create(
        service=svc, position=1, kind="service", target_service=backup, target_operation="search"
    )
    trip(agent_client, "svc")
    used_before = metric("fallback_invocations_total", service="svc", kind="service")

    with django_capture_on_commit_callbacks(execute=True):
        answer = ask(agent_client, operation="search")

    assert (answer["action"], answer["breaker_state"], answer["delay_s"]) == ("fallback", "open", None)
    assert answer["fallback"] == {
        "kind": "service",
        "position": 1,
        "service": "backup",
        "operation": "search",
        "value": None,
        "cached_at": None,
        "warning": None,
    }
    assert answer["reason"] == "the breaker of svc is open; fall back to backup/search (position 1)"
    plan = RecoveryPlan.objects.get()
    invocation = FallbackInvocation.objects.get()
    assert (invocation.service, invocation.operation, invocation.kind) == ("svc", "search", "service")
    assert (invocation.option, invocation.plan, invocation.agent) == (option, plan, agent_client.agent)
    assert invocation.detail["why"] == "backup/search: breaker closed"
    assert plan.fallback == {
        "kind": "service",
        "position": 1,
        "service": "backup",
        "operation": "search",
        "cached_at": None,
        "warning": None,
    }
    assert metric("fallback_invocations_total", service="svc", kind="service") == used_before + 1


def test_it_says_how_long_to_wait_for_an_open_breaker_without_fallback(
    agent_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    Service.objects.create(name="svc", minimum_calls=4, consecutive_failures=0, wait_duration_s=30)
    trip(agent_client, "svc")
    before = metric("fallback_invocations_total", service="svc", kind="exhausted")

    with django_capture_on_commit_callbacks(execute=True):
        answer = ask(agent_client)

    assert (answer["action"], answer["breaker_state"], answer["fallback"]) == ("wait", "open", None)
    assert 29 < answer["delay_s"] <= 30
    assert "until a trial call is let through" in answer["reason"]
    invocation = FallbackInvocation.objects.get()
    assert (invocation.kind, invocation.option, invocation.detail) == ("exhausted", None, {"chain": []})
    assert metric("fallback_invocations_total", service="svc", kind="exhausted") == before + 1


def test_it_stops_retrying_when_the_budget_is_spent(
    agent_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    Service.objects.create(
        name="svc", criticality="essential", retry_budget_percent=0, retry_budget_min_retries=1
    )
    before = metric("retries_total", service="svc", outcome="budget_exhausted")

    with django_capture_on_commit_callbacks(execute=True):
        first = ask(agent_client)
        second = ask(agent_client)

    assert first["action"] == "retry"
    assert (second["action"], second["attempts_left"]) == ("escalate", 3)
    assert (
        "the retry budget of svc is spent: 1 of 1 retries used in the last 10 s (2 calls)" in second["reason"]
    )
    assert "svc is essential: a human must decide" in second["reason"]
    assert RecoveryPlan.objects.filter(action="escalate").get().inputs["budget"]["allowed"] is False
    assert metric("retries_total", service="svc", outcome="budget_exhausted") == before + 1
    assert FallbackInvocation.objects.get().kind == "exhausted"


def test_it_never_retries_a_non_idempotent_operation_without_a_key(agent_client: Any) -> None:
    svc = Service.objects.create(name="svc")
    Operation.objects.create(service=svc, name="charge", idempotent=False, critical=False)

    without = ask(agent_client, operation="charge")
    with_key = ask(agent_client, operation="charge", idempotency_key="order-7")

    assert without["action"] == "degrade"
    assert "svc/charge is not idempotent and no idempotency_key was sent" in without["reason"]
    assert "operation charge is non-critical: skip it" in without["reason"]
    assert with_key["action"] == "retry"
    assert RecoveryPlan.objects.get(action="retry").idempotency_key == "order-7"


def test_it_falls_back_to_a_cached_result_once_the_policy_is_spent(agent_client: Any) -> None:
    svc = Service.objects.create(name="svc")
    FallbackOption.objects.create(service=svc, position=1, kind="cache", max_age_s=600)
    success = {
        "service": "svc",
        "operation": "status",
        "success": True,
        "cache_key": "eu",
        "result": {"up": 3},
    }
    assert agent_client.post("/api/v1/outcomes", success, format="json").status_code == 200

    answer = ask(agent_client, operation="status", attempt=4, cache_key="eu")
    other_key = ask(agent_client, operation="status", attempt=4, cache_key="us")

    assert answer["action"] == "fallback"
    fallback = answer["fallback"]
    assert (fallback["kind"], fallback["value"], fallback["position"]) == ("cache", {"up": 3}, 1)
    assert fallback["cached_at"] is not None
    assert (
        "policy connection timeout is exhausted: it allows 4 attempt(s) and attempt 4 failed"
        in answer["reason"]
    )
    assert other_key["action"] == "degrade"  # no result for that key; svc is non-critical
    assert "no cached result for cache_key 'us'" in other_key["reason"]


def test_it_skips_a_service_at_the_degradation_level_that_says_so(agent_client: Any) -> None:
    Service.objects.create(name="svc", criticality="essential", skip_from_level="minimal")
    DegradationState.objects.create(scope=GLOBAL_SCOPE, forced_level="minimal", forced_reason="incident")

    answer = ask(agent_client, attempt=4)

    assert (answer["action"], answer["degradation_level"]) == ("degrade", "minimal")
    assert "the degradation level is minimal, at which agents skip svc" in answer["reason"]


def test_it_registers_an_unknown_service_as_the_permit_does(agent_client: Any) -> None:
    ask(agent_client, service="brand-new")
    assert Service.objects.get(name="brand-new").auto_registered is True


@override_settings(REBOUND=rebound_settings(AUTO_REGISTER_SERVICES=False))
def test_it_answers_404_for_an_unknown_service_when_registration_is_off(agent_client: Any) -> None:
    response = agent_client.post(
        "/api/v1/recovery/plan", {"service": "nope", "error": TIMEOUT}, format="json"
    )
    assert response.status_code == 404
    assert response.json()["errors"][0]["field"] == "service"
    assert not RecoveryPlan.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"service": "svc"}, "error"),
        ({"service": "svc", "error": {}}, "error"),
        ({"service": "svc", "error": TIMEOUT, "attempt": 0}, "attempt"),
        ({"service": "Not A Slug", "error": TIMEOUT}, "service"),
        ({"service": "svc", "error": {**TIMEOUT, "status_code": 99}}, "error.status_code"),
        ({"service": "svc", "error": TIMEOUT, "elapsed_s": -1}, "elapsed_s"),
        ({"service": "svc", "error": TIMEOUT, "colour": "red"}, "colour"),
        ({"service": "svc", "error": {**TIMEOUT, "service": "other"}}, "body"),
    ],
)
def test_it_names_the_field_of_invalid_input(agent_client: Any, body: dict[str, Any], field: str) -> None:
    response = agent_client.post("/api/v1/recovery/plan", body, format="json")
    assert response.status_code == 400
    assert field in [e["field"] for e in response.json()["errors"]]
    assert not RecoveryPlan.objects.exists()


def test_it_lets_only_agents_and_operators_ask(viewer_client: Any, operator_client: Any) -> None:
    body = {"service": "svc", "error": TIMEOUT}
    assert viewer_client.post("/api/v1/recovery/plan", body, format="json").status_code == 403
    assert operator_client.post("/api/v1/recovery/plan", body, format="json").status_code == 200
    assert RecoveryPlan.objects.get().agent is None


# --- plan results from outcomes ----------------------------------------------------------------------------


def test_it_records_whether_a_plan_worked_from_its_outcome(agent_client: Any) -> None:
    plan_id = ask(agent_client)["plan_id"]
    success = {"service": "svc", "success": True, "plan_id": plan_id}
    failure = {"service": "svc", "success": False, "plan_id": plan_id, "error": TIMEOUT}

    assert agent_client.post("/api/v1/outcomes", success, format="json").status_code == 200
    plan = RecoveryPlan.objects.get()
    first_at = plan.result_at
    assert (plan.result, first_at is not None) == ("succeeded", True)
    assert metric("recovery_success_rate", action="retry") == 1.0

    # A second outcome naming the same plan changes nothing: the first decided.
    assert agent_client.post("/api/v1/outcomes", failure, format="json").status_code == 200
    plan.refresh_from_db()
    assert (plan.result, plan.result_at) == ("succeeded", first_at)


def test_it_computes_the_success_rate_per_action(agent_client: Any) -> None:
    ids = [ask(agent_client)["plan_id"] for _ in range(3)]
    outcomes = [
        {"service": "svc", "success": True, "plan_id": ids[0]},
        {"service": "svc", "success": False, "plan_id": ids[1], "error": TIMEOUT},
        {"service": "svc", "success": True, "plan_id": ids[2]},
    ]
    assert agent_client.post("/api/v1/outcomes", outcomes, format="json").status_code == 200

    assert sorted(RecoveryPlan.objects.values_list("result", flat=True)) == [
        "failed",
        "succeeded",
        "succeeded",
    ]
    rates = decision_services.refresh_success_rate()
    assert rates["retry"] == pytest.approx(2 / 3)
    assert rates["abort"] == 1.0  # no abort plan: nothing failed (docs/recovery.md)
    assert metric("recovery_success_rate", action="retry") == pytest.approx(2 / 3)
    assert metric("recovery_plan_results", action="retry", result="failed") == 1.0
    assert metric("recovery_plan_results", action="abort", result="failed") == 0.0
    decision_tasks.refresh_recovery_success_rate()  # the beat task: the same figure
    assert metric("recovery_success_rate", action="retry") == pytest.approx(2 / 3)


def _plan_with_static_fallback(agent_client: Any) -> dict[str, Any]:
    svc = Service.objects.create(name="svc")
    FallbackOption.objects.create(service=svc, position=1, kind="static", static_value={"answer": "later"})
    return ask(agent_client, attempt=4)  # type: ignore[no-any-return]


def test_it_resolves_a_static_fallback_plan_as_it_answers_it(agent_client: Any) -> None:
    answer = _plan_with_static_fallback(agent_client)

    assert (answer["action"], answer["fallback"]["kind"]) == ("fallback", "static")
    plan = RecoveryPlan.objects.get()
    assert (plan.result, plan.result_at) == ("succeeded", plan.created_at)
    decision_services.refresh_success_rate()
    assert metric("recovery_plan_results", action="fallback", result="succeeded") == 1.0


def test_it_keeps_the_answered_result_when_an_outcome_names_the_plan_later(agent_client: Any) -> None:
    # A later failure is another matter: the value handed over did not do (tests/recovery/decisions/
    # test_plan_learning.py).
    plan_id = _plan_with_static_fallback(agent_client)["plan_id"]
    success = {"service": "svc", "success": True, "plan_id": plan_id}

    assert agent_client.post("/api/v1/outcomes", success, format="json").status_code == 200

    plan = RecoveryPlan.objects.get()
    assert (plan.result, plan.result_at) == ("succeeded", plan.created_at)


def test_it_resolves_a_degrade_plan_as_it_answers_it(agent_client: Any) -> None:
    answer = ask(agent_client, attempt=4)  # svc is non-critical and has no fallback: skip it

    assert answer["action"] == "degrade"
    plan = RecoveryPlan.objects.get()
    assert (plan.result, plan.result_at) == ("succeeded", plan.created_at)


@pytest.mark.parametrize(
    ("error", "action"),
    [({"status_code": 401}, "escalate"), ({"status_code": 400, "message": "bad"}, "abort")],
)
def test_it_resolves_a_plan_that_gives_up_as_failed_when_it_answers_it(
    agent_client: Any, error: dict[str, Any], action: str
) -> None:
    assert ask(agent_client, error=error)["action"] == action

    plan = RecoveryPlan.objects.get()
    assert (plan.result, plan.result_at) == ("failed", plan.created_at)
    assert decision_services.refresh_success_rate()[action] == 0.0
    assert metric("recovery_success_rate", action=action) == 0.0


def test_it_resolves_a_plan_without_an_outcome_as_unknown_once_it_expires(agent_client: Any) -> None:
    ask(agent_client)  # a retry: its outcome should follow
    plan = RecoveryPlan.objects.get()
    assert plan.result == "pending"
    later = (
        plan.created_at + decision_services.PLAN_OUTCOME_GRACE + timedelta(seconds=(plan.delay_s or 0) + 1)
    )

    expired = decision_services.expire_plans(now=later)

    plan.refresh_from_db()
    assert expired == 1
    assert (plan.result, plan.result_at) == ("unknown", later)


def test_it_leaves_a_plan_pending_until_its_delay_and_the_grace_have_passed(agent_client: Any) -> None:
    ask(agent_client, error={"status_code": 429, "headers": {"Retry-After": "3600"}})  # wait an hour
    plan = RecoveryPlan.objects.get()
    assert (plan.action, plan.delay_s) == ("wait", 3600.0)

    assert decision_services.expire_plans(now=plan.created_at + decision_services.PLAN_OUTCOME_GRACE * 2) == 0
    assert RecoveryPlan.objects.get().result == "pending"


def test_the_beat_task_expires_plans_and_refreshes_the_gauge(agent_client: Any) -> None:
    ask(agent_client)
    RecoveryPlan.objects.update(created_at=timezone.now() - decision_services.PLAN_OUTCOME_GRACE * 2)

    decision_tasks.refresh_recovery_success_rate()

    assert RecoveryPlan.objects.get().result == "unknown"
    assert metric("recovery_plan_results", action="retry", result="unknown") == 1.0


def test_the_success_rate_is_a_number_without_any_plan(db: Any) -> None:
    rates = decision_services.refresh_success_rate()

    assert set(rates.values()) == {1.0}
    for action in ("retry", "fallback", "wait", "degrade", "escalate", "abort"):
        assert metric("recovery_success_rate", action=action) == 1.0
        assert metric("recovery_plan_results", action=action, result="succeeded") == 0.0


def test_it_ignores_another_agents_plan_and_unknown_plans(agent_client: Any) -> None:
    plan_id = ask(agent_client)["plan_id"]
    _, key = factories.agent_key()
    other = agent_client.__class__()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")

    for named in (plan_id, str(uuid.uuid4())):
        response = other.post(
            "/api/v1/outcomes", {"service": "svc", "success": True, "plan_id": named}, format="json"
        )
        assert response.status_code == 200

    plan = RecoveryPlan.objects.get()
    assert (plan.result, plan.result_at) == ("pending", None)


@pytest.mark.parametrize(
    ("outcome", "field"),
    [
        ({"success": True, "plan_id": "not-a-uuid"}, "plan_id"),
        ({"success": False, "result": {"a": 1}}, "body"),
        ({"success": True, "result": "x" * 70_000}, "result"),
        ({"success": True, "cache_key": "k" * 501}, "cache_key"),
    ],
)
def test_it_names_the_field_of_an_invalid_outcome(
    agent_client: Any, outcome: dict[str, Any], field: str
) -> None:
    response = agent_client.post("/api/v1/outcomes", {"service": "svc", **outcome}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == field


def test_it_counts_outcomes_into_the_retry_budget(agent_client: Any) -> None:
    outcomes = [{"service": "svc", "success": True}] * 30 + [{"service": "other", "success": True}]
    assert agent_client.post("/api/v1/outcomes", outcomes, format="json").status_code == 200

    check = budget.peek(Service.objects.get(name="svc"))
    assert (check.calls, check.limit) == (30, 6)
    assert budget.peek(Service.objects.get(name="other")).calls == 1


# --- options -----------------------------------------------------------------------------------------------


def _options_of_a_tripped_service(agent_client: Any) -> Any:
    svc = Service.objects.create(name="svc", minimum_calls=4, consecutive_failures=0)
    backup = Service.objects.create(name="backup")
    FallbackOption.objects.create(service=svc, position=1, kind="service", target_service=backup)
    FallbackOption.objects.create(service=svc, position=2, kind="cache")
    trip(agent_client, "svc")

    return agent_client.get("/api/v1/recovery/options", {"service": "svc", "error_class": "transient"})


def test_it_answers_the_options_with_the_policy_breaker_budget_and_degradation(agent_client: Any) -> None:
    response = _options_of_a_tripped_service(agent_client)

    assert response.status_code == 200
    body = response.json()
    assert (body["policy"], body["critical"]) == ({"name": "transient", "scope": "error_class"}, False)
    assert body["breaker"]["state"] == "open"
    assert body["budget"]["calls"] == 5  # the five outcomes that tripped it; reading counts nothing
    assert body["degradation"] == {"level": "normal", "skips_service": False}


def test_it_lists_every_option_with_why(agent_client: Any) -> None:
    body = _options_of_a_tripped_service(agent_client).json()
    listed = [(o["action"], o["available"]) for o in body["options"]]
    assert listed == [
        ("retry", False),
        ("fallback", True),
        ("fallback", False),
        ("wait", True),
        ("degrade", True),
        ("escalate", True),
        ("abort", True),
    ]
    assert body["options"][0]["why"] == "the breaker of svc is open"
    assert body["options"][1]["why"] == "backup: breaker closed"
    assert body["options"][2]["why"] == "no cached result"
    assert 29 < body["options"][3]["delay_s"] <= 30


def test_it_records_no_plan_when_listing_options(agent_client: Any) -> None:
    _options_of_a_tripped_service(agent_client)
    assert not RecoveryPlan.objects.exists()


@pytest.mark.parametrize(
    ("query", "status", "field"),
    [
        ({"service": "nope", "error_class": "transient"}, 404, "service"),
        ({"service": "svc"}, 400, "error_class"),
        ({"service": "svc", "error_class": "weird"}, 400, "error_class"),
        ({"service": "svc", "error_class": "transient", "kind": "weird"}, 400, "kind"),
        ({"error_class": "transient"}, 400, "service"),
    ],
)
def test_it_refuses_bad_option_queries(
    agent_client: Any, query: dict[str, str], status: int, field: str
) -> None:
    Service.objects.create(name="svc")
    response = agent_client.get("/api/v1/recovery/options", query)
    assert response.status_code == status
    assert response.json()["errors"][0]["field"] == field


# --- retry policies ----------------------------------------------------------------------------------------


def test_it_lists_the_built_in_policies_with_their_scopes(viewer_client: Any) -> None:
    response = viewer_client.get("/api/v1/retry-policies")
    assert response.status_code == 200
    scopes = {p["name"]: (p["scope"], p["max_attempts"], p["base_delay_s"]) for p in response.json()}
    assert scopes == {
        "global default": ("global", 3, 1.0),
        "transient": ("error_class", 3, 1.0),
        "resource": ("error_class", 2, 1.0),
        "external service": ("error_class", 2, 1.0),
        "rate limit": ("error_class", 3, 1.0),
        "connection timeout": ("kind", 4, 1.0),
        "database lock": ("kind", 4, 0.1),
        "service unavailable": ("kind", 4, 2.0),
        "temporary resource": ("kind", 4, 1.0),
    }
    assert all(p["builtin"] for p in response.json())


def resolve(client: Any, **query: str) -> dict[str, Any]:
    response = client.get("/api/v1/retry-policies/resolve", query)
    assert response.status_code == 200, response.json()
    return response.json()  # type: ignore[no-any-return]


def test_it_resolves_policies_by_precedence(viewer_client: Any) -> None:
    svc = Service.objects.create(name="db")
    query = {"service": "db", "operation": "query", "error_class": "transient", "kind": "database_lock"}

    assert resolve(viewer_client, error_class="internal")["policy"]["name"] == "global default"
    assert resolve(viewer_client, error_class="transient")["policy"]["name"] == "transient"
    by_kind = resolve(viewer_client, **query)
    assert (by_kind["policy"]["name"], by_kind["scope"]) == ("database lock", "kind")
    assert by_kind["why"] == (
        "no policy for service db, operation query; no policy for service db; kind database_lock: policy 'database lock'"
    )

    RetryPolicy.objects.create(name="db service", service=svc, max_attempts=5)
    policies.forget()
    assert resolve(viewer_client, **query)["policy"]["name"] == "db service"

    RetryPolicy.objects.create(name="db query", service=svc, operation="query", max_attempts=2)
    policies.forget()
    chosen = resolve(viewer_client, **query)
    assert (chosen["policy"]["name"], chosen["scope"], chosen["policy"]["service"]) == (
        "db query",
        "operation",
        "db",
    )
    assert chosen["chain"] == [
        {"scope": "operation", "looked_for": "service db, operation query", "policy": "db query"},
        {"scope": "service", "looked_for": "service db", "policy": "db service"},
        {"scope": "kind", "looked_for": "kind database_lock", "policy": "database lock"},
        {"scope": "error_class", "looked_for": "error class transient", "policy": "transient"},
        {"scope": "global", "looked_for": "the global default", "policy": "global default"},
    ]
    # The planner uses the same chain.
    assert policies.resolve(svc, "query", "transient", "database_lock").name == "db query"
    assert policies.resolve(svc, "other", "transient", "database_lock").name == "db service"


def test_it_refuses_a_resolve_for_an_unknown_service(viewer_client: Any) -> None:
    response = viewer_client.get("/api/v1/retry-policies/resolve", {"service": "nope"})
    assert response.status_code == 404
    assert response.json()["errors"][0]["field"] == "service"


def test_it_answers_no_policy_when_the_global_default_is_gone(viewer_client: Any) -> None:
    RetryPolicy.objects.all().delete()
    body = resolve(viewer_client, error_class="transient")
    assert (body["policy"], body["scope"], body["why"]) == (None, None, "no policy applies: never retried")


def test_it_keeps_fallback_values_out_of_the_plans_inputs(agent_client: Any) -> None:
    svc = Service.objects.create(name="svc")
    FallbackOption.objects.create(service=svc, position=1, kind="static", static_value={"big": "x" * 100})

    answer = ask(agent_client, attempt=4)

    assert (answer["action"], answer["fallback"]["value"]) == ("fallback", {"big": "x" * 100})
    plan = RecoveryPlan.objects.get()
    assert plan.fallback == {
        "kind": "static",
        "position": 1,
        "service": None,
        "operation": None,
        "cached_at": None,
        "warning": None,
    }
    assert [set(o) for o in plan.inputs["chain"]] == [
        {
            "id",
            "position",
            "kind",
            "available",
            "why",
            "scope",
            "service",
            "operation",
            "cached_at",
            "age_s",
            "warning",
        }
    ]


class AnotherAgentSpendsFirst(budget.RedisBudget):
    """Real Redis; between the planner's peek and its spend, another agent takes a retry."""

    def check(self, service: Service, *, spend: bool) -> budget.BudgetCheck:
        seen = super().check(service, spend=spend)
        if not spend:
            super().check(service, spend=True)
        return seen


def test_it_decides_again_when_the_last_retry_is_taken_meanwhile(
    agent_client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    Service.objects.create(
        name="svc", criticality="essential", retry_budget_percent=0, retry_budget_min_retries=1
    )
    budget.use_store(AnotherAgentSpendsFirst(redis.Redis.from_url(TEST_REDIS_URL)))
    before = metric("retries_total", service="svc", outcome="budget_exhausted")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            answer = ask(agent_client)
    finally:
        budget.use_store(None)

    assert answer["action"] == "escalate"
    assert "the retry budget of svc is spent: 1 of 1 retries used" in answer["reason"]
    plan = RecoveryPlan.objects.get()
    assert (plan.action, plan.inputs["budget"]["allowed"], plan.inputs["budget"]["retries"]) == (
        "escalate",
        False,
        1,
    )
    assert metric("retries_total", service="svc", outcome="budget_exhausted") == before + 1


@pytest.mark.parametrize(("criticality", "action"), [("essential", "retry"), ("non_critical", "degrade")])
def test_it_follows_the_fail_modes_when_the_budget_store_is_unreachable(
    agent_client: Any, criticality: str, action: str
) -> None:
    Service.objects.create(name="svc", criticality=criticality)
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, socket_timeout=0.2)
    budget.use_store(budget.RedisBudget(unreachable))
    try:
        answer = ask(agent_client)
        outcome = agent_client.post("/api/v1/outcomes", {"service": "svc", "success": True}, format="json")
    finally:
        budget.use_store(None)

    assert answer["action"] == action
    assert outcome.status_code == 200  # the breaker still counted it; only the budget's count is lost
    note = RecoveryPlan.objects.get().inputs["budget"]["note"]
    mode = "open" if criticality == "essential" else "closed"
    assert note == f"the budget store is unreachable: failing {mode} for {criticality} services"


def test_it_plans_in_the_embedded_mode_without_redis(agent_client: Any, settings: Any) -> None:
    from django.core.cache import cache

    from recovery.breakers import store as breaker_store
    from recovery.breakers.store import DatabaseStore

    settings.REDIS_URL = ""
    cache.clear()
    breaker_store.use_store(DatabaseStore())
    budget.use_store(None)
    svc = Service.objects.create(name="svc", minimum_calls=4, consecutive_failures=0)
    FallbackOption.objects.create(service=svc, position=1, kind="cache")
    success = {"service": "svc", "operation": "status", "success": True, "result": {"up": True}}
    try:
        assert agent_client.post("/api/v1/outcomes", success, format="json").status_code == 200
        retried = ask(agent_client, operation="status")
        trip(agent_client, "svc")
        fell_back = ask(agent_client, operation="status")
    finally:
        budget.use_store(None)

    assert (retried["action"], retried["breaker_state"]) == ("retry", "closed")
    assert (fell_back["action"], fell_back["breaker_state"]) == ("fallback", "open")
    assert fell_back["fallback"]["value"] == {"up": True}
    assert isinstance(budget.store(), budget.CacheBudget)
    assert budget.peek(svc).calls == 8  # one success, two plan requests, five failures

"""The error triggers (1 to 5), each by the real event that causes it: errors posted to the API in both intake
modes (written in the request; buffered in Redis and drained as the worker drains), outcomes posted to the API
for the error rate; and their auto-resolve by the sweep with time moved."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from healing.escalations import error_triggers, selectors
from healing.escalations import services as escalation_services
from healing.escalations.models import Escalation, EscalationEvent, EscalationTrigger
from recovery.breakers.models import Service
from recovery.errors.models import ErrorEvent, ErrorPattern
from recovery.errors.tasks import drain_error_intake
from tests.support.factories import rebound_settings
from tests.support.openapi import conforms

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db,
    pytest.mark.usefixtures("error_triggers_connected"),
]

FATAL = {
    "service": "payments",
    "operation": "charge",
    "type": "ImproperlyConfigured",
    "message": "no STRIPE_KEY",
}
UNAUTHORIZED = {"service": "github", "operation": "search", "status_code": 401, "message": "Bad credentials"}
DUPLICATE = {
    "service": "crm",
    "operation": "create_contact",
    "type": "IntegrityError",
    "message": 'duplicate key value violates unique constraint "contacts_email_key"',
}
TIMEOUT = {
    "service": "search",
    "operation": "query",
    "type": "TimeoutError",
    "message": "timed out after 3 s",
}
FAILED_CALL = {"service": "search", "success": False, "error": {"status_code": 503}}
GOOD_CALL = {"service": "search", "success": True, "duration_ms": 20}

Report = Callable[..., Any]


@pytest.fixture(params=["sync", "buffered"])
def intake_mode(request: Any) -> Iterator[str]:
    with override_settings(REBOUND=rebound_settings(INTAKE_MODE=request.param)):
        yield str(request.param)


@pytest.fixture
def report(agent_client: Any, intake_mode: str, django_capture_on_commit_callbacks: Any) -> Report:
    """POST errors to the API and see them committed; buffered, drained by the task the worker runs."""

    def post(*errors: dict[str, Any]) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            response = agent_client.post("/api/v1/errors", list(errors), format="json")
            conforms(response, "post", "/api/v1/errors")
            assert response.status_code == 201
            if intake_mode == "buffered":
                assert drain_error_intake() == len(errors)
        return response

    return post


@pytest.fixture
def outcomes(agent_client: Any, django_capture_on_commit_callbacks: Any) -> Callable[..., Any]:
    def post(batch: list[dict[str, Any]]) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            response = agent_client.post("/api/v1/outcomes", batch, format="json")
        conforms(response, "post", "/api/v1/outcomes")
        assert response.status_code == 200
        return response

    return post


def essential(name: str) -> Service:
    return Service.objects.create(name=name, criticality=Service.Criticality.ESSENTIAL)


def disable(kind: str) -> None:
    EscalationTrigger.objects.filter(kind=kind).update(enabled=False)
    selectors.clear_trigger_cache()


def pattern_of(service: str) -> ErrorPattern:
    return ErrorPattern.objects.get(service=service)


# --- 1. critical_error ------------------------------------------------------------------------------------------


def test_it_raises_critical_for_a_critical_error_of_an_essential_service(report: Report) -> None:
    essential("payments")
    report(FATAL)
    escalation = Escalation.objects.get()
    pattern = pattern_of("payments")
    assert (escalation.trigger, escalation.level, escalation.state) == ("critical_error", "critical", "open")
    assert escalation.dedup_key == f"critical_error:payments:{pattern.fingerprint}"
    assert (escalation.service, escalation.error_class, escalation.pattern_id) == (
        "payments",
        "fatal",
        pattern.pk,
    )
    assert "payments" in escalation.title and "no STRIPE_KEY" in escalation.title
    assert escalation.context["count"] == 1
    assert (escalation.context["severity"], escalation.context["operation"]) == ("critical", "charge")
    assert escalation.raised_by == "trigger:critical_error"


def test_a_critical_error_of_a_non_critical_service_raises_nothing(report: Report) -> None:
    Service.objects.create(name="payments")
    report(FATAL)
    assert not Escalation.objects.exists()


def test_a_disabled_trigger_raises_nothing(report: Report) -> None:
    essential("payments")
    disable("critical_error")
    report(FATAL)
    assert not Escalation.objects.exists()


# --- 2. security ------------------------------------------------------------------------------------------------


def test_an_authentication_error_raises_a_security_warning(report: Report) -> None:
    report(UNAUTHORIZED)
    escalation = Escalation.objects.get()
    assert (escalation.trigger, escalation.level) == ("security", "warning")
    assert escalation.dedup_key == f"security:github:{pattern_of('github').fingerprint}"
    assert escalation.context["repeated"] is False
    assert escalation.runbook is not None and escalation.runbook.name == "security-scan"


def test_a_permission_error_is_a_security_error_too(report: Report) -> None:
    report({**UNAUTHORIZED, "status_code": 403, "message": "Resource not accessible by integration"})
    assert Escalation.objects.get().trigger == "security"


def test_security_turns_critical_once_repeated_within_its_window(report: Report) -> None:
    report(UNAUTHORIZED)
    report(UNAUTHORIZED)
    assert Escalation.objects.get().level == "warning"
    report(UNAUTHORIZED)  # the third within 15 minutes (the built-in count and window_s)
    escalation = Escalation.objects.get()
    assert escalation.level == "critical"
    assert escalation.context["repeated"] is True
    assert EscalationEvent.objects.filter(
        escalation=escalation, kind="level_changed", to_level="critical"
    ).exists()


def test_security_repeats_in_one_batch_raise_critical_at_once(report: Report) -> None:
    report(UNAUTHORIZED, UNAUTHORIZED, UNAUTHORIZED)
    escalation = Escalation.objects.get()
    assert escalation.level == "critical"
    assert escalation.context["count"] == 3


# --- 3. data_integrity ------------------------------------------------------------------------------------------


def test_a_constraint_violation_raises_data_integrity_critical(report: Report) -> None:
    report(DUPLICATE)
    escalation = Escalation.objects.get()
    pattern = pattern_of("crm")
    assert (escalation.trigger, escalation.level) == ("data_integrity", "critical")
    assert escalation.dedup_key == f"data_integrity:crm:{pattern.fingerprint}"
    assert escalation.pattern_id == pattern.pk
    assert escalation.runbook is not None and escalation.runbook.name == "data-integrity"


# --- 4. repeated_pattern ----------------------------------------------------------------------------------------


def test_five_errors_of_a_pattern_raise_nothing_and_the_sixth_raises_a_warning(report: Report) -> None:
    for _ in range(5):
        report(TIMEOUT)
    assert not Escalation.objects.exists()
    report(TIMEOUT)
    escalation = Escalation.objects.get()
    pattern = pattern_of("search")
    assert (escalation.trigger, escalation.level) == ("repeated_pattern", "warning")
    assert escalation.dedup_key == f"repeated_pattern:{pattern.fingerprint}"
    assert escalation.pattern_id == pattern.pk
    assert (escalation.context["threshold"], escalation.context["window_s"]) == (5, 300)
    assert escalation.context["seen_at_least"] == 6
    assert "more than 5 in 5 min" in escalation.title


def test_errors_of_the_pattern_older_than_the_window_do_not_count(report: Report) -> None:
    report(*[TIMEOUT] * 5)
    ErrorEvent.objects.update(occurred_at=timezone.now() - timedelta(minutes=6))
    report(TIMEOUT)  # the sixth of its life, the first of the last 5 minutes
    assert pattern_of("search").total_count == 6
    assert not Escalation.objects.exists()


def test_six_errors_in_one_batch_raise_it_too(report: Report) -> None:
    report(*[TIMEOUT] * 6)
    assert Escalation.objects.get().trigger == "repeated_pattern"


def test_the_sweep_resolves_a_repeated_pattern_once_its_window_has_passed(report: Report) -> None:
    report(*[TIMEOUT] * 6)
    assert error_triggers.sweep_rates() == 0  # still more than 5 within the window
    assert error_triggers.sweep_rates(timezone.now() + timedelta(minutes=6)) == 1
    escalation = Escalation.objects.get()
    assert (escalation.state, escalation.auto_resolved) == ("resolved", True)
    assert escalation.resolution.startswith("the pattern came back to 0 errors within 5 min")
    assert EscalationEvent.objects.filter(escalation=escalation, kind="resolved", actor="system").exists()


def plan_for_timeouts(agent_client: Any, n: int, attempt: int = 1) -> list[str]:
    """n recovery plans asked for the TIMEOUT error, as an agent asks on each failed call: their ids."""
    ids = []
    for _ in range(n):
        error = {k: TIMEOUT[k] for k in ("type", "message")}
        body = {"service": "search", "operation": "query", "error": error, "attempt": attempt}
        answer = agent_client.post("/api/v1/recovery/plan", body, format="json")
        assert answer.status_code == 200, answer.content
        ids.append(answer.json()["plan_id"])
    return ids


def fail(agent_client: Any, plans: list[str]) -> None:
    outcomes = [{"service": "search", "success": False, "plan_id": p} for p in plans]
    agent_client.post("/api/v1/outcomes", {"outcomes": outcomes}, format="json")


def test_it_raises_nothing_for_a_repeated_pattern_whose_plans_recovered(
    report: Report, agent_client: Any
) -> None:
    plans = plan_for_timeouts(agent_client, 8)
    agent_client.post(
        "/api/v1/outcomes",
        {"outcomes": [{"service": "search", "success": True, "plan_id": p} for p in plans]},
        format="json",
    )
    report(*[TIMEOUT] * 8)
    assert pattern_of("search").total_count == 8
    assert not Escalation.objects.exists()


def test_it_raises_nothing_while_the_plans_are_still_followed(report: Report, agent_client: Any) -> None:
    plan_for_timeouts(agent_client, 8)  # pending: the retries they asked for are under way
    report(*[TIMEOUT] * 8)
    assert not Escalation.objects.exists()


def test_it_leaves_to_recovery_the_retries_that_failed_with_attempts_left(
    report: Report, agent_client: Any
) -> None:
    fail(agent_client, plan_for_timeouts(agent_client, 8))  # the agent asks again: one recovery going on
    report(*[TIMEOUT] * 8)
    assert not Escalation.objects.exists()


def test_it_raises_a_repeated_pattern_whose_recovery_gave_up(report: Report, agent_client: Any) -> None:
    plans = plan_for_timeouts(agent_client, 6, attempt=50)  # no attempt left, nothing to fall back on
    fail(agent_client, plans)
    report(*[TIMEOUT] * 6)
    escalation = Escalation.objects.get(trigger="repeated_pattern")
    assert escalation.context["handled"] == 0


def test_it_counts_the_unrecovered_errors_of_a_storm_in_full(report: Report, agent_client: Any) -> None:
    plan_for_timeouts(agent_client, 4)  # four handled, eight reported: four not handled is not above five
    report(*[TIMEOUT] * 8)
    assert not Escalation.objects.exists()
    error_triggers.forget()  # this process looks at a handled pattern again only QUIET_S later
    report(*[TIMEOUT] * 2)  # ten reported, four handled: six not handled
    escalation = Escalation.objects.get()
    assert (escalation.context["handled"], escalation.context["seen_at_least"]) == (4, 10)
    assert "4 of them recovered or being recovered" in escalation.summary


def test_the_sweep_resolves_a_repeated_pattern_once_its_errors_are_being_recovered(
    report: Report, agent_client: Any
) -> None:
    report(*[TIMEOUT] * 6)
    assert Escalation.objects.get().state == "open"
    plan_for_timeouts(agent_client, 6)
    assert error_triggers.sweep_rates() == 1
    escalation = Escalation.objects.get()
    assert (escalation.state, escalation.auto_resolved) == ("resolved", True)
    assert escalation.resolution.startswith("the pattern came back to 0 errors not recovered within 5 min")


# --- 5. error_rate ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch", "raised"),
    [
        pytest.param([FAILED_CALL] * 20, True, id="20 of 20 failed"),
        pytest.param([FAILED_CALL] * 19, False, id="fewer calls than min_calls"),
        pytest.param([FAILED_CALL] * 10 + [GOOD_CALL] * 10, False, id="50% is not above 50%"),
        pytest.param([FAILED_CALL] * 11 + [GOOD_CALL] * 9, True, id="55%"),
    ],
)
def test_outcomes_raise_an_error_rate_above_the_threshold(
    outcomes: Callable[..., Any], batch: list[dict[str, Any]], raised: bool
) -> None:
    outcomes(batch)
    found = Escalation.objects.filter(trigger="error_rate").first()
    assert (found is not None) is raised
    if found is not None:
        failures = sum(1 for call in batch if not call["success"])
        assert (found.level, found.dedup_key, found.service) == ("critical", "error_rate:search", "search")
        assert (found.context["calls"], found.context["failures"], found.context["window_s"]) == (
            20,
            failures,
            300,
        )
        assert found.context["rate_percent"] == round(100 * failures / 20, 2)
        assert f"{failures} of 20 calls" in found.title


def test_the_sweep_resolves_an_error_rate_once_the_window_holds_no_failures(
    outcomes: Callable[..., Any],
) -> None:
    disable("repeated_pattern")  # the 20 failures' errors would raise that too
    outcomes([FAILED_CALL] * 20)
    assert error_triggers.sweep_rates() == 0  # still over
    assert error_triggers.sweep_rates(timezone.now() + timedelta(minutes=10)) == 1
    escalation = Escalation.objects.get(trigger="error_rate")
    assert (escalation.state, escalation.auto_resolved) == ("resolved", True)
    assert escalation.resolution == "error rate back under 50%: 0.0% (0 of 0 calls in the last 5 min)"


def test_outcomes_resolve_an_error_rate_back_under_the_threshold(
    outcomes: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(error_triggers, "RATE_EVERY_S", 0.0)
    outcomes([FAILED_CALL] * 20)
    assert Escalation.objects.get(trigger="error_rate").state == "open"
    outcomes([GOOD_CALL] * 40 + [FAILED_CALL])  # 21 of 61: 34%
    escalation = Escalation.objects.get(trigger="error_rate")
    assert (escalation.state, escalation.auto_resolved) == ("resolved", True)
    assert escalation.resolution == "error rate back under 50%: 34.4% (21 of 61 calls in the last 5 min)"


def test_a_service_s_error_rate_is_read_once_per_moment_per_process(
    outcomes: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(error_triggers, "RATE_EVERY_S", 3600.0)
    outcomes([GOOD_CALL] * 20 + [FAILED_CALL])  # read now: under the threshold
    outcomes([FAILED_CALL] * 40)  # within RATE_EVERY_S: not read again
    assert not Escalation.objects.filter(trigger="error_rate").exists()
    error_triggers.forget()
    outcomes([FAILED_CALL])
    assert Escalation.objects.filter(trigger="error_rate").exists()


# --- the cost of a storm, and failures --------------------------------------------------------------------------


def test_a_repeat_moments_after_a_raise_is_not_written_again(
    report: Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(error_triggers, "QUIET_S", 3600.0)
    essential("payments")
    for _ in range(3):
        report(FATAL)
    assert Escalation.objects.get().occurrences == 1


def test_the_quiet_repeats_count_into_the_next_raise(report: Report, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(error_triggers, "QUIET_S", 3600.0)
    essential("payments")
    for _ in range(3):
        report(FATAL)
    monkeypatch.setattr(error_triggers, "QUIET_S", 0.0)
    report(FATAL)
    escalation = Escalation.objects.get()
    assert escalation.occurrences == 4
    assert escalation.events.filter(kind="repeated").count() == 1


def test_each_report_counts_into_the_escalation_once_the_quiet_time_is_over(
    report: Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(error_triggers, "QUIET_S", 0.0)
    essential("payments")
    for _ in range(3):
        report(FATAL)
    escalation = Escalation.objects.get()
    assert escalation.occurrences == 3
    assert escalation.context["count"] == 1


def test_a_failing_trigger_never_fails_the_report(
    report: Report, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the queue is broken")

    monkeypatch.setattr(escalation_services, "raise_escalation", broken)
    essential("payments")
    with caplog.at_level(logging.WARNING, logger="healing.escalations.error_triggers"):
        report(FATAL, UNAUTHORIZED)  # 201 (checked by report)
    assert "escalation trigger critical_error failed: RuntimeError: the queue is broken" in caplog.text
    assert "escalation trigger security failed" in caplog.text
    assert pattern_of("payments").total_count == 1


def test_a_failing_trigger_never_fails_the_outcomes(
    outcomes: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the queue is broken")

    monkeypatch.setattr(escalation_services, "raise_escalation", broken)
    with caplog.at_level(logging.WARNING, logger="healing.escalations.error_triggers"):
        outcomes([FAILED_CALL] * 20)
    assert "escalation trigger evaluate_rate failed: RuntimeError: the queue is broken" in caplog.text

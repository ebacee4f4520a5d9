"""The event triggers (healing/escalations/event_triggers.py), each by the real event that sets it off: plans asked
for through POST /api/v1/recovery/plan, retry jobs run in this process and on a real Celery worker, rollbacks
against a real HTTP server, tasks marked stale by the sweep, breakers tripped and closed through the API, health
checks recording results, healing runs executed against a real webhook target. And what clears each one."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from core.audit.services import Actor
from healing.actions import services as action_services
from healing.actions.models import HealingHold
from healing.checks import services as check_services
from healing.checks.probes import Outcome
from healing.escalations import selectors, sweeps
from healing.escalations.models import Escalation, EscalationEvent, EscalationTrigger
from recovery.breakers.models import BreakerTransition, Service
from recovery.checkpoints import services as checkpoint_services
from recovery.decisions import policies
from recovery.decisions.models import FallbackOption, RecoveryPlan, RetryPolicy
from recovery.retries import services as retry_services
from recovery.retries.models import RetryJob
from recovery.retries.tasks import run_retry_attempt
from recovery.sagas import services as saga_services
from recovery.sagas import signals as saga_signals
from tests.support import factories
from tests.support.escalation_receivers import escalation_receivers  # noqa: F401  (a fixture)
from tests.support.factories import rebound_settings
from tests.support.healing_runs import ask, check_result, execute, health_check, make_webhook, operator_actor
from tests.support.health_checks import make_check
from tests.support.http_target import Answer, Target, running_target
from tests.support.processes import PYTHON, process_env, start, stop, wait_for
from tests.support.saga_fixtures import Target as SagaTarget
from tests.support.saga_fixtures import drive as drive_rollback
from tests.support.saga_fixtures import http_step, open_txn

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("escalation_receivers")]

TIMEOUT = {"type": "TimeoutError", "message": "timed out"}


@pytest.fixture
def committed(django_capture_on_commit_callbacks: Any) -> Callable[[], Any]:
    """A block whose on-commit callbacks run at its end, as a commit would run them (the signals, the raises)."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture(autouse=True)
def fresh_policies() -> Iterator[None]:
    policies.forget()
    yield
    policies.forget()


def escalation(key: str) -> Escalation:
    return Escalation.objects.get(dedup_key=key)


def events(row: Escalation) -> list[str]:
    return list(EscalationEvent.objects.filter(escalation=row).order_by("id").values_list("kind", flat=True))


def of_trigger(kind: str) -> list[Escalation]:
    return list(Escalation.objects.filter(trigger=kind).order_by("id"))


# --- 6, 7: plans ---------------------------------------------------------------------------------------------


def plan(client: Any, committed: Any, **body: Any) -> dict[str, Any]:
    body = {"service": "svc", "operation": "charge", "error": TIMEOUT, **body}
    with committed():
        response = client.post("/api/v1/recovery/plan", body, format="json")
    assert response.status_code == 200, response.json()
    return response.json()  # type: ignore[no-any-return]


@pytest.mark.redis
def test_it_raises_fallbacks_exhausted_when_critical_work_has_nothing_left(
    agent_client: Any, committed: Any
) -> None:
    Service.objects.create(name="svc", criticality="essential")
    answer = plan(agent_client, committed, attempt=50)  # the policy's attempts are long spent, no fallback

    assert answer["action"] == "escalate"
    row = escalation("fallbacks_exhausted:svc:charge")
    assert (row.trigger, row.level, row.state, row.service) == (
        "fallbacks_exhausted",
        "critical",
        "open",
        "svc",
    )
    assert row.plan == RecoveryPlan.objects.get(pk=answer["plan_id"])
    assert row.summary == answer["reason"]
    assert row.context["action"] == "escalate" and row.context["kind"] == "connection_timeout"
    assert of_trigger("planner_escalate") == []  # one escalation for one cause


@pytest.mark.redis
def test_it_raises_fallbacks_exhausted_for_an_unimplemented_operation_without_an_alternative(
    agent_client: Any, committed: Any
) -> None:
    answer = plan(agent_client, committed, error={"status_code": 501})
    assert answer["action"] == "abort"
    assert escalation("fallbacks_exhausted:svc:charge").level == "critical"


@pytest.mark.redis
def test_it_resolves_fallbacks_exhausted_once_a_later_plan_finds_a_fallback(
    agent_client: Any, committed: Any
) -> None:
    svc = Service.objects.create(name="svc", criticality="essential")
    plan(agent_client, committed, attempt=50)
    FallbackOption.objects.create(service=svc, position=1, kind="static", static_value={"answer": "later"})

    answer = plan(agent_client, committed, attempt=50)

    assert answer["action"] == "fallback"
    row = escalation("fallbacks_exhausted:svc:charge")
    assert (row.state, row.auto_resolved, row.resolved_by) == ("resolved", True, None)
    assert row.resolution.startswith(
        f"plan {answer['plan_id']} for svc/charge found an option again (fallback)"
    )
    assert events(row) == ["raised", "resolved"]


@pytest.mark.redis
@pytest.mark.parametrize(("status", "error_class"), [(401, "authentication"), (403, "authentication")])
def test_it_raises_a_warning_when_the_planner_escalates_a_human_error(
    agent_client: Any, committed: Any, status: int, error_class: str
) -> None:
    answer = plan(agent_client, committed, error={"status_code": status})

    assert (answer["action"], answer["error_class"]) == ("escalate", error_class)
    row = escalation(f"planner_escalate:svc:charge:{error_class}")
    assert (row.trigger, row.level, row.error_class) == ("planner_escalate", "warning", error_class)
    assert row.plan_id == uuid.UUID(answer["plan_id"])
    assert "a human must act" in row.summary
    assert of_trigger("fallbacks_exhausted") == []


@pytest.mark.redis
def test_a_repeated_escalation_of_the_planner_counts_into_one(agent_client: Any, committed: Any) -> None:
    for _ in range(3):
        plan(agent_client, committed, error={"status_code": 401})
    [row] = of_trigger("planner_escalate")
    assert row.occurrences == 3


@pytest.mark.redis
def test_a_plan_the_planner_can_follow_raises_nothing(agent_client: Any, committed: Any) -> None:
    assert plan(agent_client, committed)["action"] == "retry"
    assert not Escalation.objects.exists()


@pytest.mark.redis
def test_a_disabled_trigger_raises_nothing(agent_client: Any, committed: Any) -> None:
    EscalationTrigger.objects.filter(kind="planner_escalate").update(enabled=False)
    selectors.clear_trigger_cache()
    plan(agent_client, committed, error={"status_code": 401})
    assert not Escalation.objects.exists()


# --- 8: server-side retries ----------------------------------------------------------------------------------


@pytest.fixture
def retry_target() -> Iterator[Target]:
    with (
        running_target() as server,
        override_settings(REBOUND=rebound_settings(OUTBOUND_ALLOWED_HOSTS=[server.host])),
    ):
        yield server


def quick_policy(attempts: int = 2, delay_s: float = 0.0) -> None:
    service, _ = Service.objects.get_or_create(name="billing")
    RetryPolicy.objects.create(
        name="quick",
        service=service,
        strategy="fixed",
        max_attempts=attempts,
        base_delay_s=delay_s,
        max_delay_s=delay_s,
    )


def job_body(target: Target, key: str) -> dict[str, Any]:
    return {
        "service": "billing",
        "operation": "create_invoice",
        "kind": "http",
        "request": {"method": "POST", "url": target.url("/invoices"), "body": {"amount": 9}},
        "idempotency_key": key,
        "policy": "quick",
    }


def run_here(
    client: Any, target: Target, key: str, committed: Any, monkeypatch: pytest.MonkeyPatch
) -> RetryJob:
    """A job handed over through the API, its attempts run in this process as the worker would run them."""
    monkeypatch.setattr(retry_services, "enqueue", lambda *args, **kwargs: None)
    with committed():
        response = client.post("/api/v1/retries", job_body(target, key), format="json")
    assert response.status_code == 201, response.json()
    job = RetryJob.objects.get(pk=response.json()["id"])
    while job.state == RetryJob.State.PENDING:
        with committed():
            run_retry_attempt.apply(args=[str(job.pk), job.attempts + 1], task_id=job.fence).get()
        job.refresh_from_db()
    return job


def test_it_raises_a_warning_for_a_retry_that_needs_a_human_and_resolves_it_when_a_later_one_succeeds(
    agent_client: Any, retry_target: Target, committed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    quick_policy()
    retry_target.script(Answer(503, "down"), Answer(503, "down"), Answer(201, {"id": "inv_1"}))
    failed = run_here(agent_client, retry_target, "inv-1", committed, monkeypatch)

    assert (failed.state, failed.needs_human) == ("failed", True)
    row = escalation("retry_needs_human:billing:create_invoice")
    assert (row.trigger, row.level, row.service, row.retry_job_id) == (
        "retry_needs_human",
        "warning",
        "billing",
        failed.pk,
    )
    assert "no attempts left: 2 of 2 used" in row.summary
    assert row.context["attempts"] == 2

    succeeded = run_here(agent_client, retry_target, "inv-2", committed, monkeypatch)
    assert succeeded.state == "succeeded"
    row.refresh_from_db()
    assert (row.state, row.auto_resolved) == ("resolved", True)
    assert row.resolution == f"a later retry of billing/create_invoice succeeded (job {succeeded.pk})"


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_retry_that_needs_a_human_on_a_real_worker_raises_a_warning(
    tmp_path: Path, agent_client: Any
) -> None:
    quick_policy(attempts=2, delay_s=0.2)
    with (
        running_target() as target,
        override_settings(REBOUND=rebound_settings(OUTBOUND_ALLOWED_HOSTS=[target.host])),
    ):
        target.script(Answer(503, "down"), Answer(503, "still down"), Answer(201, {"id": "inv_2"}))
        log = tmp_path / "worker.log"
        # The project's Celery app, with the event triggers connected as healing/apps.py connects them.
        command = [
            PYTHON,
            "-m",
            "celery",
            "-A",
            "tests.support.escalation_worker",
            "worker",
            "--pool",
            "solo",
        ]
        worker = start(
            [*command, "-l", "INFO"], process_env(tmp_path, OUTBOUND_ALLOWED_HOSTS=target.host), log
        )
        try:
            first = agent_client.post("/api/v1/retries", job_body(target, "inv-1"), format="json")
            assert first.status_code == 201, first.json()
            key = "retry_needs_human:billing:create_invoice"
            raised = lambda: Escalation.objects.filter(dedup_key=key).exists()  # noqa: E731
            assert wait_for(raised, timeout=60), log.read_text()[-3000:]
            row = escalation(key)
            job = RetryJob.objects.get(pk=first.json()["id"])
            assert (job.state, job.needs_human, job.attempts) == ("failed", True, 2)
            assert (row.level, row.state, row.retry_job_id, row.raised_by) == (
                "warning",
                "open",
                job.pk,
                "trigger:retry_needs_human",
            )

            second = agent_client.post("/api/v1/retries", job_body(target, "inv-2"), format="json")
            assert second.status_code == 201, second.json()
            resolved = lambda: escalation(key).state == "resolved"  # noqa: E731
            assert wait_for(resolved, timeout=60), log.read_text()[-3000:]
            assert escalation(key).auto_resolved is True
        finally:
            stop(worker)


# --- 9: rollbacks --------------------------------------------------------------------------------------------


def failed_rollback(target: SagaTarget, committed: Any) -> Any:
    """A transaction of two steps whose newest compensation is refused (400: never retried): its rollback fails."""
    txn = open_txn(name="order-42")
    http_step(txn, target, "reserve")
    http_step(txn, target, "charge")
    target.fail("charge", 1, status=400)
    with committed():
        saga_services.request_rollback(
            transaction_id=txn.pk, reason="payment refused", actor=Actor(agent=txn.agent)
        )
        drive_rollback(txn)
    assert txn.status == "rollback_failed"
    return txn


def test_it_raises_an_emergency_when_a_rollback_fails(target: SagaTarget, committed: Any) -> None:
    txn = failed_rollback(target, committed)

    row = escalation(f"rollback_failed:{txn.pk}")
    assert (row.trigger, row.level, row.state) == ("rollback_failed", "emergency", "open")
    assert row.transaction_id == txn.pk
    assert row.title == f"The rollback of transaction 'order-42' of {txn.agent.name} failed"
    assert "at step 2 (step charge): HTTPStatusError" in row.summary
    assert (row.context["failed_step"], row.context["rollback_reason"]) == (2, "payment refused")
    assert row.runbook is not None and row.runbook.name == "deployment"  # the workflow's runbook for it
    assert "Consider manual deployment or rollback" in row.recommended_action


def test_it_resolves_a_failed_rollback_once_the_resumed_rollback_completes(
    target: SagaTarget, committed: Any
) -> None:
    txn = failed_rollback(target, committed)
    with committed():
        saga_services.retry_compensation(
            transaction_id=txn.pk, reason="the refund API is fixed", actor=Actor(user=factories.operator())
        )
        drive_rollback(txn)

    assert txn.status == "rolled_back"
    row = escalation(f"rollback_failed:{txn.pk}")
    assert (row.state, row.auto_resolved) == ("resolved", True)
    assert row.resolution == f"the rollback of transaction {txn.pk} completed"


def test_a_trigger_that_fails_is_logged_and_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    # send(), not send_robust(): a receiver that raised would raise here.
    with caplog.at_level(logging.ERROR):
        saga_signals.transaction_ended.send(
            sender=None, transaction_id=str(uuid.uuid4()), status="rollback_failed"
        )
    assert "escalation trigger on_transaction_ended failed" in caplog.text
    assert not Escalation.objects.exists()


# --- 10: tasks that missed their heartbeat ------------------------------------------------------------------


def test_it_raises_a_warning_for_each_task_that_missed_its_heartbeat(committed: Any) -> None:
    agent = factories.AgentFactory(name="crawler")
    tasks = [checkpoint_services.create_task(agent=agent, task_id=f"crawl-{n}")[0] for n in (1, 2)]
    later = timezone.now() + timedelta(seconds=float(settings.REBOUND["TASK_STALE_SECONDS"]) + 5)

    with committed():
        assert checkpoint_services.mark_stale(now=later) == 2

    rows = of_trigger("heartbeat_missed")
    assert [(r.dedup_key, r.task_id, r.level) for r in rows] == [
        (f"heartbeat_missed:{t.pk}", t.pk, "warning") for t in tasks
    ]
    assert rows[0].title == "Task 'crawl-1' of crawler missed its heartbeat"
    assert rows[0].context["stale_at"] == later.isoformat()


# --- breakers: a closing clears what the open breaker raised ------------------------------------------------

FAIL_503 = {"service": "svc", "success": False, "error": {"status_code": 503}}
OK = {"service": "svc", "success": True, "duration_ms": 12}


def small_breaker(**fields: Any) -> Service:
    values = {
        "criticality": "essential",
        "minimum_calls": 4,
        "window_size": 10,
        "consecutive_failures": 0,
        "wait_duration_s": 0.2,
        "max_wait_s": 1,
        "half_open_max_calls": 2,
        "success_threshold": 2,
        **fields,
    }
    return Service.objects.create(name="svc", **values)


def trip(client: Any, committed: Any) -> None:
    with committed():
        response = client.post("/api/v1/outcomes", [FAIL_503] * 4, format="json")
    assert response.status_code == 200, response.json()


def close(client: Any, committed: Any) -> None:
    """Wait out the breaker's wait, and let two trial calls succeed: it closes."""
    time.sleep(0.25)
    permits = [client.post("/api/v1/breakers/svc/permit").json() for _ in range(2)]
    assert all(p["allowed"] for p in permits), permits
    with committed():
        response = client.post(
            "/api/v1/outcomes", [{**OK, "permit_id": p["permit_id"]} for p in permits], format="json"
        )
    assert response.json()["results"][-1]["state"] == "closed"


@pytest.mark.redis
def test_it_resolves_what_an_open_breaker_raised_when_it_closes(agent_client: Any, committed: Any) -> None:
    small_breaker()
    trip(agent_client, committed)
    sweeps.sweep(timezone.now() + timedelta(minutes=11))
    plan(agent_client, committed, attempt=50)
    assert escalation("breaker_open_too_long:svc").state == "open"
    assert escalation("fallbacks_exhausted:svc:charge").state == "open"

    close(agent_client, committed)

    for key in ("breaker_open_too_long:svc", "fallbacks_exhausted:svc:charge"):
        row = escalation(key)
        assert (row.state, row.auto_resolved, row.resolution) == (
            "resolved",
            True,
            "the breaker of svc closed",
        )


@pytest.mark.redis
def test_a_breaker_that_opens_resolves_nothing(agent_client: Any, committed: Any) -> None:
    small_breaker()
    plan(agent_client, committed, attempt=50)
    trip(agent_client, committed)
    assert BreakerTransition.objects.filter(to_state="open").exists()
    assert escalation("fallbacks_exhausted:svc:charge").state == "open"


# --- health checks ---------------------------------------------------------------------------------------------


def record(check: Any, ok: bool, committed: Any) -> None:
    with committed():
        outcome = (
            Outcome(True, 3.0, 200) if ok else Outcome(False, 3.0, 503, "HTTP 503 Service Unavailable: down")
        )
        check_services.record(check.pk, outcome, source="manual")


@pytest.mark.parametrize(("criticality", "level"), [("essential", "critical"), ("non_critical", "warning")])
def test_it_raises_an_unhealthy_check_critical_for_an_essential_service(
    committed: Any, criticality: str, level: str
) -> None:
    Service.objects.create(name="svc", criticality=criticality)
    check = make_check("svc-ping", rise=1, fall=1)
    record(check, False, committed)

    row = escalation("health_check_unhealthy:svc-ping")
    assert (row.trigger, row.level, row.service) == ("health_check_unhealthy", level, "svc")
    assert row.title == "Health check svc-ping of svc is unhealthy"
    assert "HTTP 503 Service Unavailable: down" in row.summary
    assert row.context["essential"] is (criticality == "essential")


def test_it_resolves_an_unhealthy_check_once_it_is_healthy(committed: Any) -> None:
    check = make_check("svc-ping", rise=1, fall=1)
    record(check, False, committed)
    record(check, True, committed)

    row = escalation("health_check_unhealthy:svc-ping")
    assert (row.state, row.auto_resolved) == ("resolved", True)
    assert row.resolution.startswith("the health check svc-ping is healthy again")


# --- 12: healing runs ----------------------------------------------------------------------------------------


@pytest.fixture
def webhook_target() -> Iterator[Target]:
    with (
        running_target() as server,
        override_settings(REBOUND=rebound_settings(OUTBOUND_ALLOWED_HOSTS=[server.host])),
    ):
        yield server


@pytest.fixture
def no_enqueue(monkeypatch: pytest.MonkeyPatch) -> None:
    # Executions are run here (tests/support/healing_runs.execute), not sent to a broker.
    monkeypatch.setattr(action_services, "enqueue_execution", lambda run_id, timeout_s: None)


@pytest.mark.usefixtures("no_enqueue")
def test_it_raises_a_failed_run_critical_and_resolves_it_when_a_later_run_succeeds(
    webhook_target: Target, committed: Any
) -> None:
    make_webhook(webhook_target)
    webhook_target.script(Answer(503, {"error": "deploy tool down"}))
    with committed():
        failed, _ = ask("restart-pods", "agent")
        assert execute(failed) == "failed"

    row = escalation("healing_run_failed:restart-pods:web-search")
    assert (row.trigger, row.level, row.service, row.healing_run_id) == (
        "healing_run_failed",
        "critical",
        "web-search",
        failed.pk,
    )
    assert row.title == f"Healing run {failed.pk} of restart-pods on web-search failed"
    assert "webhook failed: HTTP 503" in row.summary

    with committed():
        later, _ = ask("restart-pods", "agent")
        assert execute(later) == "succeeded"
    row.refresh_from_db()
    assert (row.state, row.auto_resolved) == ("resolved", True)
    assert row.resolution == f"healing run {later.pk} of restart-pods on web-search succeeded"


@pytest.mark.usefixtures("no_enqueue")
def test_it_puts_a_run_waiting_for_approval_in_the_queue_until_it_is_decided(
    webhook_target: Target, committed: Any
) -> None:
    make_webhook(webhook_target, risk="medium")
    with committed():
        run, _ = ask("restart-pods", "agent")

    row = escalation(f"approval_waiting:{run.pk}")
    assert (row.trigger, row.level, row.state, row.healing_run_id) == (
        "approval_waiting",
        "info",
        "open",
        run.pk,
    )
    assert row.title == f"Healing run {run.pk} of restart-pods on web-search waits for approval"

    with committed():
        action_services.approve(run_id=run.pk, actor=operator_actor(), reason="go")
    row.refresh_from_db()
    assert (row.state, row.auto_resolved) == ("resolved", True)
    assert row.resolution.startswith("the run is approved: approved by 1 operator(s)")


@pytest.mark.usefixtures("no_enqueue")
def test_it_raises_a_failed_verification_and_the_hold_that_stops_the_loop(
    webhook_target: Target, committed: Any
) -> None:
    check = health_check()
    make_webhook(webhook_target, verify_check=check, verify_within_s=1)
    with override_settings(REBOUND=rebound_settings(HEALING_HOLD_AFTER_FAILED_VERIFICATIONS=1)), committed():
        run, _ = ask("restart-pods", "agent")
        execute(run)
        check_result(check, ok=False)
        assert run.verify_deadline is not None
        action_services.maintain_runs(run.verify_deadline + timedelta(seconds=1))

    hold = HealingHold.objects.get()
    row = escalation("healing_run_failed:restart-pods:web-search")
    assert (row.level, row.occurrences, row.healing_run_id) == (
        "critical",
        2,
        run.pk,
    )  # the failure, the hold
    assert row.summary.startswith("verification_failed")
    assert row.context == {"hold_id": hold.pk, "action": "restart-pods"}
    assert events(row) == ["raised", "repeated"]


def test_it_never_raises_for_a_disabled_action_trigger(webhook_target: Target, committed: Any) -> None:
    EscalationTrigger.objects.filter(kind="approval_waiting").update(enabled=False)
    selectors.clear_trigger_cache()
    make_webhook(webhook_target, risk="medium")
    with committed():
        ask("restart-pods", "agent")
    assert not Escalation.objects.exists()

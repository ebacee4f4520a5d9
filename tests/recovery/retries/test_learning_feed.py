"""The retry jobs' feed of the error learning: a job that ends folds one server_retry result, in the transaction
that ended it; a job that recovered nothing (first attempt succeeded) or was cancelled folds none.

Attempts run in this process with Celery's `apply` against a real local HTTP server, as in test_jobs.py; what
the services enqueue is recorded instead of sent."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from core.audit.services import Actor
from recovery.breakers import services as breaker_services
from recovery.breakers.models import Service
from recovery.calls import services as call_services
from recovery.decisions import policies
from recovery.decisions.models import RetryPolicy
from recovery.errors.writes import Classified
from recovery.learning.models import Effectiveness
from recovery.retries import services as retry_services
from recovery.retries.models import RetryAttempt, RetryJob
from recovery.retries.tasks import run_retry_attempt
from tests.support import factories
from tests.support.factories import rebound_settings
from tests.support.http_target import Answer, Target, running_target

pytestmark = pytest.mark.django_db


@pytest.fixture
def target() -> Iterator[Target]:
    with (
        running_target() as server,
        override_settings(REBOUND=rebound_settings(OUTBOUND_ALLOWED_HOSTS=[server.host])),
    ):
        yield server


@pytest.fixture(autouse=True)
def fast(db: Any) -> Iterator[RetryPolicy]:
    """Three attempts, no wait between them: each test steps through the attempts itself."""
    service = Service.objects.create(name="billing")
    policies.forget()
    yield RetryPolicy.objects.create(
        name="fast", service=service, strategy="fixed", max_attempts=3, base_delay_s=0, max_delay_s=0
    )
    policies.forget()


@pytest.fixture(autouse=True)
def queued(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry_services, "enqueue", lambda *args, **kwargs: None)


@pytest.fixture
def classified(monkeypatch: pytest.MonkeyPatch) -> list[Classified]:
    """Each failed attempt's classification, as the worker had it at hand."""
    seen: list[Classified] = []
    real = call_services.classify

    def keep(outcome: Any, **kwargs: Any) -> Classified | None:
        answer = real(outcome, **kwargs)
        if answer is not None:
            seen.append(answer)
        return answer

    monkeypatch.setattr(call_services, "classify", keep)
    return seen


@pytest.fixture
def committed(django_capture_on_commit_callbacks: Any) -> Callable[[Callable[[], Any]], Any]:
    def run(step: Callable[[], Any]) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return step()

    return run


def submit(agent_client: Any, target: Target, committed: Any) -> RetryJob:
    body = {
        "service": "billing",
        "operation": "create_invoice",
        "kind": "http",
        "request": {"method": "POST", "url": target.url("/invoices"), "body": {"amount": 42}},
        "idempotency_key": "invoice-42",
        "policy": "fast",
    }
    response = committed(lambda: agent_client.post("/api/v1/retries", body, format="json"))
    assert response.status_code == 201, response.json()
    return RetryJob.objects.get(pk=response.json()["id"])


def drive(job: RetryJob, committed: Any) -> list[str]:
    """Deliver each attempt as the worker would (the job's fence as the task id) until the job stops pending."""
    states: list[str] = []
    job.refresh_from_db()
    while job.state == RetryJob.State.PENDING and len(states) < 10:
        states.append(deliver(job, committed, job.attempts + 1, job.fence))
        job.refresh_from_db()
    return states


def deliver(job: RetryJob, committed: Any, number: int, task_id: str) -> str:
    args = [str(job.pk), number]
    return str(committed(lambda: run_retry_attempt.apply(args=args, task_id=task_id).get()))


def test_it_folds_one_server_retry_success_for_a_job_that_failed_once_then_succeeded(
    agent_client: Any, target: Target, committed: Any, classified: list[Classified]
) -> None:
    target.script(Answer(503, "down"), Answer(201, {"id": "inv_1"}))
    job = submit(agent_client, target, committed)

    assert drive(job, committed) == ["pending", "succeeded"]

    job.refresh_from_db()
    first = RetryAttempt.objects.get(job=job, number=1)
    service = Effectiveness.objects.get(scope="service")
    pattern = Effectiveness.objects.get(scope="pattern")
    assert (service.service, service.error_class, service.action) == (
        "billing",
        "external_service",
        "server_retry",
    )
    # The pattern is the one the classifier gave the first failed attempt, derived again from its stored row.
    assert pattern.fingerprint == classified[0].fingerprint
    assert (pattern.service, pattern.error_class, pattern.action) == (
        "billing",
        "external_service",
        "server_retry",
    )
    assert job.finished_at is not None and first.finished_at is not None
    for row in (service, pattern):
        assert (row.total_tries, row.total_successes, row.total_unknown, row.version) == (1, 1, 0, 0)
        assert row.last_result_at == job.finished_at
        assert row.recover_s_sum == pytest.approx((job.finished_at - job.created_at).total_seconds())
        assert row.delay_s_sum == pytest.approx((job.finished_at - first.finished_at).total_seconds())
        assert row.delay_weight == 1.0


def test_it_folds_nothing_for_a_job_that_succeeded_at_its_first_attempt(
    agent_client: Any, target: Target, committed: Any
) -> None:
    target.script(Answer(201, {"id": "inv_1"}))
    job = submit(agent_client, target, committed)

    assert drive(job, committed) == ["succeeded"]

    assert not Effectiveness.objects.exists()


def test_it_folds_one_failure_for_a_job_that_ran_out_of_attempts(
    agent_client: Any, target: Target, committed: Any
) -> None:
    target.script(*[Answer(503, "down")] * 3)
    job = submit(agent_client, target, committed)

    assert drive(job, committed) == ["pending", "pending", "failed"]

    service = Effectiveness.objects.get(scope="service")
    assert (service.error_class, service.action, service.total_tries, service.total_successes) == (
        "external_service",
        "server_retry",
        1,
        0,
    )
    assert (service.tries, service.successes, service.recover_s_sum) == (1.0, 0.0, 0.0)
    assert Effectiveness.objects.filter(scope="pattern", total_tries=1, total_successes=0).count() == 1


def test_it_folds_a_failure_of_a_job_failed_at_once_under_its_error_class(
    agent_client: Any, target: Target, committed: Any
) -> None:
    target.script(Answer(400, {"error": "amount must be positive"}))
    job = submit(agent_client, target, committed)

    assert drive(job, committed) == ["failed"]

    [service] = Effectiveness.objects.filter(scope="service")
    assert (service.error_class, service.total_tries, service.total_successes) == ("validation", 1, 0)


def test_it_folds_nothing_for_a_cancelled_job(agent_client: Any, target: Target, committed: Any) -> None:
    target.script(Answer(503, "down"), Answer(201, {}))
    job = submit(agent_client, target, committed)
    deliver(job, committed, 1, job.fence)

    retry_services.cancel_job(job_id=job.pk, actor=Actor(user=factories.operator()), reason="not needed")

    job.refresh_from_db()
    assert job.state == "cancelled"
    assert not Effectiveness.objects.exists()


def test_it_folds_a_job_once_whatever_its_stale_deliveries_do(
    agent_client: Any, target: Target, committed: Any
) -> None:
    target.script(Answer(503, "down"), Answer(201, {"id": "inv_1"}))
    job = submit(agent_client, target, committed)
    first_fence = job.fence
    drive(job, committed)

    again = deliver(job, committed, 1, first_fence)

    assert again == "stale"
    assert [row.total_tries for row in Effectiveness.objects.all()] == [1, 1]


def test_it_folds_a_failure_without_an_error_for_a_job_the_breaker_kept_from_any_attempt(
    agent_client: Any, target: Target, fast: RetryPolicy, committed: Any
) -> None:
    breaker_services.set_override(
        name="billing", mode="forced_open", reason="incident", expires_at=None, actor=Actor()
    )
    RetryPolicy.objects.filter(pk=fast.pk).update(deadline_s=5)
    job = submit(agent_client, target, committed)

    assert drive(job, committed) == ["failed"]

    [row] = Effectiveness.objects.all()  # no failed attempt, so no pattern: the service row only
    assert (row.scope, row.service, row.error_class, row.action) == ("service", "billing", "", "server_retry")
    assert (row.total_tries, row.total_successes) == (1, 0)


def test_it_folds_a_failure_for_a_job_whose_lost_attempt_cannot_be_sent_again(
    agent_client: Any, committed: Any
) -> None:
    body = {
        "service": "reports",
        "kind": "task",
        "task": {"name": "recovery.demo_tasks.flaky", "kwargs": {"key": "lost-1", "failures": 0}},
        "idempotency_key": "lost-1",
    }
    response = committed(lambda: agent_client.post("/api/v1/retries", body, format="json"))
    assert response.status_code == 201, response.json()
    job = RetryJob.objects.get()
    long_ago = timezone.now() - timedelta(minutes=60)
    RetryJob.objects.filter(pk=job.pk).update(state="running", attempts=1, updated_at=long_ago)
    RetryAttempt.objects.create(job=job, number=1, task_id=job.fence, started_at=long_ago)

    assert committed(retry_services.requeue_overdue) == 1

    job.refresh_from_db()
    lost = RetryAttempt.objects.get(job=job)
    assert (job.state, lost.outcome) == ("failed", "failure")
    service = Effectiveness.objects.get(scope="service")
    assert (service.service, service.error_class, service.total_tries, service.total_successes) == (
        "reports",
        lost.error_class,
        1,
        0,
    )
    assert Effectiveness.objects.filter(scope="pattern", service="reports").count() == 1

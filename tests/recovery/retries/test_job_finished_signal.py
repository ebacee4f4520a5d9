"""job_finished: sent once a retry job's final state is committed (succeeded, failed and needing a human,
cancelled), never for the attempts in between, and never the job's failure when a receiver fails. The attempts
run in this process against a real local HTTP server, as in test_jobs.py."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import override_settings

from core.audit.services import Actor
from recovery.breakers.models import Service
from recovery.decisions import policies
from recovery.decisions.models import RetryPolicy
from recovery.retries import services as retry_services
from recovery.retries import signals
from recovery.retries.models import RetryJob
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
def fast() -> Iterator[None]:
    policies.forget()
    service = Service.objects.create(name="billing")
    RetryPolicy.objects.create(
        name="fast", service=service, strategy="fixed", max_attempts=3, base_delay_s=0, max_delay_s=0
    )
    yield
    policies.forget()


@pytest.fixture(autouse=True)
def queued(monkeypatch: pytest.MonkeyPatch) -> None:
    # What the services enqueue is not sent: the tests deliver each attempt themselves.
    monkeypatch.setattr(retry_services, "enqueue", lambda *args, **kwargs: None)


@pytest.fixture
def heard() -> Iterator[list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []

    def receiver(sender: object, **kwargs: Any) -> None:
        calls.append({k: v for k, v in kwargs.items() if k != "signal"})

    signals.job_finished.connect(receiver, dispatch_uid="test-job-heard")
    yield calls
    signals.job_finished.disconnect(dispatch_uid="test-job-heard")


@pytest.fixture
def committed(django_capture_on_commit_callbacks: Any) -> Callable[[Callable[[], Any]], Any]:
    def run(step: Callable[[], Any]) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return step()

    return run


def submit(client: Any, target: Target, committed: Any) -> RetryJob:
    body = {
        "service": "billing",
        "operation": "create_invoice",
        "kind": "http",
        "request": {"method": "POST", "url": target.url("/invoices"), "body": {"amount": 42}},
        "idempotency_key": "invoice-42",
        "policy": "fast",
    }
    response = committed(lambda: client.post("/api/v1/retries", body, format="json"))
    assert response.status_code == 201, response.json()
    return RetryJob.objects.get(pk=response.json()["id"])


def drive(job: RetryJob, committed: Any) -> list[str]:
    states: list[str] = []
    job.refresh_from_db()
    while job.state == RetryJob.State.PENDING and len(states) < 5:
        args, fence = [str(job.pk), job.attempts + 1], job.fence
        states.append(str(committed(lambda: run_retry_attempt.apply(args=args, task_id=fence).get())))  # noqa: B023
        job.refresh_from_db()
    return states


def test_it_announces_a_job_that_succeeded_once_and_not_its_retries(
    agent_client: Any, target: Target, heard: list[dict[str, Any]], committed: Any
) -> None:
    target.script(Answer(503, "down"), Answer(201, {"id": "inv_1"}))
    job = submit(agent_client, target, committed)
    assert drive(job, committed) == ["pending", "succeeded"]
    assert heard == [
        {
            "job_id": str(job.pk),
            "service": "billing",
            "operation": "create_invoice",
            "state": "succeeded",
            "needs_human": False,
        }
    ]


def test_it_announces_a_job_that_failed_and_needs_a_human(
    agent_client: Any, target: Target, heard: list[dict[str, Any]], committed: Any
) -> None:
    target.script(*[Answer(503, "down")] * 3)
    job = submit(agent_client, target, committed)
    assert drive(job, committed) == ["pending", "pending", "failed"]
    assert [(c["job_id"], c["state"], c["needs_human"]) for c in heard] == [(str(job.pk), "failed", True)]


def test_it_announces_a_job_an_operator_cancelled(
    agent_client: Any, target: Target, heard: list[dict[str, Any]], committed: Any
) -> None:
    job = submit(agent_client, target, committed)
    committed(
        lambda: retry_services.cancel_job(
            job_id=job.pk, actor=Actor(user=factories.operator()), reason="wrong amount"
        )
    )
    assert [(c["state"], c["needs_human"]) for c in heard] == [("cancelled", False)]


def test_a_failing_receiver_never_fails_the_job(
    agent_client: Any, target: Target, committed: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(sender: object, **_: Any) -> None:
        raise RuntimeError("the queue is down")

    target.script(Answer(201, {"id": "inv_1"}))
    job = submit(agent_client, target, committed)
    signals.job_finished.connect(explode, dispatch_uid="test-job-explode")
    try:
        with caplog.at_level(logging.ERROR):
            assert drive(job, committed) == ["succeeded"]
    finally:
        signals.job_finished.disconnect(dispatch_uid="test-job-explode")
    job.refresh_from_db()
    assert job.state == "succeeded"
    assert "job_finished receiver" in caplog.text and "the queue is down" in caplog.text

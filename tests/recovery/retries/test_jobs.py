"""Server-side retries (retry_operation): the API, the attempt task run in this process against a real local
HTTP server, the breaker and budget around each attempt, operators' cancel and rerun, the sweep and the admin.

The attempt task is run with Celery's `apply` (in this process, with the job's fence as the task id); what the
services enqueue is recorded instead of sent, so each test steps through the attempts itself. The real worker
process is in tests/recovery/retries/test_worker.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone
from prometheus_client import REGISTRY

from core.admin_helpers import CONFIRMED
from core.audit.models import AuditEvent
from core.audit.services import Actor
from recovery.breakers import selectors as breaker_selectors
from recovery.breakers import services as breaker_services
from recovery.breakers.models import Service
from recovery.calls import services as call_services
from recovery.decisions import policies
from recovery.decisions.models import RetryPolicy
from recovery.retries import services as retry_services
from recovery.retries.models import RetryAttempt, RetryJob
from recovery.retries.tasks import run_retry_attempt
from tests.support import factories
from tests.support.factories import rebound_settings
from tests.support.http_target import Answer, Target, running_target

pytestmark = pytest.mark.django_db

Queued = list[tuple[str, int, str, float]]


@pytest.fixture
def target() -> Iterator[Target]:
    with (
        running_target() as server,
        override_settings(REBOUND=rebound_settings(OUTBOUND_ALLOWED_HOSTS=[server.host])),
    ):
        yield server


@pytest.fixture
def service() -> Service:
    return Service.objects.create(name="billing")


@pytest.fixture
def fast(service: Service) -> Iterator[RetryPolicy]:
    """Three attempts, no wait between them (Retry-After still honoured): the tests step through attempts."""
    policies.forget()
    yield RetryPolicy.objects.create(
        name="fast", service=service, strategy="fixed", max_attempts=3, base_delay_s=0, max_delay_s=0
    )
    policies.forget()


@pytest.fixture
def queued(monkeypatch: Any) -> Queued:
    """What the services enqueue (job id, attempt number, fence, countdown), instead of sending it."""
    calls: Queued = []

    def record(job_id: Any, number: int, fence: str, countdown: float = 0.0) -> None:
        calls.append((str(job_id), number, fence, countdown))

    monkeypatch.setattr(retry_services, "enqueue", record)
    return calls


@pytest.fixture
def committed(django_capture_on_commit_callbacks: Any) -> Callable[[Callable[[], Any]], Any]:
    """Run a step and then its on-commit callbacks (enqueues, metrics), as a commit would."""

    def run(step: Callable[[], Any]) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return step()

    return run


def attempt(job: RetryJob, committed: Any, number: int | None = None, task_id: str | None = None) -> str:
    """Deliver the attempt task as the worker would: with the job's fence as the task id."""
    job.refresh_from_db()
    args = [str(job.pk), number or job.attempts + 1]
    return str(committed(lambda: run_retry_attempt.apply(args=args, task_id=task_id or job.fence).get()))


def drive(job: RetryJob, committed: Any, limit: int = 10) -> list[str]:
    outcomes: list[str] = []
    job.refresh_from_db()
    while job.state == RetryJob.State.PENDING and len(outcomes) < limit:
        outcomes.append(attempt(job, committed))
        job.refresh_from_db()
    return outcomes


def http_body(target: Target, **changes: Any) -> dict[str, Any]:
    return {
        "service": "billing",
        "operation": "create_invoice",
        "kind": "http",
        "request": {
            "method": "POST",
            "url": target.url("/invoices"),
            "headers": {"Authorization": "Bearer sk-live-secret", "Content-Type": "application/json"},
            "body": {"amount": 42},
        },
        "idempotency_key": "invoice-42",
        "policy": "fast",
        **changes,
    }


def submit(client: Any, body: dict[str, Any], committed: Any) -> Any:
    return committed(lambda: client.post("/api/v1/retries", body, format="json"))


def error_of(job: RetryJob) -> dict[str, Any]:
    assert isinstance(job.last_error, dict)
    return job.last_error


def iso(when: datetime | None) -> str:
    assert when is not None
    return when.isoformat().replace("+00:00", "Z")


def retries_total(outcome: str, service: str = "billing") -> float:
    return REGISTRY.get_sample_value("retries_total", {"service": service, "outcome": outcome}) or 0.0


def window(service: Service) -> tuple[int, int]:
    live = breaker_selectors.breaker_view(service)["window"]
    return live["calls"], live["failures"]


# --- the happy path and its rows -------------------------------------------------------------------------


def _submit_two_503s_then_201(agent_client: Any, target: Target, committed: Any) -> Any:
    target.script(Answer(503, "down"), Answer(503, "still down"), Answer(201, {"id": "inv_1"}))
    return submit(agent_client, http_body(target), committed)


def _retry_to_success(agent_client: Any, target: Target, committed: Any) -> tuple[RetryJob, list[str]]:
    _submit_two_503s_then_201(agent_client, target, committed)
    job = RetryJob.objects.get()
    return job, drive(job, committed)


def test_it_accepts_a_retry_job_and_enqueues_its_first_attempt(
    agent_client: Any, target: Target, fast: RetryPolicy, service: Service, queued: Queued, committed: Any
) -> None:
    response = _submit_two_503s_then_201(agent_client, target, committed)

    assert response.status_code == 201, response.json()
    job = RetryJob.objects.get()
    assert response.json()["id"] == str(job.pk)
    assert (job.state, job.attempts, job.agent, job.created_by, job.kind) == (
        "pending",
        0,
        agent_client.agent,
        None,
        "http",
    )
    assert (job.policy, job.policy_snapshot["name"], job.needs_human) == (fast, "fast", False)
    assert job.deadline_at is not None and job.next_attempt_at is not None
    first_fence = job.fence
    assert queued == [(str(job.pk), 1, first_fence, 0.0)]


def test_it_retries_two_503s_and_succeeds_on_the_third_attempt(
    agent_client: Any, target: Target, fast: RetryPolicy, service: Service, queued: Queued, committed: Any
) -> None:
    job, states = _retry_to_success(agent_client, target, committed)
    assert states == ["pending", "pending", "succeeded"]

    job.refresh_from_db()
    assert (job.state, job.attempts, job.needs_human, job.fence, job.next_attempt_at) == (
        "succeeded",
        3,
        False,
        "",
        None,
    )
    assert job.result == {"status_code": 201, "body": {"id": "inv_1"}}
    assert job.last_error is None
    assert job.finished_at is not None


def test_it_records_each_attempt_with_its_classification_and_timing(
    agent_client: Any, target: Target, fast: RetryPolicy, service: Service, queued: Queued, committed: Any
) -> None:
    job, _ = _retry_to_success(agent_client, target, committed)
    rows = list(RetryAttempt.objects.filter(job=job).order_by("number"))
    assert [(r.number, r.outcome, r.status_code) for r in rows] == [
        (1, "failure", 503),
        (2, "failure", 503),
        (3, "success", 201),
    ]
    for row, message in zip(
        rows[:2],
        ["HTTP 503 Service Unavailable: down", "HTTP 503 Service Unavailable: still down"],
        strict=True,
    ):
        assert (row.error_class, row.kind, row.severity, row.error_type, row.message) == (
            "external_service",
            "service_unavailable",
            "high",
            "HTTPStatusError",
            message,
        )
    assert (rows[2].error_class, rows[2].kind, rows[2].severity, rows[2].error_type, rows[2].message) == (
        "",
        "",
        "",
        "",
        "",
    )
    assert all(r.duration_ms and r.duration_ms > 0 and iso(r.finished_at) >= iso(r.started_at) for r in rows)


def test_it_runs_each_attempt_under_the_fence_its_predecessor_handed_out(
    agent_client: Any, target: Target, fast: RetryPolicy, service: Service, queued: Queued, committed: Any
) -> None:
    job, _ = _retry_to_success(agent_client, target, committed)
    rows = list(RetryAttempt.objects.filter(job=job).order_by("number"))
    # Each attempt ran under the fence its predecessor handed out, and enqueued the next under a new one.
    assert [r.task_id for r in rows] == [q[2] for q in queued]
    assert [(q[1], q[3]) for q in queued] == [(1, 0.0), (2, 0.0), (3, 0.0)]
    assert len({q[2] for q in queued}) == 3


def test_it_sends_the_same_idempotency_key_and_the_callers_request_every_time(
    agent_client: Any, target: Target, fast: RetryPolicy, service: Service, queued: Queued, committed: Any
) -> None:
    _retry_to_success(agent_client, target, committed)
    # The target saw the same idempotency key every time, and the caller's headers.
    assert [s.headers["Idempotency-Key"] for s in target.seen] == ["invoice-42"] * 3
    assert {s.headers["Authorization"] for s in target.seen} == {"Bearer sk-live-secret"}
    assert {s.body for s in target.seen} == {b'{"amount":42}'}


def test_it_counts_every_attempt_into_the_breaker_and_the_retries_into_the_metric(
    agent_client: Any, target: Target, fast: RetryPolicy, service: Service, queued: Queued, committed: Any
) -> None:
    failures_before, successes_before = retries_total("failure"), retries_total("success")
    _retry_to_success(agent_client, target, committed)
    # Every attempt counted into the breaker; the retries (not the first attempt) into retries_total.
    assert window(service) == (3, 2)
    assert retries_total("failure") - failures_before == 1
    assert retries_total("success") - successes_before == 1


def test_it_shows_a_job_with_every_attempt(
    agent_client: Any, target: Target, fast: RetryPolicy, queued: Queued, committed: Any
) -> None:
    target.script(Answer(503, "down"))
    job_id = submit(agent_client, http_body(target), committed).json()["id"]
    drive(RetryJob.objects.get(pk=job_id), committed)

    data = agent_client.get(f"/api/v1/retries/{job_id}").json()

    assert (data["state"], data["attempts"], data["service"], data["operation"]) == (
        "succeeded",
        2,
        "billing",
        "create_invoice",
    )
    assert [(a["number"], a["outcome"], a["status_code"]) for a in data["attempt_history"]] == [
        (1, "failure", 503),
        (2, "success", 200),
    ]
    assert data["attempt_history"][0]["error_class"] == "external_service"
    assert data["request"]["headers"] == {"Authorization": "[redacted]", "Content-Type": "application/json"}
    assert data["agent"] == agent_client.agent.name
    listed = agent_client.get("/api/v1/retries").json()
    assert listed["count"] == 1 and listed["results"][0]["id"] == job_id
    assert "attempt_history" not in listed["results"][0]


# --- failures that end the job ---------------------------------------------------------------------------


def test_it_fails_a_400_at_once_and_asks_for_a_human(
    agent_client: Any, target: Target, fast: RetryPolicy, queued: Queued, committed: Any
) -> None:
    target.script(Answer(400, {"error": "amount must be positive"}))
    submit(agent_client, http_body(target), committed)
    job = RetryJob.objects.get()

    assert drive(job, committed) == ["failed"]

    job.refresh_from_db()
    assert (job.state, job.attempts, job.needs_human, job.fence, job.result) == ("failed", 1, True, "", None)
    assert job.finished_at is not None and job.next_attempt_at is None
    assert job.last_error == {
        "attempt": 1,
        "type": "HTTPStatusError",
        "message": 'HTTP 400 Bad Request: {"error": "amount must be positive"}',
        "status_code": 400,
        "retry_after_s": None,
        "error_class": "validation",
        "severity": "low",
        "kind": "invalid_input",
        "rule": "invalid input (400, 422)",
        "decision": "the policy 'fast' does not retry validation",
        "next_delay_s": None,
    }
    [row] = RetryAttempt.objects.filter(job=job)
    assert (row.outcome, row.status_code, row.error_class, row.kind) == (
        "failure",
        400,
        "validation",
        "invalid_input",
    )
    assert len(queued) == 1  # the first attempt only
    assert len(target.seen) == 1


def _exhaust(agent_client: Any, target: Target, committed: Any) -> tuple[str, list[str]]:
    target.script(*[Answer(503, "down")] * 3)
    job_id = submit(agent_client, http_body(target), committed).json()["id"]
    return job_id, drive(RetryJob.objects.get(), committed)


def test_it_fails_a_job_that_runs_out_of_attempts_and_flags_it_for_a_human(
    agent_client: Any, target: Target, fast: RetryPolicy, service: Service, queued: Queued, committed: Any
) -> None:
    _, states = _exhaust(agent_client, target, committed)
    assert states == ["pending", "pending", "failed"]

    job = RetryJob.objects.get()
    assert (job.state, job.attempts, job.needs_human) == ("failed", 3, True)
    assert error_of(job)["decision"] == "no attempts left: 3 of 3 used"
    assert error_of(job)["attempt"] == 3
    assert RetryAttempt.objects.filter(job=job, outcome="failure").count() == 3
    assert window(service) == (3, 3)


def test_it_shows_an_exhausted_job_in_status_as_needing_a_human(
    agent_client: Any, target: Target, fast: RetryPolicy, service: Service, queued: Queued, committed: Any
) -> None:
    job_id, _ = _exhaust(agent_client, target, committed)
    job = RetryJob.objects.get()
    status = agent_client.get("/api/v1/status").json()["retries_needing_human"]
    assert status == {
        "count": 1,
        "newest": [
            {
                "id": job_id,
                "service": "billing",
                "operation": "create_invoice",
                "kind": "http",
                "attempts": 3,
                "error_class": "external_service",
                "why": "no attempts left: 3 of 3 used",
                "finished_at": iso(job.finished_at),
            }
        ],
    }


def test_it_filters_jobs_by_needing_a_human_state_and_service(
    agent_client: Any, target: Target, fast: RetryPolicy, service: Service, queued: Queued, committed: Any
) -> None:
    job_id, _ = _exhaust(agent_client, target, committed)
    waiting = agent_client.get("/api/v1/retries?needs_human=true").json()
    assert [j["id"] for j in waiting["results"]] == [job_id]
    assert agent_client.get("/api/v1/retries?needs_human=false").json()["count"] == 0
    assert agent_client.get("/api/v1/retries?state=failed&service=billing").json()["count"] == 1
    assert agent_client.get("/api/v1/retries?state=succeeded").json()["count"] == 0


def _rate_limited(agent_client: Any, target: Target, service: Service, committed: Any) -> RetryJob:
    Service.objects.filter(pk=service.pk).update(wait_duration_s=1)
    target.script(Answer(429, {"error": "slow down"}, {"Retry-After": "7"}), Answer(200, {"ok": 1}))
    submit(agent_client, http_body(target), committed)
    return RetryJob.objects.get()


def test_it_waits_for_retry_after_on_a_429(
    agent_client: Any, target: Target, fast: RetryPolicy, service: Service, queued: Queued, committed: Any
) -> None:
    job = _rate_limited(agent_client, target, service, committed)

    assert attempt(job, committed) == "pending"

    job.refresh_from_db()
    row = RetryAttempt.objects.get(job=job, number=1)
    assert (job.state, job.attempts, row.error_class, row.status_code) == ("pending", 1, "rate_limit", 429)
    assert row.finished_at is not None and job.next_attempt_at == row.finished_at + timedelta(seconds=7)
    assert (error_of(job)["retry_after_s"], error_of(job)["next_delay_s"]) == (7.0, 7.0)
    assert error_of(job)["decision"] == "retrying in 7 s (2 attempts left)"
    assert queued[-1] == (str(job.pk), 2, job.fence, 7.0)


def test_it_postpones_a_retry_delivered_before_retry_after_without_spending_an_attempt(
    agent_client: Any, target: Target, fast: RetryPolicy, service: Service, queued: Queued, committed: Any
) -> None:
    job = _rate_limited(agent_client, target, service, committed)
    attempt(job, committed)
    # The 429 opened the service's breaker until its Retry-After: a retry delivered early waits for it,
    # without spending an attempt.
    assert attempt(job, committed) == "postponed"
    job.refresh_from_db()
    assert (job.state, job.attempts) == ("pending", 1)
    assert 5.0 < queued[-1][3] <= 7.0 and queued[-1][:3] == (str(job.pk), 2, job.fence)


def test_it_succeeds_after_a_429_once_the_breaker_lets_the_retry_through(
    agent_client: Any, target: Target, fast: RetryPolicy, service: Service, queued: Queued, committed: Any
) -> None:
    job = _rate_limited(agent_client, target, service, committed)
    attempt(job, committed)
    attempt(job, committed)
    breaker_services.set_override(
        name="billing", mode="forced_closed", reason="test", expires_at=None, actor=Actor()
    )
    assert drive(job, committed) == ["succeeded"]
    assert RetryAttempt.objects.filter(job=job).count() == 2


# --- refused at the door ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://evil.example/collect", "is not allowed"),
        ("http://169.254.169.254/latest/meta-data/iam/", "is not allowed"),
        ("file:///etc/passwd", "the scheme 'file' is not allowed"),
    ],
)
def test_it_refuses_ssrf_targets_with_a_400_naming_request_url(
    agent_client: Any, target: Target, fast: RetryPolicy, queued: Queued, committed: Any, url: str, why: str
) -> None:
    body = http_body(target)
    body["request"]["url"] = url

    response = submit(agent_client, body, committed)

    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["field"] == "request.url" and why in error["message"]
    assert not RetryJob.objects.exists()
    assert queued == []


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"request": None}, "request"),
        ({"kind": "task"}, "request"),
        ({"kind": "ftp"}, "kind"),
        ({"policy": "no-such-policy"}, "policy"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"service": "Not A Slug"}, "service"),
        ({"request": {"url": "http://x", "nope": 1}}, "request.nope"),
    ],
)
def test_it_names_the_field_of_a_bad_job(
    agent_client: Any, target: Target, fast: RetryPolicy, committed: Any, changes: dict[str, Any], field: str
) -> None:
    response = submit(agent_client, http_body(target, **changes), committed)
    assert response.status_code == 400
    assert field in [e["field"] for e in response.json()["errors"]]
    assert not RetryJob.objects.exists()


def test_it_refuses_tasks_that_are_not_registered(agent_client: Any, committed: Any) -> None:
    body = {
        "service": "ops",
        "kind": "task",
        "task": {"name": "os.system", "args": ["rm -rf /"]},
        "idempotency_key": "k",
    }
    response = submit(agent_client, body, committed)
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "task.name"
    assert not RetryJob.objects.exists()


def test_it_refuses_a_task_job_missing_a_required_argument(agent_client: Any, committed: Any) -> None:
    body = {
        "service": "ops",
        "kind": "task",
        "task": {"name": "recovery.demo_tasks.flaky", "kwargs": {"failures": 1}},
        "idempotency_key": "k",
    }
    response = submit(agent_client, body, committed)
    assert response.status_code == 400, response.json()
    error = response.json()["errors"][0]
    assert error["field"] == "task.kwargs"
    assert "'key'" in error["message"]
    assert not RetryJob.objects.exists()


def test_it_answers_the_same_job_for_the_same_idempotency_key(
    agent_client: Any, target: Target, fast: RetryPolicy, queued: Queued, committed: Any
) -> None:
    first = submit(agent_client, http_body(target), committed)
    again = submit(agent_client, http_body(target), committed)
    other_body = http_body(target)
    other_body["request"]["body"] = {"amount": 43}
    conflict = submit(agent_client, other_body, committed)
    other_agent = factories.agent_key()[1]
    elsewhere = Client(HTTP_AUTHORIZATION=f"Bearer {other_agent}")
    theirs = committed(
        lambda: elsewhere.post("/api/v1/retries", http_body(target), content_type="application/json")
    )

    assert (first.status_code, again.status_code, conflict.status_code, theirs.status_code) == (
        201,
        200,
        409,
        201,
    )
    assert again.json()["id"] == first.json()["id"]
    assert conflict.json()["errors"][0]["field"] == "idempotency_key"
    assert first.json()["id"] in conflict.json()["detail"]
    assert theirs.json()["id"] != first.json()["id"]
    assert RetryJob.objects.count() == 2
    assert len(queued) == 2  # one first attempt per job, none for the replay


def test_it_sends_the_callers_own_idempotency_header_when_it_set_one(
    agent_client: Any, target: Target, fast: RetryPolicy, queued: Queued, committed: Any
) -> None:
    body = http_body(target)
    body["request"]["headers"]["idempotency-key"] = "callers-own"
    submit(agent_client, body, committed)
    drive(RetryJob.objects.get(), committed)
    assert target.seen[0].headers["idempotency-key"] == "callers-own"
    assert "invoice-42" not in target.seen[0].headers.values()


# --- tasks -----------------------------------------------------------------------------------------------


@pytest.mark.redis
def test_it_runs_a_registered_task_until_it_succeeds(
    agent_client: Any, fast: RetryPolicy, service: Service, queued: Queued, committed: Any
) -> None:
    body = {
        "service": "billing",
        "operation": "rebuild",
        "kind": "task",
        "task": {
            "name": "recovery.demo_tasks.flaky",
            "kwargs": {"key": "jobs-flaky", "failures": 2, "value": 5},
        },
        "idempotency_key": "rebuild-1",
        "policy": "fast",
    }
    response = submit(agent_client, body, committed)
    assert response.status_code == 201, response.json()
    job = RetryJob.objects.get()
    assert (job.task_name, job.task_args, job.task_kwargs, job.request) == (
        "recovery.demo_tasks.flaky",
        [],
        {"key": "jobs-flaky", "failures": 2, "value": 5},
        {},
    )

    assert drive(job, committed) == ["pending", "pending", "succeeded"]

    job.refresh_from_db()
    assert (job.state, job.attempts, job.result) == ("succeeded", 3, {"call": 3, "value": 5})
    rows = list(RetryAttempt.objects.filter(job=job).order_by("number"))
    assert [(r.outcome, r.error_type, r.error_class, r.kind, r.status_code) for r in rows] == [
        ("failure", "ConnectionError", "transient", "connection_failed", None),
        ("failure", "ConnectionError", "transient", "connection_failed", None),
        ("success", "", "", "", None),
    ]
    assert rows[0].message == "flaky 'jobs-flaky': failing call 1 of 2"
    assert window(service) == (3, 2)
    shown = agent_client.get(f"/api/v1/retries/{job.pk}").json()
    assert (shown["request"], shown["task"]["name"]) == (None, "recovery.demo_tasks.flaky")


# --- duplicates, the fence and the sweep -----------------------------------------------------------------


def test_it_does_not_run_an_attempt_twice_on_a_duplicate_delivery(
    agent_client: Any, target: Target, fast: RetryPolicy, queued: Queued, committed: Any
) -> None:
    target.script(Answer(503, "down"), Answer(503, "down"))
    submit(agent_client, http_body(target), committed)
    job = RetryJob.objects.get()
    first_fence = job.fence
    assert attempt(job, committed) == "pending"

    # The same message delivered again (acks_late after a lost ack): another fence holds the job now.
    assert attempt(job, committed, number=1, task_id=first_fence) == "stale"
    # A duplicate that still finds its fence (state rewound by hand to look like a lost race): the attempt's
    # unique row stops it before the call.
    RetryJob.objects.filter(pk=job.pk).update(state="pending", attempts=0, fence=first_fence)
    assert attempt(job, committed, number=1, task_id=first_fence) == "stale"

    assert RetryAttempt.objects.filter(job=job).count() == 1
    assert len(target.seen) == 1
    job.refresh_from_db()
    assert (job.state, job.attempts, job.fence) == ("pending", 0, first_fence)


def test_it_enqueues_overdue_attempts_again_with_a_new_fence(
    agent_client: Any, target: Target, fast: RetryPolicy, queued: Queued, committed: Any
) -> None:
    submit(agent_client, http_body(target), committed)
    job = RetryJob.objects.get()
    old_fence = job.fence
    RetryJob.objects.filter(pk=job.pk).update(next_attempt_at=timezone.now() - timedelta(minutes=5))
    fresh = submit(agent_client, http_body(target, idempotency_key="fresh"), committed).json()["id"]

    assert committed(retry_services.requeue_overdue) == 1

    job.refresh_from_db()
    assert job.fence != old_fence and job.state == "pending"
    assert queued[-1] == (str(job.pk), 1, job.fence, 0.0)
    assert attempt(job, committed, number=1, task_id=old_fence) == "stale"  # the lost original, if it comes
    assert attempt(job, committed) == "succeeded"
    assert RetryJob.objects.get(pk=fresh).state == "pending"  # not overdue: untouched


def _lose_the_first_attempt(job: RetryJob, minutes_ago: float = 60) -> None:
    """The state a worker killed mid-call leaves: the job claimed (running), attempt 1's row running."""
    long_ago = timezone.now() - timedelta(minutes=minutes_ago)
    RetryJob.objects.filter(pk=job.pk).update(state="running", attempts=1, updated_at=long_ago)
    RetryAttempt.objects.create(job=job, number=1, task_id=job.fence, started_at=long_ago)


def test_it_sends_an_attempt_lost_with_its_worker_again_with_the_same_key(
    agent_client: Any, target: Target, fast: RetryPolicy, queued: Queued, committed: Any
) -> None:
    submit(agent_client, http_body(target), committed)  # a POST: safe again only through its Idempotency-Key
    job = RetryJob.objects.get()
    _lose_the_first_attempt(job)

    assert committed(retry_services.requeue_overdue) == 1

    job.refresh_from_db()
    assert (job.state, job.needs_human, job.attempts) == ("pending", False, 1)
    assert queued[-1] == (str(job.pk), 2, job.fence, 0.0)
    assert error_of(job)["type"] == "celery.exceptions.WorkerLostError"
    assert "sent again with the same idempotency key" in error_of(job)["decision"]
    lost = RetryAttempt.objects.get(job=job, number=1)
    assert (lost.outcome, lost.error_type) == ("failure", "celery.exceptions.WorkerLostError")
    assert lost.finished_at is not None
    assert attempt(job, committed) == "succeeded"
    assert [s.headers["Idempotency-Key"] for s in target.seen] == ["invoice-42"]
    assert list(RetryAttempt.objects.filter(job=job).values_list("number", "outcome")) == [
        (1, "failure"),
        (2, "success"),
    ]


def test_it_waits_out_the_lease_before_taking_an_attempt_for_lost(
    agent_client: Any, target: Target, fast: RetryPolicy, queued: Queued, committed: Any
) -> None:
    submit(agent_client, http_body(target), committed)
    job = RetryJob.objects.get()
    _lose_the_first_attempt(job, minutes_ago=4)  # the default lease is 300 s

    assert committed(retry_services.requeue_overdue) == 0
    with override_settings(REBOUND=rebound_settings(RETRY_ATTEMPT_LEASE_SECONDS=60)):
        assert committed(retry_services.requeue_overdue) == 1

    job.refresh_from_db()
    assert job.state == "pending"


def test_it_asks_a_human_for_a_lost_attempt_of_a_task_that_is_not_safe_to_run_twice(
    agent_client: Any, queued: Queued, committed: Any
) -> None:
    body = {
        "service": "reports",
        "kind": "task",
        "task": {"name": "recovery.demo_tasks.flaky", "kwargs": {"key": "lost-1", "failures": 0}},
        "idempotency_key": "lost-1",
    }
    assert submit(agent_client, body, committed).status_code == 201
    job = RetryJob.objects.get()
    _lose_the_first_attempt(job)

    assert committed(retry_services.requeue_overdue) == 1

    job.refresh_from_db()
    assert (job.state, job.needs_human, job.fence) == ("failed", True, "")
    assert "might do it twice" in error_of(job)["decision"]
    assert RetryAttempt.objects.get(job=job).outcome == "failure"
    assert [q[1] for q in queued] == [1]  # only the first attempt was ever enqueued


def test_it_sends_a_lost_attempt_of_a_task_declared_idempotent_again(
    agent_client: Any, queued: Queued, committed: Any
) -> None:
    body = {
        "service": "reports",
        "kind": "task",
        "task": {"name": "recovery.demo_tasks.echo", "args": [1]},
        "idempotency_key": "lost-2",
    }
    assert submit(agent_client, body, committed).status_code == 201
    job = RetryJob.objects.get()
    _lose_the_first_attempt(job)

    assert committed(retry_services.requeue_overdue) == 1

    job.refresh_from_db()
    assert job.state == "pending"
    assert "recovery.demo_tasks.echo is declared idempotent" in error_of(job)["decision"]


def test_it_asks_a_human_for_a_lost_attempt_when_the_policy_has_none_left(
    agent_client: Any, target: Target, fast: RetryPolicy, queued: Queued, committed: Any
) -> None:
    submit(agent_client, http_body(target), committed)
    job = RetryJob.objects.get()
    _lose_the_first_attempt(job)
    RetryJob.objects.filter(pk=job.pk).update(attempts=3)
    RetryAttempt.objects.filter(job=job).update(number=3)

    assert committed(retry_services.requeue_overdue) == 1

    job.refresh_from_db()
    assert (job.state, job.needs_human) == ("failed", True)
    assert "no attempts left: 3 of 3 used" in error_of(job)["decision"]


# --- the breaker and the budget --------------------------------------------------------------------------


def _submit_while_forced_open(agent_client: Any, target: Target, committed: Any) -> RetryJob:
    breaker_services.set_override(
        name="billing", mode="forced_open", reason="incident", expires_at=None, actor=Actor()
    )
    submit(agent_client, http_body(target), committed)
    return RetryJob.objects.get()


def test_it_waits_for_an_open_breaker_without_spending_an_attempt(
    agent_client: Any, target: Target, fast: RetryPolicy, service: Service, queued: Queued, committed: Any
) -> None:
    job = _submit_while_forced_open(agent_client, target, committed)
    first_fence = job.fence
    before = timezone.now()

    assert attempt(job, committed) == "postponed"

    job.refresh_from_db()
    assert (job.state, job.attempts, job.needs_human) == ("pending", 0, False)
    assert job.fence != first_fence
    assert job.next_attempt_at is not None
    assert before + timedelta(seconds=29) < job.next_attempt_at <= timezone.now() + timedelta(seconds=30)
    assert queued[-1] == (str(job.pk), 1, job.fence, 30.0)  # the service's wait_duration_s


def test_it_sends_nothing_while_the_breaker_is_open(
    agent_client: Any, target: Target, fast: RetryPolicy, service: Service, queued: Queued, committed: Any
) -> None:
    job = _submit_while_forced_open(agent_client, target, committed)
    attempt(job, committed)
    assert not RetryAttempt.objects.exists()
    assert target.seen == []


def test_it_runs_the_first_attempt_once_the_breaker_is_back(
    agent_client: Any, target: Target, fast: RetryPolicy, service: Service, queued: Queued, committed: Any
) -> None:
    job = _submit_while_forced_open(agent_client, target, committed)
    attempt(job, committed)
    breaker_services.set_override(name="billing", mode="auto", reason="over", expires_at=None, actor=Actor())
    assert drive(job, committed) == ["succeeded"]
    assert RetryAttempt.objects.get().number == 1


def test_it_gives_up_when_the_breaker_stays_open_past_the_deadline(
    agent_client: Any, target: Target, fast: RetryPolicy, queued: Queued, committed: Any
) -> None:
    breaker_services.set_override(
        name="billing", mode="forced_open", reason="incident", expires_at=None, actor=Actor()
    )
    RetryPolicy.objects.filter(pk=fast.pk).update(deadline_s=5)
    submit(agent_client, http_body(target), committed)
    job = RetryJob.objects.get()

    assert attempt(job, committed) == "failed"

    job.refresh_from_db()
    assert (job.state, job.attempts, job.needs_human, job.fence) == ("failed", 0, True, "")
    assert error_of(job)["type"] == "rebound.Postponed"
    assert error_of(job)["decision"] == (
        "the breaker of billing is forced_open: waiting 30 s would pass the job's deadline"
    )
    assert target.seen == []


def test_it_waits_when_the_retry_budget_is_spent(
    agent_client: Any, target: Target, fast: RetryPolicy, service: Service, queued: Queued, committed: Any
) -> None:
    Service.objects.filter(pk=service.pk).update(retry_budget_percent=0, retry_budget_min_retries=0)
    target.script(Answer(503, "down"))
    submit(agent_client, http_body(target), committed)
    job = RetryJob.objects.get()

    assert attempt(job, committed) == "pending"  # the first attempt is not a retry: no budget needed
    assert attempt(job, committed) == "postponed"

    job.refresh_from_db()
    assert (job.state, job.attempts) == ("pending", 1)
    assert queued[-1] == (str(job.pk), 2, job.fence, 2.5)  # a quarter of the 10 s window
    assert RetryAttempt.objects.filter(job=job).count() == 1
    assert len(target.seen) == 1


# --- operators -------------------------------------------------------------------------------------------


def _cancel_and_rerun(
    agent_client: Any, operator_client: Any, target: Target, committed: Any
) -> dict[str, Any]:
    """A job fails for good; then a cancel, a rerun without a reason, one by an agent, and one by an operator."""
    target.script(Answer(400, "bad"), Answer(201, {"id": 1}))
    job_id = submit(agent_client, http_body(target), committed).json()["id"]
    job = RetryJob.objects.get()
    assert drive(job, committed) == ["failed"]

    refused = operator_client.post(f"/api/v1/retries/{job_id}/cancel", {"reason": "stop"}, format="json")
    no_reason = operator_client.post(f"/api/v1/retries/{job_id}/rerun", {"reason": " "}, format="json")
    by_agent = agent_client.post(f"/api/v1/retries/{job_id}/rerun", {"reason": "me"}, format="json")
    rerun = committed(
        lambda: operator_client.post(
            f"/api/v1/retries/{job_id}/rerun", {"reason": "amount fixed"}, format="json"
        )
    )
    job.refresh_from_db()
    return {
        "job_id": job_id,
        "job": job,
        "refused": refused,
        "no_reason": no_reason,
        "by_agent": by_agent,
        "rerun": rerun,
    }


def test_it_refuses_to_cancel_a_failed_job_or_rerun_it_without_a_reason_or_for_an_agent(
    agent_client: Any, operator_client: Any, target: Target, fast: RetryPolicy, queued: Queued, committed: Any
) -> None:
    done = _cancel_and_rerun(agent_client, operator_client, target, committed)
    refused, no_reason, by_agent = done["refused"], done["no_reason"], done["by_agent"]
    assert (refused.status_code, no_reason.status_code, by_agent.status_code) == (409, 400, 403)
    assert no_reason.json()["errors"][0]["field"] == "reason"


def test_it_reruns_a_failed_job_for_an_operator_with_a_reason(
    agent_client: Any, operator_client: Any, target: Target, fast: RetryPolicy, queued: Queued, committed: Any
) -> None:
    done = _cancel_and_rerun(agent_client, operator_client, target, committed)
    rerun, job, job_id = done["rerun"], done["job"], done["job_id"]
    assert rerun.status_code == 200, rerun.json()
    assert (job.state, job.needs_human, job.attempts, job.finished_at) == ("pending", False, 1, None)
    assert job.policy_snapshot["attempts_before"] == 1
    assert queued[-1] == (job_id, 2, job.fence, 0.0)


def test_it_audits_the_rerun_once_and_no_refused_cancel(
    agent_client: Any, operator_client: Any, target: Target, fast: RetryPolicy, queued: Queued, committed: Any
) -> None:
    job_id = _cancel_and_rerun(agent_client, operator_client, target, committed)["job_id"]
    [event] = AuditEvent.objects.filter(action="retry.rerun")
    assert (event.reason, event.target_id, event.actor_user, event.source) == (
        "amount fixed",
        job_id,
        operator_client.user,
        "api",
    )
    assert event.before == {"state": "failed", "needs_human": True, "attempts": 1}
    assert event.after == {"state": "pending", "needs_human": False, "attempts": 1}
    assert not AuditEvent.objects.filter(action="retry.cancel").exists()


def test_it_runs_a_rerun_job_on_to_success(
    agent_client: Any, operator_client: Any, target: Target, fast: RetryPolicy, queued: Queued, committed: Any
) -> None:
    job = _cancel_and_rerun(agent_client, operator_client, target, committed)["job"]
    assert drive(job, committed) == ["succeeded"]
    assert [(r.number, r.outcome) for r in RetryAttempt.objects.filter(job=job).order_by("number")] == [
        (1, "failure"),
        (2, "success"),
    ]


def test_it_cancels_a_pending_job_and_its_queued_attempt_exits(
    agent_client: Any, operator_client: Any, target: Target, fast: RetryPolicy, queued: Queued, committed: Any
) -> None:
    job_id = submit(agent_client, http_body(target), committed).json()["id"]
    job = RetryJob.objects.get()
    fence = job.fence

    response = operator_client.post(
        f"/api/v1/retries/{job_id}/cancel", {"reason": "not needed"}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    job.refresh_from_db()
    assert (job.state, job.fence, job.next_attempt_at, job.needs_human) == ("cancelled", "", None, False)
    assert job.finished_at is not None
    [event] = AuditEvent.objects.filter(action="retry.cancel")
    assert (event.reason, event.before, event.after) == (
        "not needed",
        {"state": "pending"},
        {"state": "cancelled"},
    )
    assert attempt(job, committed, number=1, task_id=fence) == "stale"
    assert target.seen == [] and not RetryAttempt.objects.exists()
    again = operator_client.post(f"/api/v1/retries/{job_id}/cancel", {"reason": "twice"}, format="json")
    assert again.status_code == 409
    assert AuditEvent.objects.filter(action="retry.cancel").count() == 1


def test_a_cancel_during_a_running_attempt_keeps_the_job_cancelled(
    agent_client: Any, target: Target, fast: RetryPolicy, queued: Queued, committed: Any
) -> None:
    submit(agent_client, http_body(target), committed)
    job = RetryJob.objects.get()
    operator = factories.operator()

    def cancel_in_flight(j: RetryJob) -> call_services.CallOutcome:
        retry_services.cancel_job(job_id=j.pk, actor=Actor(user=operator), reason="changed my mind")
        return real_call(j)

    real_call = retry_services.call
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(retry_services, "call", cancel_in_flight)
        attempt(job, committed)

    job.refresh_from_db()
    assert (job.state, job.attempts, job.result) == ("cancelled", 1, None)
    assert RetryAttempt.objects.get(job=job).outcome == "success"  # the call happened and is on record


def test_it_hides_other_agents_jobs(
    agent_client: Any,
    operator_client: Any,
    viewer_client: Any,
    target: Target,
    fast: RetryPolicy,
    queued: Queued,
    committed: Any,
) -> None:
    mine = submit(agent_client, http_body(target), committed).json()["id"]
    _, other_key = factories.agent_key()
    other = Client(HTTP_AUTHORIZATION=f"Bearer {other_key}")
    theirs = committed(
        lambda: other.post(
            "/api/v1/retries", http_body(target, idempotency_key="x"), content_type="application/json"
        )
    ).json()["id"]

    assert agent_client.get(f"/api/v1/retries/{theirs}").status_code == 404
    assert agent_client.get("/api/v1/retries/not-a-uuid").status_code == 404
    assert [j["id"] for j in agent_client.get("/api/v1/retries").json()["results"]] == [mine]
    assert {j["id"] for j in operator_client.get("/api/v1/retries").json()["results"]} == {mine, theirs}
    assert {j["id"] for j in viewer_client.get("/api/v1/retries").json()["results"]} == {mine, theirs}
    assert operator_client.get(f"/api/v1/retries/{theirs}").status_code == 200
    assert viewer_client.post("/api/v1/retries", http_body(target), format="json").status_code == 403
    assert agent_client.get("/api/v1/retries?state=nope").status_code == 400


def test_an_operator_may_hand_over_a_job_too(
    operator_client: Any, target: Target, fast: RetryPolicy, queued: Queued, committed: Any
) -> None:
    response = submit(operator_client, http_body(target), committed)
    again = submit(operator_client, http_body(target), committed)
    assert (response.status_code, again.status_code) == (201, 200)
    job = RetryJob.objects.get()
    assert (job.agent, job.created_by) == (None, operator_client.user)
    assert response.json()["created_by"] == operator_client.user.username


def test_it_redacts_secrets_in_every_output(
    agent_client: Any, target: Target, fast: RetryPolicy, queued: Queued, committed: Any
) -> None:
    body = http_body(target)
    body["request"]["url"] = target.url("/invoices?api_key=qs-secret&page=1")
    body["request"]["headers"]["X-Api-Key"] = "hdr-secret"
    body["request"]["headers"]["Cookie"] = "session=cookie-secret"
    created = submit(agent_client, body, committed)
    job_id = created.json()["id"]
    shown = [
        created.content,
        agent_client.get(f"/api/v1/retries/{job_id}").content,
        agent_client.get("/api/v1/retries").content,
    ]
    admin = Client()
    admin.force_login(factories.operator())
    shown.append(admin.get(reverse("admin:recovery_retryjob_change", args=[job_id])).content)
    for page in shown:
        for secret in (b"sk-live-secret", b"qs-secret", b"hdr-secret", b"cookie-secret"):
            assert secret not in page
    assert created.json()["request"]["url"].endswith("/invoices?api_key=%5Bredacted%5D&page=1")
    # Stored to be sent: the target receives them.
    drive(RetryJob.objects.get(), committed)
    assert target.seen[0].headers["X-Api-Key"] == "hdr-secret"
    assert target.seen[0].path == "/invoices?api_key=qs-secret&page=1"


# --- the admin -------------------------------------------------------------------------------------------


def _admin_cancel(agent_client: Any, target: Target, committed: Any) -> dict[str, Any]:
    """An operator lists, opens and cancels a job with a reason in the admin; a viewer then tries a rerun."""
    job_id = submit(agent_client, http_body(target), committed).json()["id"]
    operator, viewer = Client(), Client()
    operator.force_login(factories.operator())
    viewer.force_login(factories.viewer())
    changelist = reverse("admin:recovery_retryjob_changelist")

    listing = viewer.get(changelist + "?state__exact=pending")
    page = operator.get(reverse("admin:recovery_retryjob_change", args=[job_id]))
    ask = operator.post(changelist, {"action": "cancel_jobs", "_selected_action": [job_id], "index": "0"})
    done = operator.post(
        changelist,
        {
            "action": "cancel_jobs",
            "_selected_action": [job_id],
            CONFIRMED: "yes",
            "reason": "duplicate invoice",
        },
    )
    by_viewer = viewer.post(
        changelist, {"action": "rerun_jobs", "_selected_action": [job_id], CONFIRMED: "yes", "reason": "x"}
    )
    return {
        "job_id": job_id,
        "listing": listing,
        "page": page,
        "ask": ask,
        "done": done,
        "by_viewer": by_viewer,
    }


def test_it_lists_and_shows_jobs_in_the_admin(
    agent_client: Any, target: Target, fast: RetryPolicy, queued: Queued, committed: Any
) -> None:
    seen = _admin_cancel(agent_client, target, committed)
    listing, page, job_id = seen["listing"], seen["page"], seen["job_id"]
    assert listing.status_code == 200 and job_id[:8] in listing.content.decode()
    assert page.status_code == 200 and "Cancel" in page.content.decode()


def test_it_cancels_a_job_in_the_admin_with_a_reason(
    agent_client: Any, target: Target, fast: RetryPolicy, queued: Queued, committed: Any
) -> None:
    seen = _admin_cancel(agent_client, target, committed)
    assert seen["ask"].status_code == 200 and "reason" in seen["ask"].content.decode()
    assert seen["done"].status_code == 302
    job = RetryJob.objects.get()
    assert job.state == "cancelled"
    [event] = AuditEvent.objects.filter(action="retry.cancel")
    assert (event.reason, event.source) == ("duplicate invoice", "admin")


def test_it_offers_a_viewer_no_job_action_and_changes_nothing_for_one(
    agent_client: Any, target: Target, fast: RetryPolicy, queued: Queued, committed: Any
) -> None:
    seen = _admin_cancel(agent_client, target, committed)
    listing = seen["listing"]
    # A viewer is offered no action, and posting one anyway changes nothing.
    assert seen["by_viewer"].status_code == 200
    assert "rerun_jobs" not in listing.content.decode() and "cancel_jobs" not in listing.content.decode()
    assert RetryJob.objects.get().state == "cancelled"
    assert not AuditEvent.objects.filter(action="retry.rerun").exists()

"""Rollbacks run in this process against a real HTTP server on 127.0.0.1: reverse order, retries by policy,
exhaustion, leases of running attempts, fences, deadlines. Worker processes: tests/test_sagas_processes.py."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone
from prometheus_client import REGISTRY

from healing.models import AuditEvent
from healing.services import Actor
from recovery import policies, saga_selectors, sagas, selectors
from recovery.models import CompensationAttempt, RetryPolicy, Service, Transaction, TransactionStep
from tests import factories

pytestmark = pytest.mark.django_db


class Target:
    """The service a compensation undoes things in: a real HTTP server on 127.0.0.1.

    It applies each Idempotency-Key's side effect once (as an idempotent API does) and also counts every raw
    receipt, so that a test can tell "sent once" from "sent twice, applied once". It can fail a key's first
    receipts with a status, and hold a key's first receipt until released (the request is then in flight).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.raw: Counter[str] = Counter()
        self.effects: list[str] = []  # keys, in the order their side effect happened
        self.failures: dict[str, tuple[int, int]] = {}  # key -> (how many receipts fail, with which status)
        self.held: dict[str, tuple[threading.Event, threading.Event]] = {}  # key -> (arrived, release)
        self.requests: list[dict[str, Any]] = []
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                target.handle(self)

            do_PUT = do_DELETE = do_POST

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/undo") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def fail(self, key: str, times: int, status: int = 503) -> None:
        self.failures[key] = (times, status)

    def hold(self, key: str) -> threading.Event:
        arrived = threading.Event()
        self.held[key] = (arrived, threading.Event())
        return arrived

    def release(self, key: str) -> None:
        self.held[key][1].set()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        key = request.headers.get("Idempotency-Key", "")
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        with self.lock:
            self.raw[key] += 1
            receipt = self.raw[key]
            self.requests.append({"key": key, "path": request.path, "body": body.decode(), **request.headers})
        if key in self.held and receipt == 1:
            arrived, release = self.held[key]
            arrived.set()
            release.wait(120)
        times, status = self.failures.get(key, (0, 200))
        if receipt <= times:
            self.answer(request, status, {"error": "try again"})
            return
        with self.lock:
            if key not in self.effects:
                self.effects.append(key)
        self.answer(request, 200, {"undone": key})

    @staticmethod
    def answer(request: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        try:
            request.send_response(status)
            request.send_header("Content-Type", "application/json")
            request.send_header("Content-Length", str(len(data)))
            request.end_headers()
            request.wfile.write(data)
        except OSError:
            pass  # the caller is gone (its worker was killed): the side effect happened all the same

    def close(self) -> None:
        for _, release in self.held.values():
            release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def target() -> Iterator[Target]:
    server = Target()
    with override_settings(REBOUND=factories.rebound_settings(OUTBOUND_ALLOWED_HOSTS=["127.0.0.1"])):
        yield server
    server.close()


@pytest.fixture(autouse=True)
def _fresh_policies() -> Iterator[None]:
    policies.forget()
    yield
    policies.forget()


def open_txn(agent: Any = None, **fields: Any) -> Transaction:
    agent = agent or factories.AgentFactory()
    deadline = timezone.now() + timedelta(hours=1)
    return sagas.open_transaction(
        actor=Actor(agent=agent), name=fields.pop("name", "order"), task_id=None, deadline_at=deadline
    )


def http_step(
    txn: Transaction, target: Target, key: str, *, policy: str | None = None, **request: Any
) -> Any:
    compensation = sagas.validate_compensation(
        {"kind": "http", "request": {"method": "POST", "url": target.url(f"/undo/{key}"), **request}}
    )
    step, _ = sagas.record_step(
        transaction_id=txn.pk,
        name=f"step {key}",
        idempotency_key=key,
        compensation=compensation,
        policy_name=policy,
    )
    return step


def fast_policy(name: str = "fast", attempts: int = 3) -> RetryPolicy:
    """A policy a step names: scoped to a service of its own (a policy without one is a class default)."""
    service = Service.objects.create(name=f"svc-{name}")
    return RetryPolicy.objects.create(
        service=service, name=name, strategy="fixed", max_attempts=attempts, base_delay_s=0, max_delay_s=0
    )


def start(txn: Transaction, reason: str = "payment refused") -> str:
    sagas.request_rollback(transaction_id=txn.pk, reason=reason, actor=Actor(agent=txn.agent))
    txn.refresh_from_db()
    return txn.fence


def drive(txn: Transaction, *, max_runs: int = 30) -> list[sagas.Next]:
    """Run the rollback here as the chain of tasks would, following each hand-off at once."""
    fence = Transaction.objects.get(pk=txn.pk).fence
    handed: list[sagas.Next] = []
    for _ in range(max_runs):
        following = sagas.run_rollback(txn.pk, fence)
        if following is None:
            txn.refresh_from_db()
            return handed
        handed.append(following)
        # As the countdown would; the tests' policies wait at most a second or two.
        assert following.countdown <= 2.5, following
        time.sleep(following.countdown)
        fence = following.fence
    raise AssertionError(f"the rollback did not end in {max_runs} runs: {handed}")


def attempts_of(step: TransactionStep) -> list[tuple[int, str, int | None]]:
    return [(a.number, a.outcome, a.status_code) for a in step.attempt_rows.order_by("number")]


def sample(name: str, outcome: str) -> float:
    return REGISTRY.get_sample_value(f"{name}_total", {"outcome": outcome}) or 0.0


# --- the happy path ----------------------------------------------------------------------------------------


def test_it_compensates_every_step_newest_first_with_its_idempotency_key(
    target: Target, django_capture_on_commit_callbacks: Any
) -> None:
    txn = open_txn()
    steps = [http_step(txn, target, key, body={"n": n}) for n, key in enumerate(["a", "b", "c"])]
    before = (sample("compensations", "success"), sample("transactions", "rolled_back"))

    with django_capture_on_commit_callbacks(execute=True):
        start(txn)
        assert drive(txn) == []

    assert txn.status == Transaction.Status.ROLLED_BACK
    assert txn.finished_at is not None and txn.needs_human is False
    assert txn.rollback_reason == "payment refused"
    assert target.effects == ["c", "b", "a"]
    assert target.raw == {"a": 1, "b": 1, "c": 1}
    assert [r["path"] for r in target.requests] == ["/undo/c", "/undo/b", "/undo/a"]
    assert [json.loads(r["body"]) for r in target.requests] == [{"n": 2}, {"n": 1}, {"n": 0}]
    for step in steps:
        step.refresh_from_db()
        assert step.status == TransactionStep.Status.COMPENSATED
        assert step.compensated_at is not None and step.attempts == 1 and step.last_error is None
        assert step.fence == txn.fence
        assert attempts_of(step) == [(1, "success", 200)]
        attempt = step.attempt_rows.get()
        assert attempt.task_id == txn.fence and attempt.finished_at is not None and attempt.duration_ms
    compensated_at = [s.compensated_at for s in sorted(steps, key=lambda s: -s.seq)]
    assert compensated_at == sorted(compensated_at)  # type: ignore[type-var]
    assert sample("compensations", "success") == before[0] + 3
    assert sample("transactions", "rolled_back") == before[1] + 1
    event = AuditEvent.objects.get(action="transaction.rollback")
    assert event.target_id == str(txn.pk) and event.reason == "payment refused"
    assert event.actor_agent == txn.agent and event.after == {"status": "rolling_back"}


def test_it_ends_a_rollback_without_steps_at_once(target: Target) -> None:
    txn = open_txn()
    start(txn)
    drive(txn)
    assert txn.status == Transaction.Status.ROLLED_BACK


def test_it_marks_steps_with_nothing_to_undo_compensated_without_an_attempt(target: Target) -> None:
    txn = open_txn()
    http_step(txn, target, "a")
    nothing, _ = sagas.record_step(
        transaction_id=txn.pk,
        name="read the cart",
        idempotency_key="cart",
        compensation=sagas.validate_compensation({"kind": "none"}),
        policy_name=None,
    )
    start(txn)
    drive(txn)
    nothing.refresh_from_db()
    assert nothing.status == TransactionStep.Status.COMPENSATED and nothing.compensated_at is not None
    assert nothing.attempt_rows.count() == 0
    assert target.effects == ["a"]


def test_it_runs_a_registered_task_as_a_compensation(target: Target) -> None:
    txn = open_txn()
    compensation = sagas.validate_compensation(
        {"kind": "task", "task": {"name": "recovery.demo_tasks.echo", "args": ["sku-1"], "kwargs": {"n": 1}}}
    )
    step, _ = sagas.record_step(
        transaction_id=txn.pk,
        name="stock",
        idempotency_key="stock-1",
        compensation=compensation,
        policy_name=None,
    )
    start(txn)
    drive(txn)
    step.refresh_from_db()
    assert step.status == TransactionStep.Status.COMPENSATED
    assert attempts_of(step) == [(1, "success", None)]
    # echo takes **kwargs, so it is given the key; flaky names its arguments and does not take it.
    assert sagas.accepts_idempotency_key("recovery.demo_tasks.echo") is True
    assert sagas.accepts_idempotency_key("recovery.demo_tasks.flaky") is False


# --- retries ------------------------------------------------------------------------------------------------


def test_it_retries_a_failing_compensation_by_the_steps_policy(target: Target) -> None:
    fast_policy()
    txn = open_txn()
    first = http_step(txn, target, "a")
    second = http_step(txn, target, "b", policy="fast")
    target.fail("b", times=2, status=503)
    fence = start(txn)

    handed = drive(txn)

    assert txn.status == Transaction.Status.ROLLED_BACK
    assert [h.countdown for h in handed] == [0.0, 0.0]  # the fast policy waits 0 s between attempts
    second.refresh_from_db()
    assert attempts_of(second) == [(1, "failure", 503), (2, "failure", 503), (3, "success", 200)]
    assert second.status == TransactionStep.Status.COMPENSATED and second.attempts == 3
    failed = second.attempt_rows.get(number=1)
    assert failed.error_class == "external_service" and failed.kind == "service_unavailable"
    assert failed.error_type == "HTTPStatusError" and "503" in failed.message
    # The fence moved with each hand-off; the attempts record which run made them.
    fences = [fence, handed[0].fence, handed[1].fence]
    assert [a.task_id for a in second.attempt_rows.order_by("number")] == fences
    assert second.last_error is not None and second.last_error["attempt"] == 2
    assert second.last_error["policy"] == "fast"
    first.refresh_from_db()
    assert attempts_of(first) == [(1, "success", 200)]
    assert target.raw == {"b": 3, "a": 1} and target.effects == ["b", "a"]


def test_it_waits_the_default_policys_delay_for_the_failures_class(target: Target) -> None:
    txn = open_txn()
    step = http_step(txn, target, "a")
    target.fail("a", times=1, status=503)
    fence = start(txn)

    following = sagas.run_rollback(txn.pk, fence)

    # No policy named: the one for the failure's kind (service_unavailable: fixed 2 s, 4 attempts).
    assert following is not None and following.countdown == 2.0
    step.refresh_from_db()
    assert step.status == TransactionStep.Status.COMPENSATING
    assert step.last_error is not None and step.last_error["policy"] == "service unavailable"
    assert step.last_error["delay_s"] == 2.0 and step.last_error["retry_at"]
    txn.refresh_from_db()
    assert txn.fence == following.fence and txn.status == Transaction.Status.ROLLING_BACK
    # The next run, early (a beat re-drive, say), waits for the retry time rather than calling sooner.
    early = sagas.run_rollback(txn.pk, following.fence)
    assert early is not None and 0 < early.countdown <= 2.0
    assert target.raw == {"a": 1}


def test_it_fails_the_rollback_when_a_compensation_exhausts_its_retries(
    target: Target, django_capture_on_commit_callbacks: Any
) -> None:
    fast_policy(attempts=2)
    txn = open_txn()
    oldest = http_step(txn, target, "a")
    failing = http_step(txn, target, "b", policy="fast")
    newest = http_step(txn, target, "c")
    target.fail("b", times=10, status=503)
    before = (sample("transactions", "rollback_failed"), sample("compensations", "failure"))

    with django_capture_on_commit_callbacks(execute=True):
        start(txn)
        drive(txn)

    assert txn.status == Transaction.Status.ROLLBACK_FAILED
    assert txn.needs_human is True and txn.finished_at is not None
    failing.refresh_from_db()
    assert failing.status == TransactionStep.Status.COMPENSATION_FAILED
    assert attempts_of(failing) == [(1, "failure", 503), (2, "failure", 503)]
    assert failing.last_error is not None and failing.last_error["retry_at"] is None
    newest.refresh_from_db()
    assert newest.status == TransactionStep.Status.COMPENSATED
    # The saga stops at the failed step: the older one is not undone out of order.
    oldest.refresh_from_db()
    assert oldest.status == TransactionStep.Status.DONE and oldest.attempt_rows.count() == 0
    assert target.raw == {"c": 1, "b": 2}
    assert sample("transactions", "rollback_failed") == before[0] + 1
    assert sample("compensations", "failure") == before[1] + 2
    assert list(saga_selectors.rollbacks_needing_human()) == [txn]
    waiting = selectors.fleet_status()["rollbacks_needing_human"]
    assert waiting["count"] == 1
    assert waiting["newest"][0]["id"] == str(txn.pk) and waiting["newest"][0]["failed_step"] == failing.seq


def test_it_does_not_retry_a_failure_that_retrying_cannot_fix(target: Target) -> None:
    txn = open_txn()
    step = http_step(txn, target, "a")
    target.fail("a", times=10, status=400)
    start(txn)
    drive(txn)
    assert txn.status == Transaction.Status.ROLLBACK_FAILED
    step.refresh_from_db()
    assert attempts_of(step) == [(1, "failure", 400)]
    assert step.last_error is not None and step.last_error["error_class"] == "validation"


def test_it_resumes_a_failed_rollback_from_the_failed_step_when_asked(target: Target) -> None:
    fast_policy(attempts=1)
    txn = open_txn()
    oldest = http_step(txn, target, "a")
    failing = http_step(txn, target, "b", policy="fast")
    target.fail("b", times=1, status=503)
    start(txn)
    drive(txn)
    assert txn.status == Transaction.Status.ROLLBACK_FAILED
    operator = factories.operator()

    assert sagas.retry_compensation(
        transaction_id=txn.pk, reason="provider fixed", actor=Actor(user=operator)
    )
    assert not sagas.retry_compensation(transaction_id=txn.pk, reason="again", actor=Actor(user=operator))
    txn.refresh_from_db()
    assert (
        txn.status == Transaction.Status.ROLLING_BACK and txn.needs_human is False and txn.finished_at is None
    )
    failing.refresh_from_db()
    assert (
        failing.status == TransactionStep.Status.DONE and failing.attempts == 0 and failing.fence == txn.fence
    )
    drive(txn)

    assert txn.status == Transaction.Status.ROLLED_BACK
    failing.refresh_from_db()
    assert attempts_of(failing) == [(1, "failure", 503), (2, "success", 200)]
    assert failing.attempts == 1
    oldest.refresh_from_db()
    assert oldest.status == TransactionStep.Status.COMPENSATED
    event = AuditEvent.objects.get(action="transaction.retry_compensation")
    assert event.actor_user == operator and event.reason == "provider fixed"
    assert event.before == {"status": "rollback_failed", "needs_human": True, "failed_steps": [failing.seq]}


# --- fences and leases ----------------------------------------------------------------------------------------


def test_it_lets_only_the_run_holding_the_fence_act(target: Target) -> None:
    txn = open_txn()
    step = http_step(txn, target, "a")
    start(txn)
    assert sagas.run_rollback(txn.pk, str(uuid.uuid4())) is None
    step.refresh_from_db()
    assert step.status == TransactionStep.Status.DONE and step.attempt_rows.count() == 0
    assert target.raw == {}


def test_it_never_calls_beside_an_attempt_still_under_its_lease(target: Target) -> None:
    txn = open_txn()
    step = http_step(txn, target, "a")
    fence = start(txn)
    # A run that died (or still runs) in the middle of its call: the attempt row is written, no outcome.
    TransactionStep.objects.filter(pk=step.pk).update(status="compensating", fence="dead-run", attempts=1)
    CompensationAttempt.objects.create(step=step, number=1, started_at=timezone.now(), task_id="dead-run")

    following = sagas.run_rollback(txn.pk, fence)

    assert following is not None and 300 < following.countdown <= 330  # SAGA_ATTEMPT_LEASE_SECONDS
    assert target.raw == {}
    assert attempts_of(step) == [(1, "running", None)]


def test_it_resends_a_lost_attempt_with_the_same_key_after_its_lease(target: Target) -> None:
    txn = open_txn()
    step = http_step(txn, target, "a")
    start(txn)
    TransactionStep.objects.filter(pk=step.pk).update(status="compensating", fence="dead-run", attempts=1)
    long_ago = timezone.now() - timedelta(seconds=331)
    CompensationAttempt.objects.create(step=step, number=1, started_at=long_ago, task_id="dead-run")

    handed = drive(txn)

    assert txn.status == Transaction.Status.ROLLED_BACK
    assert [h.countdown for h in handed] == [1.0]  # lost counts as transient: that policy's first delay
    lost, resent = step.attempt_rows.order_by("number")
    assert (lost.outcome, lost.error_type, lost.error_class) == ("failure", sagas.WORKER_LOST, "transient")
    assert "dead-run" in lost.message and lost.finished_at is not None
    assert (resent.number, resent.outcome) == (2, "success")
    assert target.requests[0]["Idempotency-Key"] == "a" and target.raw == {"a": 1}


def test_it_drops_the_outcome_of_an_attempt_already_taken_for_lost(target: Target) -> None:
    txn = open_txn()
    step = http_step(txn, target, "a")
    fence = start(txn)
    TransactionStep.objects.filter(pk=step.pk).update(status="compensating", fence=fence, attempts=1)
    attempt = CompensationAttempt.objects.create(
        step=step, number=1, started_at=timezone.now(), task_id=fence
    )
    # Another run closed it as lost while this one was still in its call.
    CompensationAttempt.objects.filter(pk=attempt.pk).update(outcome="failure", error_type=sagas.WORKER_LOST)

    assert sagas._record_success(txn, step, attempt, 200, 5.0) is None

    step.refresh_from_db()
    assert step.status == TransactionStep.Status.COMPENSATING
    attempt.refresh_from_db()
    assert attempt.outcome == "failure"


# --- beat: deadlines and stalled rollbacks -----------------------------------------------------------------


def test_it_rolls_back_open_transactions_past_their_deadline(target: Target) -> None:
    overdue = open_txn(name="late")
    http_step(overdue, target, "a")
    on_time = open_txn(name="on time")
    committed = open_txn(name="done")
    sagas.commit(transaction_id=committed.pk, actor=Actor(agent=committed.agent))
    Transaction.objects.filter(pk__in=[overdue.pk, committed.pk]).update(
        deadline_at=timezone.now() - timedelta(seconds=1)
    )

    assert sagas.rollback_overdue() == 1
    assert sagas.rollback_overdue() == 0

    overdue.refresh_from_db()
    assert overdue.status == Transaction.Status.ROLLING_BACK and overdue.rollback_reason == "deadline passed"
    event = AuditEvent.objects.get(action="transaction.rollback")
    assert event.target_id == str(overdue.pk) and event.actor_label == "system" and event.source == "system"
    drive(overdue)
    assert overdue.status == Transaction.Status.ROLLED_BACK and target.effects == ["a"]
    on_time.refresh_from_db()
    committed.refresh_from_db()
    assert on_time.status == "open" and committed.status == "committed"


def test_it_drives_again_a_rollback_that_made_no_progress(target: Target) -> None:
    stalled = open_txn()
    http_step(stalled, target, "a")
    lost_fence = start(stalled)
    busy = open_txn()
    busy_fence = start(busy)
    Transaction.objects.filter(pk=stalled.pk).update(updated_at=timezone.now() - timedelta(seconds=121))

    assert sagas.resume_stuck() == 1

    stalled.refresh_from_db()
    assert stalled.fence != lost_fence and stalled.status == Transaction.Status.ROLLING_BACK
    busy.refresh_from_db()
    assert busy.fence == busy_fence
    # The lost task, should it ever arrive, finds another fence and does nothing.
    assert sagas.run_rollback(stalled.pk, lost_fence) is None
    assert target.raw == {}
    drive(stalled)
    assert stalled.status == Transaction.Status.ROLLED_BACK and target.raw == {"a": 1}

"""Rollbacks run in this process against a real HTTP server on 127.0.0.1: reverse order, retries by policy,
exhaustion, leases of running attempts, fences, deadlines. Worker processes: tests/recovery/sagas/test_processes.py."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from prometheus_client import REGISTRY

from core.audit.models import AuditEvent
from core.audit.services import Actor
from recovery.breakers.models import Service
from recovery.calls import services as call_services
from recovery.decisions import policies
from recovery.decisions.models import RetryPolicy
from recovery.sagas import selectors as saga_selectors
from recovery.sagas import services as saga_services
from recovery.sagas.models import CompensationAttempt, Transaction, TransactionStep
from recovery.status import selectors as status_selectors
from tests.support import factories
from tests.support.saga_fixtures import Target, drive, http_step, open_txn

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_policies() -> Iterator[None]:
    policies.forget()
    yield
    policies.forget()


def fast_policy(name: str = "fast", attempts: int = 3) -> RetryPolicy:
    """A policy a step names: scoped to a service of its own (a policy without one is a class default)."""
    service = Service.objects.create(name=f"svc-{name}")
    return RetryPolicy.objects.create(
        service=service, name=name, strategy="fixed", max_attempts=attempts, base_delay_s=0, max_delay_s=0
    )


def start(txn: Transaction, reason: str = "payment refused") -> str:
    saga_services.request_rollback(transaction_id=txn.pk, reason=reason, actor=Actor(agent=txn.agent))
    txn.refresh_from_db()
    return txn.fence


def attempts_of(step: TransactionStep) -> list[tuple[int, str, int | None]]:
    return [(a.number, a.outcome, a.status_code) for a in step.attempt_rows.order_by("number")]


def sample(name: str, outcome: str) -> float:
    return REGISTRY.get_sample_value(f"{name}_total", {"outcome": outcome}) or 0.0


# --- the happy path ----------------------------------------------------------------------------------------


def _roll_back_three(
    target: Target, capture: Any
) -> tuple[Transaction, list[TransactionStep], tuple[float, float]]:
    """Three HTTP steps (a, b, c) rolled back in this process: the transaction, its steps, the counters before."""
    txn = open_txn()
    steps = [http_step(txn, target, key, body={"n": n}) for n, key in enumerate(["a", "b", "c"])]
    before = (sample("compensations", "success"), sample("transactions", "rolled_back"))

    with capture(execute=True):
        start(txn)
        assert drive(txn) == []
    return txn, steps, before


def test_it_rolls_back_a_transaction_with_the_reason_given(
    target: Target, django_capture_on_commit_callbacks: Any
) -> None:
    txn, _, _ = _roll_back_three(target, django_capture_on_commit_callbacks)
    assert txn.status == Transaction.Status.ROLLED_BACK
    assert txn.finished_at is not None and txn.needs_human is False
    assert txn.rollback_reason == "payment refused"


def test_it_compensates_every_step_newest_first_with_its_idempotency_key(
    target: Target, django_capture_on_commit_callbacks: Any
) -> None:
    _roll_back_three(target, django_capture_on_commit_callbacks)
    assert target.effects == ["c", "b", "a"]
    assert target.raw == {"a": 1, "b": 1, "c": 1}
    assert [r["path"] for r in target.requests] == ["/undo/c", "/undo/b", "/undo/a"]
    assert [json.loads(r["body"]) for r in target.requests] == [{"n": 2}, {"n": 1}, {"n": 0}]


def test_it_records_each_compensated_step_with_its_one_attempt(
    target: Target, django_capture_on_commit_callbacks: Any
) -> None:
    txn, steps, _ = _roll_back_three(target, django_capture_on_commit_callbacks)
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


def test_it_counts_the_compensations_and_the_rollback(
    target: Target, django_capture_on_commit_callbacks: Any
) -> None:
    _, _, before = _roll_back_three(target, django_capture_on_commit_callbacks)
    assert sample("compensations", "success") == before[0] + 3
    assert sample("transactions", "rolled_back") == before[1] + 1


def test_it_audits_the_rollback_request_of_the_agent(
    target: Target, django_capture_on_commit_callbacks: Any
) -> None:
    txn, _, _ = _roll_back_three(target, django_capture_on_commit_callbacks)
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
    nothing, _ = saga_services.record_step(
        transaction_id=txn.pk,
        name="read the cart",
        idempotency_key="cart",
        compensation=saga_services.validate_compensation({"kind": "none"}),
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
    compensation = saga_services.validate_compensation(
        {"kind": "task", "task": {"name": "recovery.demo_tasks.echo", "args": ["sku-1"], "kwargs": {"n": 1}}}
    )
    step, _ = saga_services.record_step(
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
    assert call_services.accepts_idempotency_key("recovery.demo_tasks.echo") is True
    assert call_services.accepts_idempotency_key("recovery.demo_tasks.flaky") is False


# --- retries ------------------------------------------------------------------------------------------------


def _retry_b_twice(target: Target) -> tuple[str, list[Any], Transaction, TransactionStep, TransactionStep]:
    fast_policy()
    txn = open_txn()
    first = http_step(txn, target, "a")
    second = http_step(txn, target, "b", policy="fast")
    target.fail("b", times=2, status=503)
    fence = start(txn)

    handed = drive(txn)
    second.refresh_from_db()
    first.refresh_from_db()
    return fence, handed, txn, first, second


def test_it_retries_a_failing_compensation_by_the_steps_policy(target: Target) -> None:
    _, handed, txn, _, second = _retry_b_twice(target)

    assert txn.status == Transaction.Status.ROLLED_BACK
    assert [h.countdown for h in handed] == [0.0, 0.0]  # the fast policy waits 0 s between attempts
    assert attempts_of(second) == [(1, "failure", 503), (2, "failure", 503), (3, "success", 200)]
    assert second.status == TransactionStep.Status.COMPENSATED and second.attempts == 3


def test_it_records_a_failed_compensation_attempt_with_its_classification(target: Target) -> None:
    _, _, _, _, second = _retry_b_twice(target)
    failed = second.attempt_rows.get(number=1)
    assert failed.error_class == "external_service" and failed.kind == "service_unavailable"
    assert failed.error_type == "HTTPStatusError" and "503" in failed.message


def test_it_moves_the_fence_with_each_hand_off_of_a_retried_compensation(target: Target) -> None:
    fence, handed, _, _, second = _retry_b_twice(target)
    # The fence moved with each hand-off; the attempts record which run made them.
    fences = [fence, handed[0].fence, handed[1].fence]
    assert [a.task_id for a in second.attempt_rows.order_by("number")] == fences
    assert second.last_error is not None and second.last_error["attempt"] == 2
    assert second.last_error["policy"] == "fast"


def test_it_goes_on_to_the_older_step_once_a_retried_compensation_succeeds(target: Target) -> None:
    _, _, _, first, _ = _retry_b_twice(target)
    assert attempts_of(first) == [(1, "success", 200)]
    assert target.raw == {"b": 3, "a": 1} and target.effects == ["b", "a"]


def test_it_waits_the_default_policys_delay_for_the_failures_class(target: Target) -> None:
    txn = open_txn()
    step = http_step(txn, target, "a")
    target.fail("a", times=1, status=503)
    fence = start(txn)

    following = saga_services.run_rollback(txn.pk, fence)

    # No policy named: the one for the failure's kind (service_unavailable: fixed 2 s, 4 attempts).
    assert following is not None and following.countdown == 2.0
    step.refresh_from_db()
    assert step.status == TransactionStep.Status.COMPENSATING
    assert step.last_error is not None and step.last_error["policy"] == "service unavailable"
    assert step.last_error["delay_s"] == 2.0 and step.last_error["retry_at"]
    txn.refresh_from_db()
    assert txn.fence == following.fence and txn.status == Transaction.Status.ROLLING_BACK
    # The next run, early (a beat re-drive, say), waits for the retry time rather than calling sooner.
    early = saga_services.run_rollback(txn.pk, following.fence)
    assert early is not None and 0 < early.countdown <= 2.0
    assert target.raw == {"a": 1}


def _exhaust_b(target: Target, capture: Any) -> dict[str, Any]:
    """Steps a, b (the fast policy, two attempts) and c; b fails every time: the rollback fails."""
    fast_policy(attempts=2)
    txn = open_txn()
    oldest = http_step(txn, target, "a")
    failing = http_step(txn, target, "b", policy="fast")
    newest = http_step(txn, target, "c")
    target.fail("b", times=10, status=503)
    before = (sample("transactions", "rollback_failed"), sample("compensations", "failure"))

    with capture(execute=True):
        start(txn)
        drive(txn)
    for step in (oldest, failing, newest):
        step.refresh_from_db()
    return {"txn": txn, "oldest": oldest, "failing": failing, "newest": newest, "before": before}


def test_it_fails_the_rollback_when_a_compensation_exhausts_its_retries(
    target: Target, django_capture_on_commit_callbacks: Any
) -> None:
    run = _exhaust_b(target, django_capture_on_commit_callbacks)
    txn, failing = run["txn"], run["failing"]
    assert txn.status == Transaction.Status.ROLLBACK_FAILED
    assert txn.needs_human is True and txn.finished_at is not None
    assert failing.status == TransactionStep.Status.COMPENSATION_FAILED
    assert attempts_of(failing) == [(1, "failure", 503), (2, "failure", 503)]
    assert failing.last_error is not None and failing.last_error["retry_at"] is None


def test_it_stops_a_failed_rollback_at_the_failed_step(
    target: Target, django_capture_on_commit_callbacks: Any
) -> None:
    run = _exhaust_b(target, django_capture_on_commit_callbacks)
    assert run["newest"].status == TransactionStep.Status.COMPENSATED
    # The saga stops at the failed step: the older one is not undone out of order.
    oldest = run["oldest"]
    assert oldest.status == TransactionStep.Status.DONE and oldest.attempt_rows.count() == 0
    assert target.raw == {"c": 1, "b": 2}


def test_it_counts_a_failed_rollback_and_its_failed_compensations(
    target: Target, django_capture_on_commit_callbacks: Any
) -> None:
    before = _exhaust_b(target, django_capture_on_commit_callbacks)["before"]
    assert sample("transactions", "rollback_failed") == before[0] + 1
    assert sample("compensations", "failure") == before[1] + 2


def test_it_lists_a_failed_rollback_as_needing_a_human_in_status(
    target: Target, django_capture_on_commit_callbacks: Any
) -> None:
    run = _exhaust_b(target, django_capture_on_commit_callbacks)
    txn, failing = run["txn"], run["failing"]
    assert list(saga_selectors.rollbacks_needing_human()) == [txn]
    waiting = status_selectors.fleet_status()["rollbacks_needing_human"]
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


def _fail_b_once(target: Target) -> tuple[Transaction, TransactionStep, TransactionStep, Any]:
    """Steps a and b (the fast policy, one attempt); b fails once: the rollback fails. And an operator."""
    fast_policy(attempts=1)
    txn = open_txn()
    oldest = http_step(txn, target, "a")
    failing = http_step(txn, target, "b", policy="fast")
    target.fail("b", times=1, status=503)
    start(txn)
    drive(txn)
    assert txn.status == Transaction.Status.ROLLBACK_FAILED
    return txn, oldest, failing, factories.operator()


def test_it_resumes_a_failed_rollback_from_the_failed_step_once_when_asked(target: Target) -> None:
    txn, _, failing, operator = _fail_b_once(target)

    assert saga_services.retry_compensation(
        transaction_id=txn.pk, reason="provider fixed", actor=Actor(user=operator)
    )
    assert not saga_services.retry_compensation(
        transaction_id=txn.pk, reason="again", actor=Actor(user=operator)
    )
    txn.refresh_from_db()
    assert (
        txn.status == Transaction.Status.ROLLING_BACK and txn.needs_human is False and txn.finished_at is None
    )
    failing.refresh_from_db()
    assert (
        failing.status == TransactionStep.Status.DONE and failing.attempts == 0 and failing.fence == txn.fence
    )


def test_it_finishes_a_resumed_rollback(target: Target) -> None:
    txn, oldest, failing, operator = _fail_b_once(target)
    saga_services.retry_compensation(
        transaction_id=txn.pk, reason="provider fixed", actor=Actor(user=operator)
    )
    txn.refresh_from_db()
    drive(txn)

    assert txn.status == Transaction.Status.ROLLED_BACK
    failing.refresh_from_db()
    assert attempts_of(failing) == [(1, "failure", 503), (2, "success", 200)]
    assert failing.attempts == 1
    oldest.refresh_from_db()
    assert oldest.status == TransactionStep.Status.COMPENSATED


def test_it_audits_resuming_a_failed_rollback(target: Target) -> None:
    txn, _, failing, operator = _fail_b_once(target)
    saga_services.retry_compensation(
        transaction_id=txn.pk, reason="provider fixed", actor=Actor(user=operator)
    )
    event = AuditEvent.objects.get(action="transaction.retry_compensation")
    assert event.actor_user == operator and event.reason == "provider fixed"
    assert event.before == {"status": "rollback_failed", "needs_human": True, "failed_steps": [failing.seq]}


# --- fences and leases ----------------------------------------------------------------------------------------


def test_it_lets_only_the_run_holding_the_fence_act(target: Target) -> None:
    txn = open_txn()
    step = http_step(txn, target, "a")
    start(txn)
    assert saga_services.run_rollback(txn.pk, str(uuid.uuid4())) is None
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

    following = saga_services.run_rollback(txn.pk, fence)

    assert following is not None and 300 < following.countdown <= 330  # SAGA_ATTEMPT_LEASE_SECONDS
    assert target.raw == {}
    assert attempts_of(step) == [(1, "running", None)]


@pytest.mark.slow  # waits out the retry policy's first delay (1 s) before the resend
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
    assert (lost.outcome, lost.error_type, lost.error_class) == (
        "failure",
        saga_services.WORKER_LOST,
        "transient",
    )
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
    CompensationAttempt.objects.filter(pk=attempt.pk).update(
        outcome="failure", error_type=saga_services.WORKER_LOST
    )

    assert saga_services._record_success(txn, step, attempt, 200, 5.0) is None

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
    saga_services.commit(transaction_id=committed.pk, actor=Actor(agent=committed.agent))
    Transaction.objects.filter(pk__in=[overdue.pk, committed.pk]).update(
        deadline_at=timezone.now() - timedelta(seconds=1)
    )

    assert saga_services.rollback_overdue() == 1
    assert saga_services.rollback_overdue() == 0

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

    assert saga_services.resume_stuck() == 1

    stalled.refresh_from_db()
    assert stalled.fence != lost_fence and stalled.status == Transaction.Status.ROLLING_BACK
    busy.refresh_from_db()
    assert busy.fence == busy_fence
    # The lost task, should it ever arrive, finds another fence and does nothing.
    assert saga_services.run_rollback(stalled.pk, lost_fence) is None
    assert target.raw == {}
    drive(stalled)
    assert stalled.status == Transaction.Status.ROLLED_BACK and target.raw == {"a": 1}

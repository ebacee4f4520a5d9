"""Races against the real PostgreSQL and Redis: two rollbacks at once start one run; duplicate deliveries of
one run send each compensation once; appends racing a rollback are all compensated or refused."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection

from core.api.errors import Conflict
from core.audit.models import AuditEvent
from core.audit.services import Actor
from recovery.sagas import services as saga_services
from recovery.sagas.models import Transaction, TransactionStep
from tests.support.saga_fixtures import Target, drive, http_step, open_txn

TEST_REDIS_URL: str = getattr(settings, "TEST_REDIS_URL", "")

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]


def run_threads(count: int, work: Callable[[int], Any]) -> tuple[list[Any], list[BaseException]]:
    results: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def run(n: int) -> None:
        try:
            barrier.wait()
            results.append(work(n))
        except BaseException as error:  # collected and asserted on below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results, errors


def queued_rollback_ids() -> list[str]:
    """The ids of the rollback tasks waiting in the broker's default queue (nothing consumes it here)."""
    client = redis.Redis.from_url(TEST_REDIS_URL)
    raw: list[bytes] = client.lrange("celery", 0, -1)  # type: ignore[assignment]
    messages = [json.loads(item) for item in raw]
    return [
        m["headers"]["id"] for m in messages if m["headers"]["task"] == "recovery.saga_tasks.run_rollback"
    ]


@pytest.fixture(autouse=True)
def _empty_queue() -> Iterator[None]:
    redis.Redis.from_url(TEST_REDIS_URL).delete("celery")
    yield


def test_it_starts_one_run_when_rollbacks_race(target: Target) -> None:
    txn = open_txn()
    http_step(txn, target, "a")

    results, errors = run_threads(
        8,
        lambda n: saga_services.request_rollback(
            transaction_id=txn.pk, reason=f"reason {n}", actor=Actor(agent=txn.agent)
        )[1],
    )

    assert errors == []
    assert sorted(results) == [False] * 7 + [True]
    txn.refresh_from_db()
    assert txn.status == Transaction.Status.ROLLING_BACK
    assert AuditEvent.objects.filter(action="transaction.rollback").count() == 1
    assert AuditEvent.objects.get(action="transaction.rollback").reason == txn.rollback_reason
    # One task in the broker, enqueued once the winner committed, with the fence as its id.
    assert queued_rollback_ids() == [txn.fence]


def test_it_sends_each_compensation_once_when_one_run_is_delivered_many_times(target: Target) -> None:
    txn = open_txn()
    steps = [http_step(txn, target, key) for key in ["a", "b", "c", "d"]]
    saga_services.request_rollback(
        transaction_id=txn.pk, reason="payment refused", actor=Actor(agent=txn.agent)
    )
    txn.refresh_from_db()
    fence = txn.fence

    _, errors = run_threads(6, lambda _: saga_services.run_rollback(txn.pk, fence))
    assert errors == []
    # A duplicate that found an attempt still running handed the rest to a later task (after the attempt's
    # lease); this test runs that task now, as its countdown would.
    drive(txn)

    assert txn.status == Transaction.Status.ROLLED_BACK
    assert target.raw == {"a": 1, "b": 1, "c": 1, "d": 1}
    assert target.effects == ["d", "c", "b", "a"]
    for step in steps:
        step.refresh_from_db()
        assert step.status == TransactionStep.Status.COMPENSATED
        assert [(a.number, a.outcome) for a in step.attempt_rows.all()] == [(1, "success")]


def test_it_compensates_every_step_recorded_before_a_racing_rollback(target: Target) -> None:
    txn = open_txn()

    def work(n: int) -> str:
        if n == 0:
            saga_services.request_rollback(
                transaction_id=txn.pk, reason="abort", actor=Actor(agent=txn.agent)
            )
            return "rollback"
        try:
            http_step(txn, target, f"k{n}")
        except Conflict:
            return "refused"
        return "recorded"

    results, errors = run_threads(8, work)

    assert errors == []
    recorded = set(TransactionStep.objects.filter(transaction=txn).values_list("idempotency_key", flat=True))
    assert len(recorded) == results.count("recorded")
    drive(txn)
    assert txn.status == Transaction.Status.ROLLED_BACK
    # Every step that was accepted is undone, none twice; every refused one was told so (409).
    assert set(target.raw) == recorded and set(target.raw.values()) <= {1}
    assert sorted(TransactionStep.objects.filter(transaction=txn).values_list("seq", flat=True)) == list(
        range(1, len(recorded) + 1)
    )

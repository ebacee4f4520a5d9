"""transaction_ended: sent once a transaction's end is committed (committed, rolled back, rollback failed, and
rolled back after an operator resumed a failed rollback), never the saga's failure when a receiver fails.
Rollbacks run in this process against a real HTTP server (tests/support/saga_fixtures.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from core.audit.services import Actor
from recovery.sagas import services as saga_services
from recovery.sagas import signals
from recovery.sagas.models import Transaction
from tests.support import factories
from tests.support.saga_fixtures import Target, drive, http_step, open_txn

pytestmark = pytest.mark.django_db


@pytest.fixture
def heard() -> Iterator[list[tuple[str, str]]]:
    calls: list[tuple[str, str]] = []

    def receiver(sender: object, *, transaction_id: str, status: str, **_: Any) -> None:
        calls.append((transaction_id, status))

    signals.transaction_ended.connect(receiver, dispatch_uid="test-txn-heard")
    yield calls
    signals.transaction_ended.disconnect(dispatch_uid="test-txn-heard")


def roll_back(txn: Transaction, capture: Any) -> Transaction:
    with capture(execute=True):
        saga_services.request_rollback(
            transaction_id=txn.pk, reason="payment refused", actor=Actor(agent=txn.agent)
        )
        drive(txn)
    txn.refresh_from_db()
    return txn


def test_it_announces_a_commit(heard: list[tuple[str, str]], django_capture_on_commit_callbacks: Any) -> None:
    txn = open_txn()
    with django_capture_on_commit_callbacks(execute=True):
        saga_services.commit(transaction_id=txn.pk, actor=Actor(agent=txn.agent))
        saga_services.commit(transaction_id=txn.pk, actor=Actor(agent=txn.agent))  # again: nothing more
    assert heard == [(str(txn.pk), "committed")]


def test_it_announces_a_completed_rollback(
    target: Target, heard: list[tuple[str, str]], django_capture_on_commit_callbacks: Any
) -> None:
    txn = open_txn()
    http_step(txn, target, "a")
    assert roll_back(txn, django_capture_on_commit_callbacks).status == "rolled_back"
    assert heard == [(str(txn.pk), "rolled_back")]


def test_it_announces_a_failed_rollback_and_its_completion_once_resumed(
    target: Target, heard: list[tuple[str, str]], django_capture_on_commit_callbacks: Any
) -> None:
    txn = open_txn()
    http_step(txn, target, "a")
    target.fail("a", 1, status=400)  # refused: not retried, the rollback stops there
    assert roll_back(txn, django_capture_on_commit_callbacks).status == "rollback_failed"
    assert heard == [(str(txn.pk), "rollback_failed")]

    with django_capture_on_commit_callbacks(execute=True):
        saga_services.retry_compensation(
            transaction_id=txn.pk, reason="the refund API is fixed", actor=Actor(user=factories.operator())
        )
        drive(txn)
    assert txn.status == "rolled_back"
    assert heard == [(str(txn.pk), "rollback_failed"), (str(txn.pk), "rolled_back")]


def test_a_failing_receiver_never_fails_the_rollback(
    target: Target, django_capture_on_commit_callbacks: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(sender: object, **_: Any) -> None:
        raise RuntimeError("the queue is down")

    txn = open_txn()
    http_step(txn, target, "a")
    signals.transaction_ended.connect(explode, dispatch_uid="test-txn-explode")
    try:
        with caplog.at_level(logging.ERROR):
            assert roll_back(txn, django_capture_on_commit_callbacks).status == "rolled_back"
    finally:
        signals.transaction_ended.disconnect(dispatch_uid="test-txn-explode")
    assert "transaction_ended receiver" in caplog.text and "the queue is down" in caplog.text

"""Rollbacks on real Celery worker processes: through the API end to end, and a worker killed (SIGKILL) in the
middle of a compensation, after which a new worker finishes the rollback and no side effect happens twice."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from core.audit.services import Actor
from recovery.breakers.models import Service
from recovery.calls.tasks import flaky_calls
from recovery.decisions.models import RetryPolicy
from recovery.sagas import services as saga_services
from recovery.sagas.models import Transaction, TransactionStep
from recovery.sagas.tasks import resume_stuck_rollbacks
from tests.support import factories
from tests.support.processes import PYTHON, process_env, start, stop, wait_for
from tests.support.saga_fixtures import Target, http_step, open_txn

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]

LEASE_S = 2  # SAGA_ATTEMPT_LEASE_SECONDS of the test workers: their compensations take milliseconds


@pytest.fixture
def target() -> Iterator[Target]:
    server = Target()
    with override_settings(REBOUND=factories.rebound_settings(OUTBOUND_ALLOWED_HOSTS=["127.0.0.1"])):
        yield server
    server.close()


def worker(tmp_path: Path, name: str) -> subprocess.Popen[Any]:
    """A worker on the suite's Redis, one process (solo pool): killing it kills the task it runs."""
    env = process_env(
        tmp_path,
        OUTBOUND_ALLOWED_HOSTS="127.0.0.1",
        SAGA_ATTEMPT_LEASE_SECONDS=str(LEASE_S),
        SAGA_STALE_SECONDS="1",
    )
    args = [
        PYTHON,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "--pool",
        "solo",
        "-l",
        "INFO",
        "-n",
        f"{name}@%h",
    ]
    return start(args, env, tmp_path / f"{name}.log")


def log_tail(tmp_path: Path) -> str:
    return "\n".join(p.read_text()[-3000:] for p in sorted(tmp_path.glob("*.log")))


def attempts_of(step: TransactionStep) -> list[tuple[int, str, str]]:
    return [(a.number, a.outcome, a.error_type) for a in step.attempt_rows.order_by("number")]


def test_it_rolls_back_through_the_api_on_a_real_worker(tmp_path: Path, target: Target) -> None:
    _, key = factories.agent_key()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    service = Service.objects.create(name="stock")
    RetryPolicy.objects.create(
        name="stock", service=service, strategy="fixed", max_attempts=3, base_delay_s=0.5, max_delay_s=0.5
    )
    txn_id = client.post(
        "/api/v1/transactions", {"name": "order-9", "deadline_s": 600}, format="json"
    ).json()["id"]
    for step in [
        {
            "name": "pay",
            "idempotency_key": "pay",
            "compensation": {"kind": "http", "request": {"method": "DELETE", "url": target.url()}},
        },
        {
            "name": "stock",
            "idempotency_key": "stock",
            "compensation": {
                "kind": "task",
                "task": {
                    "name": "recovery.demo_tasks.flaky",
                    "kwargs": {"key": f"stock-{txn_id}", "failures": 2},
                },
            },
            "policy": "stock",
        },
        {
            "name": "mail",
            "idempotency_key": "mail",
            "compensation": {"kind": "http", "request": {"method": "DELETE", "url": target.url()}},
        },
    ]:
        assert client.post(f"/api/v1/transactions/{txn_id}/steps", step, format="json").status_code == 201
    process = worker(tmp_path, "w1")
    try:
        response = client.post(
            f"/api/v1/transactions/{txn_id}/rollback", {"reason": "out of stock"}, format="json"
        )
        assert response.status_code == 202

        ended = wait_for(lambda: Transaction.objects.get(pk=txn_id).status != "rolling_back", timeout=90)
        assert ended, log_tail(tmp_path)
    finally:
        stop(process)

    detail = client.get(f"/api/v1/transactions/{txn_id}").json()
    assert detail["status"] == "rolled_back", [
        (s["name"], s["status"], s["last_error"]) for s in detail["steps"]
    ]
    steps = {s["idempotency_key"]: s for s in detail["steps"]}
    assert [a["outcome"] for a in steps["stock"]["compensation_attempts"]] == [
        "failure",
        "failure",
        "success",
    ]
    assert steps["stock"]["compensation_attempts"][0]["error_class"] == "transient"  # ConnectionError
    assert [a["outcome"] for a in steps["pay"]["compensation_attempts"]] == ["success"]
    assert [a["outcome"] for a in steps["mail"]["compensation_attempts"]] == ["success"]
    assert all(s["status"] == "compensated" for s in detail["steps"])
    assert flaky_calls(f"stock-{txn_id}") == 3
    assert target.effects == ["mail", "pay"] and target.raw == {"mail": 1, "pay": 1}
    # The retries waited their policy's delay in the broker (countdown), not in a sleeping worker.
    stock = TransactionStep.objects.get(transaction_id=txn_id, idempotency_key="stock")
    starts = [a.started_at for a in stock.attempt_rows.order_by("number")]
    assert all((later - earlier).total_seconds() >= 0.5 for earlier, later in itertools.pairwise(starts))


def test_it_finishes_a_rollback_whose_worker_was_killed_without_repeating_a_side_effect(
    tmp_path: Path, target: Target
) -> None:
    agent, _ = factories.agent_key()
    keys = ["k1", "k2", "k3", "k4", "k5"]
    txn = open_txn(agent)
    steps = {key: http_step(txn, target, key, timeout_s=30) for key in keys}
    arrived = target.hold("k3")  # the third compensation to run (k5, k4, then k3) stays in flight
    first = worker(tmp_path, "doomed")
    try:
        saga_services.request_rollback(
            transaction_id=txn.pk, reason="payment refused", actor=Actor(agent=agent)
        )
        txn.refresh_from_db()
        first_fence = txn.fence
        assert arrived.wait(60), log_tail(tmp_path)

        # The worker is in the middle of k3's call: k5 and k4 are done, the attempt for k3 is written, running.
        for key in ["k5", "k4"]:
            steps[key].refresh_from_db()
            assert steps[key].status == "compensated"
        steps["k3"].refresh_from_db()
        assert steps["k3"].status == "compensating"
        assert attempts_of(steps["k3"]) == [(1, "running", "")]
        assert target.raw == {"k5": 1, "k4": 1, "k3": 1}

        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            stop(first)
    assert first.returncode == -signal.SIGKILL
    # The target finishes the request the dead worker sent: that side effect happened, its answer is lost.
    target.release("k3")
    assert wait_for(lambda: "k3" in target.effects, timeout=30)
    assert Transaction.objects.get(pk=txn.pk).status == "rolling_back"

    second = worker(tmp_path, "rescuer")
    try:
        # Beat's resume_stuck_rollbacks, once the rollback has been quiet for SAGA_STALE_SECONDS (1 s here).
        time.sleep(1.5)
        resume_stuck_rollbacks.apply_async()
        ended = wait_for(lambda: Transaction.objects.get(pk=txn.pk).status != "rolling_back", timeout=90)
        assert ended, log_tail(tmp_path)
    finally:
        stop(second)

    txn.refresh_from_db()
    assert txn.status == "rolled_back" and txn.fence != first_fence and txn.needs_human is False
    # Each compensation's side effect happened exactly once, newest step first.
    assert target.effects == ["k5", "k4", "k3", "k2", "k1"]
    # On the wire: only k3 (in flight when the worker died) was sent twice, with the same Idempotency-Key;
    # k5 and k4, finished before the kill, were not sent again by the new worker.
    assert target.raw == {"k5": 1, "k4": 1, "k3": 2, "k2": 1, "k1": 1}
    assert [r["Idempotency-Key"] for r in target.requests] == ["k5", "k4", "k3", "k3", "k2", "k1"]
    for key in ["k5", "k4", "k2", "k1"]:
        steps[key].refresh_from_db()
        assert steps[key].status == "compensated"
        assert attempts_of(steps[key]) == [(1, "success", "")]
    steps["k3"].refresh_from_db()
    assert steps["k3"].status == "compensated"
    lost, resent = steps["k3"].attempt_rows.order_by("number")
    assert (lost.outcome, lost.error_type, lost.error_class) == (
        "failure",
        saga_services.WORKER_LOST,
        "transient",
    )
    assert lost.task_id == first_fence and first_fence in lost.message
    assert (resent.number, resent.outcome, resent.status_code) == (2, "success", 200)
    assert resent.task_id != first_fence

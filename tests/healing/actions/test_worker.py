"""Healing runs on a real Celery worker process: an approved run executes end to end once; a worker killed
(kill -9) mid-webhook leaves its run running, and the reaper marks it failed (worker_lost) without calling the
webhook again."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from healing.actions import services
from healing.actions.models import HealingRun
from tests.support import factories
from tests.support.healing_runs import make_webhook
from tests.support.http_target import Answer, Target, running_target
from tests.support.processes import PYTHON, process_env, start, stop, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]


def _worker(tmp_path: Path, target: Target) -> Any:
    log = tmp_path / "worker.log"
    command = [PYTHON, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "-l", "INFO"]
    return start(command, process_env(tmp_path, OUTBOUND_ALLOWED_HOSTS=target.host), log), log


def _state(run_id: int) -> str:
    return HealingRun.objects.values_list("state", flat=True).get(pk=run_id)


def test_it_executes_an_approved_run_on_a_real_worker(tmp_path: Path, agent_client: Any) -> None:
    with running_target() as target:
        make_webhook(target, risk="low")
        worker, log = _worker(tmp_path, target)
        try:
            response = agent_client.post(
                "/api/v1/healing/runs",
                {
                    "action": "restart-pods",
                    "service": "web-search",
                    "parameters": {"replicas": 2},
                    "reason": "503s",
                },
                format="json",
            )
            assert response.status_code == 201, response.json()
            run_id = response.json()["id"]
            assert wait_for(lambda: _state(run_id) == "succeeded", timeout=60), log.read_text()[-3000:]
            run = HealingRun.objects.get(pk=run_id)
            assert run.task_id and run.started_at and run.finished_at
            assert [s.headers["Idempotency-Key"] for s in target.seen] == [str(run_id)]
            assert list(run.transitions.values_list("to_state", flat=True)) == [
                "approved",
                "running",
                "succeeded",
            ]
        finally:
            stop(worker)


def test_a_run_whose_worker_is_killed_mid_call_is_reaped_as_worker_lost(
    tmp_path: Path, agent_client: Any
) -> None:
    with running_target() as target:
        target.script(Answer(200, {"ok": True}, delay_s=20))  # the deploy tool takes its time
        make_webhook(target, risk="low", timeout_s=15)
        worker, log = _worker(tmp_path, target)
        try:
            response = agent_client.post(
                "/api/v1/healing/runs",
                {"action": "restart-pods", "service": "web-search", "reason": "503s"},
                format="json",
            )
            run_id = response.json()["id"]
            assert wait_for(lambda: len(target.seen) == 1, timeout=60), log.read_text()[-3000:]
            worker.kill()  # SIGKILL mid-call: no outcome, no acknowledgement
            worker.wait(timeout=10)
        finally:
            if worker.poll() is None:
                worker.kill()
        run = HealingRun.objects.get(pk=run_id)
        assert run.state == "running" and run.started_at is not None

        grace = 5.0
        with override_settings(REBOUND=factories.rebound_settings(HEALING_REAPER_GRACE_SECONDS=grace)):
            # Beat's maintain_runs, at the moments that matter: before the timeout and grace, then after.
            assert services.maintain_runs(run.started_at + timedelta(seconds=15 + grace - 1))["reaped"] == 0
            assert services.maintain_runs(run.started_at + timedelta(seconds=15 + grace + 1))["reaped"] == 1
        run.refresh_from_db()
        assert run.state == "failed"
        assert run.state_reason.startswith("worker_lost")
        assert len(target.seen) == 1
        assert list(run.transitions.values_list("to_state", flat=True)) == ["approved", "running", "failed"]

"""Server-side retries end to end: the API enqueues, a real Celery worker process runs every attempt with the
policy's delays against a real local HTTP server, and a duplicated delivery runs nothing twice."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from config.celery import app
from recovery.breakers.models import Service
from recovery.decisions.models import RetryPolicy
from recovery.retries.models import RetryAttempt, RetryJob
from recovery.retries.tasks import run_retry_attempt
from tests.support.factories import rebound_settings
from tests.support.http_target import Answer, running_target
from tests.support.processes import PYTHON, process_env, start, stop, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]


def allow(host: str) -> Any:
    # This process (the API) checks the allowlist when the job is handed over; the worker, from its environment.
    return override_settings(REBOUND=rebound_settings(OUTBOUND_ALLOWED_HOSTS=[host]))


def test_it_retries_a_flaky_target_on_a_real_worker(tmp_path: Path, agent_client: Any) -> None:
    service = Service.objects.create(name="billing")
    RetryPolicy.objects.create(
        name="quick", service=service, strategy="fixed", max_attempts=4, base_delay_s=0.2, max_delay_s=0.2
    )
    with running_target() as target, allow(target.host):
        target.script(Answer(503, "down"), Answer(503, "down"), Answer(201, {"id": "inv_9"}))
        log = tmp_path / "worker.log"
        worker = start(
            [PYTHON, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "-l", "INFO"],
            process_env(tmp_path, OUTBOUND_ALLOWED_HOSTS=target.host),
            log,
        )
        try:
            response = agent_client.post(
                "/api/v1/retries",
                {
                    "service": "billing",
                    "operation": "create_invoice",
                    "kind": "http",
                    "request": {"method": "POST", "url": target.url("/invoices"), "body": {"amount": 9}},
                    "idempotency_key": "inv-9",
                    "policy": "quick",
                },
                format="json",
            )
            assert response.status_code == 201, response.json()
            job = RetryJob.objects.get(pk=response.json()["id"])

            def finished() -> bool:
                job.refresh_from_db()
                return job.is_finished

            assert wait_for(finished, timeout=60), log.read_text()[-3000:]
            assert (job.state, job.attempts, job.needs_human) == ("succeeded", 3, False)
            assert job.result == {"status_code": 201, "body": {"id": "inv_9"}}
            rows = list(RetryAttempt.objects.filter(job=job).order_by("number"))
            assert [(r.number, r.outcome, r.status_code, r.error_class) for r in rows] == [
                (1, "failure", 503, "external_service"),
                (2, "failure", 503, "external_service"),
                (3, "success", 201, ""),
            ]
            # The policy's delay separates the attempts: each started after the previous one finished.
            for before, after in itertools.pairwise(rows):
                assert before.finished_at is not None and after.started_at > before.finished_at
            assert [s.headers["Idempotency-Key"] for s in target.seen] == ["inv-9"] * 3

            # A duplicated delivery of the first attempt's message: its fence is long gone, nothing runs.

            with app.connection_for_write(settings.REDIS_URL) as conn:
                run_retry_attempt.apply_async(args=[str(job.pk), 1], task_id=rows[0].task_id, connection=conn)
            pattern = re.compile(rf"run_retry_attempt\[{rows[0].task_id}\] succeeded .*'stale'")
            assert wait_for(lambda: len(pattern.findall(log.read_text())) == 1, timeout=30), log.read_text()[
                -3000:
            ]
            assert RetryAttempt.objects.filter(job=job).count() == 3
            assert len(target.seen) == 3
        finally:
            stop(worker)


def _worker(tmp_path: Path, name: str, target_host: str, **env: str) -> Any:
    log = tmp_path / f"{name}.log"
    command = [
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
    return start(command, process_env(tmp_path, OUTBOUND_ALLOWED_HOSTS=target_host, **env), log), log


def test_it_sends_an_attempt_lost_with_a_killed_worker_again_with_the_same_key(
    tmp_path: Path, agent_client: Any
) -> None:
    service = Service.objects.create(name="billing")
    RetryPolicy.objects.create(
        name="quick", service=service, strategy="fixed", max_attempts=3, base_delay_s=0.2, max_delay_s=0.2
    )
    with running_target() as target, allow(target.host):
        # The first call hangs (the worker is killed during it); the one sent again succeeds.
        target.script(Answer(201, {"id": "never seen"}, delay_s=60), Answer(201, {"id": "inv_7"}))
        first, first_log = _worker(tmp_path, "doomed", target.host)
        second = None
        try:
            response = agent_client.post(
                "/api/v1/retries",
                {
                    "service": "billing",
                    "operation": "create_invoice",
                    "kind": "http",
                    "request": {"method": "POST", "url": target.url("/invoices"), "timeout_s": 30},
                    "idempotency_key": "inv-7",
                    "policy": "quick",
                },
                format="json",
            )
            assert response.status_code == 201, response.json()
            job = RetryJob.objects.get(pk=response.json()["id"])
            assert wait_for(lambda: len(target.seen) == 1, timeout=60), first_log.read_text()[-3000:]
            first.kill()  # SIGKILL mid-call: no outcome, no acknowledgement
            first.wait(timeout=10)
            job.refresh_from_db()
            assert (job.state, job.attempts) == ("running", 1)

            # A worker whose lease is short (the environment variable), and the beat sweep sent to it by name.
            second, second_log = _worker(tmp_path, "rescuer", target.host, RETRY_ATTEMPT_LEASE_SECONDS="2")

            def rescued() -> bool:
                with app.connection_for_write(settings.REDIS_URL) as conn:
                    app.send_task("recovery.retry_tasks.requeue_overdue_retries", connection=conn)
                job.refresh_from_db()
                return job.is_finished

            assert wait_for(rescued, timeout=60, interval=1.0), second_log.read_text()[-3000:]
            assert (job.state, job.attempts, job.needs_human) == ("succeeded", 2, False)
            assert job.result == {"status_code": 201, "body": {"id": "inv_7"}}
            rows = list(RetryAttempt.objects.filter(job=job).order_by("number"))
            assert [(r.number, r.outcome, r.error_type) for r in rows] == [
                (1, "failure", "celery.exceptions.WorkerLostError"),
                (2, "success", ""),
            ]
            assert [s.headers["Idempotency-Key"] for s in target.seen] == ["inv-7", "inv-7"]
        finally:
            if first.poll() is None:
                first.kill()
            if second is not None:
                stop(second)

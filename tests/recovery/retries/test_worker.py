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

from recovery.breakers.models import Service
from recovery.decisions.models import RetryPolicy
from recovery.retries.models import RetryAttempt, RetryJob
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
            from config.celery import app
            from recovery.retries.tasks import run_retry_attempt

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

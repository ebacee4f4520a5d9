"""Health checks on a real Celery worker process: a celery check pings the workers of its queue, and the
dispatcher's runs (real messages, JSON arguments, time limits) are recorded once by the worker, a second
delivery of the same due run included."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from celery import current_app
from django.utils import timezone

from core.audit.services import Actor
from healing.checks import services
from healing.checks.models import HealthCheck, HealthCheckResult
from tests.support.health_checks import allow, make_check
from tests.support.http_target import Answer, running_target
from tests.support.processes import PYTHON, process_env, start, stop, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]
QUEUE = "hc-probe"
WORKER = [PYTHON, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "-l", "INFO"]
WORKER += ["-Q", f"celery,{QUEUE}", "-n", "hc@%h"]


def test_celery_and_scheduled_checks_on_a_real_worker(tmp_path: Path) -> None:
    with running_target() as target, allow(target.host):
        log = tmp_path / "worker.log"
        worker = start(
            WORKER,
            process_env(tmp_path, OUTBOUND_ALLOWED_HOSTS=target.host),
            log,
        )
        try:
            assert wait_for(lambda: bool(current_app.control.ping(timeout=0.5)), timeout=60), log.read_text()[
                -3000:
            ]

            # A celery check: the worker consuming the queue answers.
            alive = make_check("queue-alive", kind="celery", queue=QUEUE, timeout_s=4, rise=1)
            recorded = services.run_now(check_id=alive.pk, actor=Actor())
            assert (recorded.result.ok, recorded.result.error, recorded.check.state) == (True, "", "healthy")
            assert recorded.result.latency_ms is not None and recorded.result.latency_ms < 4000

            # Nobody consumes this one.
            nobody = make_check("queue-nobody", kind="celery", queue="nobody-home", timeout_s=2)
            missing = services.run_now(check_id=nobody.pk, actor=Actor()).result
            assert missing.ok is False and "no worker consumes the queue 'nobody-home'" in missing.error

            # A due http check: the dispatcher sends its run, the worker runs it against the target.
            target.script(Answer(200, {"status": "green"}))
            http = make_check("api", kind="http", url=target.url("/health"), body_contains="green")
            due = timezone.now() - timedelta(seconds=1)
            HealthCheck.objects.filter(pk=http.pk).update(next_due_at=due)
            HealthCheck.objects.exclude(pk=http.pk).update(
                next_due_at=due + timedelta(hours=1)
            )  # only this one
            assert services.dispatch_due() == 1

            def recorded_by_worker() -> bool:
                return HealthCheckResult.objects.filter(health_check=http).exists()

            assert wait_for(recorded_by_worker, timeout=30), log.read_text()[-3000:]
            result = HealthCheckResult.objects.get(health_check=http)
            assert (result.ok, result.source, result.status_code, result.due_at) == (
                True,
                "scheduled",
                200,
                due,
            )
            assert result.started_at is not None and result.started_at >= due

            # The same due run delivered again: the worker finds its row and records nothing.
            assert services.send_run(http.pk, due, "scheduled", http.timeout_s)
            pattern = re.compile(r"run_check\[[^\]]+\] succeeded in [0-9.]+s: 'duplicate'")
            assert wait_for(lambda: bool(pattern.search(log.read_text())), timeout=30), log.read_text()[
                -3000:
            ]
            assert HealthCheckResult.objects.filter(health_check=http).count() == 1
            assert len(target.seen) == 1
        finally:
            stop(worker)

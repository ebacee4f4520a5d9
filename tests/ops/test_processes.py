"""Real processes: gunicorn workers sharing metrics, a Celery worker on Redis, JSON logs with request ids."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.utils import timezone

from recovery.errors import services as error_services
from recovery.errors.classification import ErrorReport
from recovery.errors.models import ErrorEvent
from tests.support import factories
from tests.support.processes import PYTHON, free_port, process_env, start, stop, wait_for, wait_http

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]


def _metric(text: str, name: str, labels: str) -> float:
    match = re.search(rf"^{re.escape(name)}{{{re.escape(labels)}}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_it_sums_metrics_across_gunicorn_workers(tmp_path: Path) -> None:
    _, key = factories.agent_key()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    port = free_port()
    env = process_env(
        tmp_path,
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS="3",
    )
    web = start(
        [PYTHON, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "config.wsgi"], env, tmp_path / "web.log"
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}
        ) as client:
            for n in range(30):
                # New connections spread the requests over the workers.
                response = httpx.post(
                    f"http://127.0.0.1:{port}/api/v1/errors",
                    json={"service": "svc", "status_code": 503, "message": f"down {n}"},
                    headers={"Authorization": f"Bearer {key}", "X-Request-ID": f"req-{n}"},
                )
                assert response.status_code == 201, response.text
            text = client.get("/metrics").text
        assert _metric(text, "errors_total", 'error_class="external_service",severity="high"') == 30.0
        assert len({p.name for p in metrics_dir.iterdir()}) > 1
    finally:
        stop(web)
    lines = [
        json.loads(line) for line in (tmp_path / "web.log").read_text().splitlines() if line.startswith("{")
    ]
    assert all("request_id" in line and "level" in line for line in lines)


def test_a_real_celery_worker_prunes_old_events_with_the_callers_request_id(tmp_path: Path) -> None:
    error_services.record_errors([ErrorReport(service="old", message="x")], agent=None)
    error_services.record_errors([ErrorReport(service="new", message="y")], agent=None)
    ErrorEvent.objects.filter(service="old").update(occurred_at=timezone.now() - timedelta(days=30))
    env = process_env(tmp_path)
    worker = start(
        [
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
            "-Q",
            "rebound-test",
        ],
        env,
        tmp_path / "worker.log",
    )
    try:
        from config.celery import app
        from core.infra.request_ids import set_request_id
        from recovery.errors.tasks import prune_error_events

        with app.connection_for_write(settings.TEST_REDIS_URL) as conn:
            set_request_id("prune-req-1")
            try:
                prune_error_events.apply_async(queue="rebound-test", connection=conn)
            finally:
                set_request_id(None)
        assert wait_for(lambda: not ErrorEvent.objects.filter(service="old").exists(), timeout=60), (
            tmp_path / "worker.log"
        ).read_text()[-3000:]
        assert ErrorEvent.objects.filter(service="new").count() == 1
        log = (tmp_path / "worker.log").read_text()
        assert wait_for(lambda: "prune-req-1" in (tmp_path / "worker.log").read_text(), timeout=10), log[
            -3000:
        ]
    finally:
        stop(worker)


def test_it_refuses_to_start_gunicorn_on_a_bad_environment(tmp_path: Path) -> None:
    env: Any = process_env(tmp_path, SECRET_KEY="short")
    port = free_port()
    env["GUNICORN_BIND"] = f"127.0.0.1:{port}"
    web = start(
        [PYTHON, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "config.wsgi"], env, tmp_path / "bad.log"
    )
    try:
        web.wait(timeout=30)
    finally:
        stop(web)
    assert web.returncode != 0
    assert "SECRET_KEY" in (tmp_path / "bad.log").read_text()

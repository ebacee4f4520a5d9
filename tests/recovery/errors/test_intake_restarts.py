"""Issue 11, item 23: a PostgreSQL restart under a steady intake loses nothing that was answered 201.

The real set-up of production: gunicorn and a Celery worker in production mode, the buffered intake on Redis
(the suite's own Redis database), and a PostgreSQL cluster of this test's own that the test restarts."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
from django.conf import settings

from core.infra import queue
from recovery.errors import intake
from tests.support.processes import PYTHON, ROOT, free_port, process_env, start, stop, wait_for, wait_http
from tests.support.servers import OwnPostgres

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    server = OwnPostgres()  # in a folder of its own under /tmp (see OwnPostgres)
    server.init()
    server.start()
    server.create_database("rebound")
    try:
        yield server
    finally:
        server.stop(mode="immediate")
        server.remove()


def _rows(server: OwnPostgres) -> tuple[int, int]:
    with psycopg.connect(server.database_url("rebound"), connect_timeout=5) as conn:
        events = conn.execute("SELECT count(*) FROM recovery_errorevent").fetchone()
        patterns = conn.execute("SELECT coalesce(sum(total_count), 0) FROM recovery_errorpattern").fetchone()
    return int(events[0] if events else 0), int(patterns[0] if patterns else 0)


class SteadyIntake:
    """Posts batches of 5 reports as fast as one client goes, counting the reports answered 201."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.accepted = 0
        self.answers: dict[int, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        with httpx.Client(headers={"Authorization": f"Bearer {self.key}"}, timeout=10) as client:
            while not self.stop.is_set():
                n += 1
                batch = [{"service": "svc", "status_code": 503, "message": f"down {n}.{i}"} for i in range(5)]
                try:
                    status = client.post(f"{self.url}/api/v1/errors", json=batch).status_code
                except httpx.HTTPError:
                    status = 0
                self.answers[status] = self.answers.get(status, 0) + 1
                if status == 201:
                    self.accepted += 5


def test_a_postgres_restart_under_load_loses_no_accepted_report(
    tmp_path: Path, own_postgres: OwnPostgres
) -> None:
    port = free_port()
    env = process_env(
        tmp_path,
        DATABASE_URL=own_postgres.database_url("rebound"),
        INTAKE_MODE="buffered",
        INTAKE_REQUIRE_DURABLE_REDIS="false",  # the suite's Redis keeps nothing on disk; not what is tested here
        API_KEY_CACHE_SECONDS="30",  # keys verified before the restart keep working through it
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS="2",
        GUNICORN_THREADS="4",
    )
    _manage(env, "migrate", "--no-input")
    key = _manage(env, "create_agent", "load").strip().splitlines()[-1]
    web = start(
        [PYTHON, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "config.wsgi"], env, tmp_path / "web.log"
    )
    worker = start(
        [PYTHON, "-m", "celery", "-A", "config", "worker", "--pool", "threads", "-c", "2", "-l", "INFO"],
        env,
        tmp_path / "worker.log",
    )
    load = SteadyIntake(f"http://127.0.0.1:{port}", key)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        load.thread.start()
        time.sleep(3)
        before = load.accepted
        own_postgres.restart(down_seconds=2.5)
        time.sleep(3)
        load.stop.set()
        load.thread.join(30)
        during = load.answers
        assert load.accepted > before > 0, during
        queue.send(intake.DRAIN_TASK)  # the last reports' drain may have been the one that waited
        drained = wait_for(lambda: _rows(own_postgres)[0] >= load.accepted, timeout=90, interval=1)
        events, counted = _rows(own_postgres)
        dead = redis.Redis.from_url(settings.TEST_REDIS_URL).xlen(intake.DEAD)
        print(
            f"\nanswers {during}; accepted {load.accepted} reports ({before} before the restart); "
            f"{events} events written, patterns count {counted}, {dead} dead letters"
        )
        assert drained, (tmp_path / "worker.log").read_text()[-4000:]
        assert dead == 0
        assert events == counted == load.accepted
        # The buffered intake rides the restart out: every request was answered 201 (keys and rules cached).
        assert set(during) == {201}, during
    finally:
        load.stop.set()
        stop(web)
        stop(worker)

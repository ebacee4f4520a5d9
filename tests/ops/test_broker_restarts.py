"""A real Celery worker on a Redis broker of the test's own, restarted under it (issue 11, item 29).

kombu closes the task channel twice when the connection is lost while Redis is down; the second close restored
the unacknowledged messages through a transport already detached from its connection and raised
AttributeError ('NoneType' object has no attribute 'hostname'), which stopped the worker ("Unrecoverable
error"). It happens when a task is running (one unacknowledged message) while the consumer waits on its BRPOP
for the next one: one task on a worker of two processes is exactly that.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from tests.support.processes import PYTHON, process_env, start, stop, wait_for
from tests.support.servers import OwnRedis

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

RESTARTS = 5


class Worker:
    """`celery -A config worker` (prefork, two processes) on `redis`, with the test tasks loaded."""

    def __init__(self, tmp_path: Path, redis: OwnRedis) -> None:
        self.log = tmp_path / "worker.log"
        self.marks = tmp_path / "marks"
        self.marks.touch()
        env = process_env(
            tmp_path, REDIS_URL=redis.url, CELERY_BROKER_URL=redis.url, REBOUND_TEST_MARKS=str(self.marks)
        )
        args = [PYTHON, "-m", "celery", "-A", "config", "worker", "-l", "INFO", "--concurrency", "2"]
        self.process: subprocess.Popen[Any] = start([*args, "-I", "tests.ops.worker_tasks"], env, self.log)
        self.sender = Celery("rebound-test-sender", broker=redis.url, set_as_current=False)

    def nap(self, seconds: float, mark: str) -> None:
        self.sender.send_task("tests.ops.nap", args=[seconds, mark])

    def marked(self, line: str) -> bool:
        return line in self.marks.read_text().splitlines()

    def done_by(self, mark: str) -> int | None:
        """The pid of the worker's main process that ran `mark` to its end (None: not yet)."""
        for line in self.marks.read_text().splitlines():
            if line.startswith(f"done {mark} "):
                return int(line.rsplit(" ", 1)[1])
        return None

    def connections(self) -> int:
        return self.log.read_text().count("Connected to redis://")

    def tail(self) -> str:
        return self.log.read_text()[-4000:]


def _restart_with_a_task_in_flight(redis: OwnRedis, worker: Worker, mark: str) -> None:
    """Restart Redis (SIGKILL: what it had not persisted is gone, as in a crash) while `mark` runs, then wait
    until the worker has connected again, or died."""
    connected = worker.connections()
    worker.nap(3, mark)
    assert wait_for(lambda: worker.marked(f"start {mark}"), timeout=30), worker.tail()
    redis.restart(down_seconds=0.5)
    assert wait_for(lambda: worker.connections() > connected or worker.process.poll() is not None, timeout=30)
    time.sleep(0.5)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def worker(tmp_path: Path, redis: OwnRedis) -> Iterator[Worker]:
    made = Worker(tmp_path, redis)
    yield made
    stop(made.process)


def test_it_keeps_the_worker_through_five_redis_restarts_with_a_task_in_flight(
    redis: OwnRedis, worker: Worker
) -> None:
    worker.nap(0, "warm-up")
    assert wait_for(lambda: worker.done_by("warm-up") is not None, timeout=60), worker.tail()
    pid = worker.process.pid

    for restart in range(1, RESTARTS + 1):
        _restart_with_a_task_in_flight(redis, worker, f"in-flight-{restart}")
        assert worker.process.poll() is None, f"the worker died at restart {restart}:\n{worker.tail()}"

    worker.nap(0, "after")
    assert wait_for(lambda: worker.done_by("after") is not None, timeout=60), worker.tail()
    assert worker.done_by("after") == pid
    assert worker.process.poll() is None
    assert "Unrecoverable error" not in worker.log.read_text()

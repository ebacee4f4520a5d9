"""`make run` (scripts/run, scripts/procman.py): the embedded mode stops gracefully on Ctrl-C and starts a
process that died again (issue 11, items 21 and 29).

The real script runs from this checkout with a data folder and a port of the test's own, from the suite's own
virtual environment (REBOUND_VENV: nothing is created or installed). Ctrl-C is a SIGINT to the script's
process group, as a terminal sends it. The manager's restart pauses and its stop timeout are checked with stub
processes, which take seconds rather than a minute.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import ROOT, free_port, wait_for, wait_http

pytestmark = pytest.mark.slow

RUN = ROOT / "scripts" / "run"
PROCMAN = ROOT / "scripts" / "procman.py"
# What the suite's environment sets for itself and the embedded mode must not see.
FOREIGN = (
    "REDIS_URL",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "REBOUND_MODE",
    "DJANGO_SETTINGS_MODULE",
    "DATA_DIR",
)


class Running:
    """A process started in a session of its own (its pid is its process group), output to a file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT) -> None:
        self.log = log
        self.process = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
        )

    def text(self) -> str:
        return self.log.read_text()

    def ctrl_c(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)

    def pids(self, name: str) -> list[int]:
        """The pids the manager started `name` with, in order."""
        return [int(pid) for pid in re.findall(rf"system \| {name} started \(pid (\d+)\)", self.text())]

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            raise AssertionError(f"still running after {timeout:g} s:\n{self.text()[-4000:]}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", *FOREIGN))}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def make_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, int]]:
    """scripts/run in embedded mode, answering on its port, its worker ready. One run for the module (starting
    one is half a minute): the worker is killed first, then the whole run stopped with Ctrl-C."""
    tmp_path = tmp_path_factory.mktemp("make_run")
    port = free_port()
    env = _clean_env(REBOUND_VENV=sys.prefix, DATA_DIR=str(tmp_path / "data"), PORT=str(port))
    running = Running([str(RUN)], env, tmp_path / "run.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=120)
        assert wait_for(lambda: "celery@" in running.text() and " ready." in running.text(), timeout=60), (
            running.text()[-4000:]
        )
        yield running, port
    finally:
        running.kill()


def test_it_starts_a_worker_killed_with_sigkill_again(make_run: tuple[Running, int]) -> None:
    running, port = make_run
    [first] = running.pids("worker")
    os.kill(first, signal.SIGKILL)

    assert wait_for(lambda: len(running.pids("worker")) == 2, timeout=30), running.text()[-4000:]
    second = running.pids("worker")[1]
    assert second != first
    assert "worker exited with -9: restarting in 1 s" in running.text()
    assert wait_for(lambda: running.text().count(" ready.") >= 2, timeout=60), running.text()[-4000:]
    # The rest carried on: one web, one beat, never restarted.
    assert len(running.pids("web")) == 1 and len(running.pids("beat")) == 1
    wait_http(f"http://127.0.0.1:{port}/healthz", timeout=10)


def test_it_stops_make_run_with_ctrl_c_gracefully_and_exits_0(make_run: tuple[Running, int]) -> None:
    running, _ = make_run
    before = len(running.text())  # what the run logged before the Ctrl-C (the killed worker's restart too)
    running.ctrl_c()
    assert running.wait(timeout=120) == 0, running.text()[-4000:]
    text = running.text()[before:]
    assert "worker: Warm shutdown" in text
    assert "Cold shutdown" not in text
    assert "SIGKILL" not in text and "killing" not in text
    assert re.search(r"stopped: web \(0\), worker \(0\), beat \(0\)", text), text[-2000:]


# --- the manager alone, on stub processes ---------------------------------------------------------------


def _procman(tmp_path: Path, procfile: str, *options: str) -> Running:
    (tmp_path / "Procfile").write_text(procfile)
    args = [sys.executable, str(PROCMAN), "-f", "Procfile", *options]
    return Running(args, _clean_env(), tmp_path / "procman.log", cwd=tmp_path)


def test_it_gives_up_on_a_process_that_cannot_start(tmp_path: Path) -> None:
    running = _procman(
        tmp_path,
        "steady: sleep 60\nbroken: sh -c 'exit 3'\n",
        "--first-backoff",
        "0.05",
        "--stop-timeout",
        "10",
    )
    assert running.wait(timeout=30) == 3
    text = running.text()
    assert len(running.pids("broken")) == 5
    assert "broken cannot start (5 quick exits, last 3): stopping" in text
    assert "stopped: steady (-15)" in text


def test_it_doubles_the_pause_between_restarts(tmp_path: Path) -> None:
    running = _procman(tmp_path, "crashing: sh -c 'exit 1'\n", "--first-backoff", "0.1")
    try:
        assert wait_for(lambda: len(running.pids("crashing")) >= 4, timeout=30), running.text()
        pauses = re.findall(r"crashing exited with 1: restarting in ([\d.]+) s", running.text())
        assert pauses[:3] == ["0.1", "0.2", "0.4"]
    finally:
        running.kill()


def test_it_kills_what_outlives_the_stop_timeout_and_says_so(tmp_path: Path) -> None:
    stubborn = "stubborn: sh -c 'trap \"\" TERM; while true; do sleep 0.1; done'\n"
    running = _procman(tmp_path, stubborn, "--stop-timeout", "1")
    assert wait_for(lambda: running.pids("stubborn"), timeout=10)
    running.ctrl_c()
    assert running.wait(timeout=30) == 1
    assert "killing stubborn" in running.text()

"""The fault-injecting loopback server (drill/loopback.py) as a real process: it prints its port, answers as the
schedule says, cuts connections while a service is down, logs every call and stops at its deadline."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from drill.scenario import parse

ROOT = Path(__file__).resolve().parents[2]

SCENARIO: dict[str, Any] = {
    "name": "loop",
    "agents": 1,
    "tasks_per_agent": 1,
    "duration_s": 5,
    "services": [
        {"name": "ok"},
        {"name": "dead", "faults": {"outages": [{"from_s": 0, "to_s": 600}]}},
        {"name": "auth", "faults": {"always_401": True}},
        {"name": "limited", "faults": {"rate_limit_rate": 1.0, "retry_after_s": 2}},
        {"name": "flaky", "faults": {"transient_rate": 1.0}},
    ],
    "tasks": [{"steps": ["ok"]}],
}


@contextmanager
def loopback(
    tmp_path: Path, scenario: dict[str, Any] | None = None, *, stop_in_s: float = 60
) -> Iterator[str]:
    """A loopback server process for the scenario (checked first), its t0 now; yields its base URL."""
    data = scenario or SCENARIO
    parse(data)
    config = tmp_path / "loopback.json"
    config.write_text(
        json.dumps({"scenario": data, "seed": 1, "t0": time.time(), "stop_at": time.time() + stop_in_s})
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "drill.loopback", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline().strip())
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def named(task: str = "t0-0", step: int = 0, attempt: int = 1) -> dict[str, str]:
    return {"X-Drill-Task": task, "X-Drill-Step": str(step), "X-Drill-Attempt": str(attempt)}


def calls(url: str) -> list[dict[str, Any]]:
    log: list[dict[str, Any]] = httpx.get(f"{url}/_drill/calls").json()["calls"]
    return log


@pytest.mark.slow
def test_it_answers_a_healthy_service(tmp_path: Path) -> None:
    with loopback(tmp_path) as url:
        answer = httpx.post(f"{url}/rebound/ok/call", headers=named())

    assert answer.status_code == 200
    assert answer.json()["service"] == "ok"


@pytest.mark.slow
def test_it_cuts_the_connection_of_a_service_that_is_down(tmp_path: Path) -> None:
    with loopback(tmp_path) as url:
        with pytest.raises(httpx.TransportError):
            httpx.post(f"{url}/naive/dead/call", headers=named())
        log = calls(url)

    assert log == [
        {"fleet": "naive", "service": "dead", "t_s": log[0]["t_s"], "ok": False, "status": None, "down": True}
    ]


@pytest.mark.slow
def test_it_answers_401_and_429_with_retry_after_and_503(tmp_path: Path) -> None:
    with loopback(tmp_path) as url:
        auth = httpx.post(f"{url}/rebound/auth/call", headers=named())
        limited = httpx.post(f"{url}/rebound/limited/call", headers=named())
        flaky = httpx.post(f"{url}/rebound/flaky/call", headers=named())

    assert (auth.status_code, limited.status_code, flaky.status_code) == (401, 429, 503)
    assert limited.headers["Retry-After"] == "2"


@pytest.mark.slow
def test_it_logs_every_call_with_its_fleet_and_outcome(tmp_path: Path) -> None:
    with loopback(tmp_path) as url:
        httpx.post(f"{url}/rebound/ok/call", headers=named())
        httpx.get(f"{url}/naive/flaky/call", headers=named())
        log = calls(url)

    assert [(c["fleet"], c["service"], c["ok"], c["status"], c["down"]) for c in log] == [
        ("rebound", "ok", True, 200, False),
        ("naive", "flaky", False, 503, False),
    ]
    assert all(c["t_s"] >= 0 for c in log)


@pytest.mark.slow
def test_it_answers_404_for_a_service_outside_the_scenario(tmp_path: Path) -> None:
    with loopback(tmp_path) as url:
        answer = httpx.post(f"{url}/rebound/ghost/call", headers=named())
        log = calls(url)

    assert answer.status_code == 404
    assert log == []


@pytest.mark.slow
def test_it_stops_by_itself_at_its_deadline(tmp_path: Path) -> None:
    with loopback(tmp_path, stop_in_s=1.0) as url:
        time.sleep(2.0)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/_drill/health", timeout=2)

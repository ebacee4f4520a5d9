"""The naive agent (drill/agent.py --fleet naive) as a real process against a real loopback server: tenacity's
three attempts show in the call log, and every task of its share leaves one record."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from drill import agent, faults
from drill.runner import read_tasks
from drill.scenario import parse
from rebound_client import Plan
from tests.drill.test_loopback import ROOT, loopback

SCENARIO: dict[str, Any] = {
    "name": "agent",
    "agents": 2,
    "tasks_per_agent": 3,
    "duration_s": 1,
    "drain_s": 20,
    "call_timeout_s": 2,
    "services": [
        {"name": "ok"},
        {"name": "flaky", "faults": {"transient_rate": 1.0}},
        {"name": "auth", "faults": {"always_401": True}},
    ],
    "tasks": [{"steps": ["ok", "flaky"]}, {"steps": ["ok"]}, {"steps": ["auth"]}],
}


def run_naive_agent(tmp_path: Path, url: str, *, agent: int = 0, deadline_s: float = 30) -> Path:
    t0 = time.time()
    result = tmp_path / f"naive-{agent}.jsonl"
    config = tmp_path / f"naive-{agent}.json"
    config.write_text(
        json.dumps(
            {
                "agent": agent,
                "scenario": SCENARIO,
                "seed": 5,
                "t0": t0,
                "deadline": t0 + deadline_s,
                "loopback_url": url,
                "result_path": str(result),
                "run_id": "test",
            }
        )
    )
    subprocess.run(
        [sys.executable, "-m", "drill.agent", "--fleet", "naive", "--config", str(config)],
        cwd=ROOT,
        check=True,
        timeout=deadline_s + 10,
    )
    return result


@pytest.mark.slow
def test_it_tries_a_failing_step_three_times_with_tenacity(tmp_path: Path) -> None:
    with loopback(tmp_path, SCENARIO) as url:
        result = run_naive_agent(tmp_path, url)
        log = httpx.get(f"{url}/_drill/calls").json()["calls"]

    planned = faults.tasks(parse(SCENARIO), 5, agent=0)
    failing = sum(1 for t in planned for s in t.steps if s in ("flaky", "auth"))
    assert failing  # the seed gives agent 0 at least one failing step
    assert sum(1 for c in log if c["service"] in ("flaky", "auth")) == 3 * failing
    assert {c["fleet"] for c in log} == {"naive"}
    for record in read_tasks(result):
        assert record.calls == expected_calls(record.steps)


def expected_calls(steps: tuple[str, ...]) -> int:
    """One call per healthy step, until the first failing step, which takes tenacity's three."""
    calls = 0
    for step in steps:
        if step == "ok":
            calls += 1
        else:
            return calls + 3
    return calls


@pytest.mark.slow
def test_it_writes_one_record_per_task_with_its_status(tmp_path: Path) -> None:
    with loopback(tmp_path, SCENARIO) as url:
        result = run_naive_agent(tmp_path, url, agent=1)

    records = read_tasks(result)
    planned = faults.tasks(parse(SCENARIO), 5, agent=1)
    assert [r.task_id for r in records] == [t.task_id for t in planned]
    for record, task in zip(records, planned, strict=True):
        ok = set(task.steps) == {"ok"}
        assert (record.fleet, record.steps, record.permanent) == ("naive", task.steps, task.permanent)
        assert record.status == ("completed" if ok else "failed")
        assert record.started_s is not None and record.ended_s is not None


@pytest.mark.slow
def test_it_records_unfinished_tasks_as_failed_at_the_deadline(tmp_path: Path) -> None:
    with loopback(tmp_path, SCENARIO) as url:
        result = run_naive_agent(tmp_path, url, deadline_s=1.5)

    records = read_tasks(result)
    assert sorted(r.task_id for r in records) == sorted(
        t.task_id for t in faults.tasks(parse(SCENARIO), 5, agent=0)
    )
    assert any(r.error == "deadline" and r.status == "failed" for r in records)


def planned(reason: str) -> Plan:
    return Plan.from_json({"plan_id": "p1", "action": "retry", "reason": reason, "delay_s": 1.0})


def test_it_marks_a_plan_learning_chose_or_timed_as_learned() -> None:
    chosen = agent.seen(
        planned("a transient error: fall back (position 2): learned for this pattern, 47 of 50"), "s"
    )
    timed = agent.seen(planned("retry in 3.8 s (learned: retries of this pattern worked 3.8 s after"), "s")

    assert (chosen.learned, timed.learned) == (True, True)
    assert (chosen.plan_id, chosen.service, chosen.action) == ("p1", "s", "retry")


def test_it_does_not_mark_a_plan_that_only_notes_its_figures() -> None:
    noted = agent.seen(
        planned("retry in 1 s, attempt 2 of 3; learned: retry recovered 45 of 50 for this pattern"), "s"
    )

    assert noted.learned is False


def test_it_skips_a_torn_last_line_of_a_result_file(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    whole = {
        "fleet": "naive",
        "agent": 0,
        "task_id": "t0-0",
        "steps": ["ok"],
        "permanent": False,
        "status": "completed",
    }
    path.write_text(json.dumps(whole) + "\n" + '{"fleet": "naive", "ag')

    assert [(r.task_id, r.steps) for r in read_tasks(path)] == [("t0-0", ("ok",))]

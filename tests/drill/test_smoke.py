"""The chaos drill end to end, as CI runs it: `manage.py drill --scenario smoke` as a process against a real
production-mode Rebound (gunicorn and a Celery worker with beat, on this run's PostgreSQL database and Redis
db), asserting the correctness goals only. The timings (MTTR, calls to the dead service) are measures a loaded
CI machine may miss; docs/drill.md reports them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.drill import live_rebound
from tests.support.processes import PYTHON, ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]


def test_it_completes_the_recoverable_tasks_and_escalates_exactly_the_permanent_failures(
    tmp_path: Path,
) -> None:
    answer = tmp_path / "drill.json"
    with live_rebound(tmp_path) as rebound:
        done = subprocess.run(
            [
                PYTHON,
                "manage.py",
                "drill",
                "--scenario",
                "smoke",
                "--url",
                rebound.url,
                "--api-key",
                rebound.agent_key,
                "--operator-key",
                rebound.operator_key,
                "--json",
                str(answer),
            ],
            cwd=ROOT,
            env=rebound.env,  # the server's database: the runner writes the fallback chains there
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    output = f"stdout:\n{done.stdout[-6000:]}\nstderr:\n{done.stderr[-3000:]}"
    assert done.returncode == 0, output
    report = json.loads(answer.read_text())
    ours = report["rebound"]
    assert ours["tasks_recoverable"] > 0, output
    assert ours["completion_ratio"] >= 0.995, output
    assert ours["permanent_failures"] > 0, output
    assert ours["permanent_escalated"] == ours["permanent_failures"], output
    assert ours["false_escalations"] == 0, output
    assert ours["lost_tasks"] == report["naive"]["lost_tasks"] == 0, output
    assert report["naive"]["tasks_total"] == ours["tasks_total"], output
    correctness = {name: g["met"] for name, g in report["goals"].items() if g["kind"] == "correctness"}
    assert correctness == dict.fromkeys(
        ("completion", "permanent_escalated", "false_escalations", "lost_tasks"), True
    )

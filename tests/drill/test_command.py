"""`manage.py drill` (drill/management/commands/drill.py): its argument errors, an unreachable Rebound, local
mode's keys, and how it drives the runner and writes the report. The runner itself is replaced by one that
returns hand-made runs (the real one is exercised end to end by test_smoke.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from core.access import keys
from core.access.models import Agent, ApiKey
from core.audit.models import AuditEvent
from drill.management.commands import drill as command
from drill.records import RunData
from drill.runner import DrillError, Target
from drill.scenario import shipped
from tests.support.drill import good_run, run_data, task
from tests.support.processes import PYTHON, ROOT, free_port, process_env


class FakeRunner:
    """Stands in for drill.runner.run: records each call and returns the next of `results`."""

    def __init__(self, *results: RunData | Exception) -> None:
        self.results = list(results)
        self.calls: list[dict[str, Any]] = []

    def __call__(self, scenario: Any, target: Target, **options: Any) -> RunData:
        self.calls.append({"scenario": scenario, "target": target, **options})
        result = self.results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> FakeRunner:
    fake = FakeRunner(good_run(), good_run())
    monkeypatch.setattr(command, "run", fake)
    monkeypatch.setattr(command, "check_reachable", lambda url: None)
    return fake


def drill(*args: str) -> str:
    out: list[str] = []

    class Sink:
        def write(self, text: str) -> None:
            out.append(text)

        def flush(self) -> None:
            pass

    call_command("drill", *args, stdout=Sink())
    return "".join(out)


def refusal(*args: str) -> CommandError:
    with pytest.raises(CommandError) as raised:
        drill(*args)
    return raised.value


# --- usage errors ------------------------------------------------------------------------------------------


def test_it_names_an_unknown_scenario_and_lists_the_shipped_ones() -> None:
    error = refusal("--scenario", "tsunami", "--api-key", "k")

    assert error.returncode == 2
    assert "'tsunami'" in str(error)
    assert {"smoke", "full"} <= set(shipped())
    assert all(name in str(error) for name in shipped())


def test_it_names_the_field_of_a_bad_scenario_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\nagents: 0\ntasks_per_agent: 1\nduration_s: 5\n"
        "services: [{name: a}]\ntasks: [{steps: [a]}]\n"
    )

    error = refusal("--scenario", str(path), "--api-key", "k")

    assert error.returncode == 2
    assert "agents" in str(error)


def test_it_refuses_an_operator_key_without_an_agent_key() -> None:
    error = refusal("--operator-key", "k")

    assert error.returncode == 2
    assert "--operator-key needs --api-key" in str(error)


def test_it_refuses_a_number_of_runs_out_of_range() -> None:
    error = refusal("--runs", "0", "--api-key", "k")

    assert error.returncode == 2
    assert "--runs" in str(error)


def test_it_exits_2_with_one_clear_line_when_rebound_does_not_answer() -> None:
    url = f"http://127.0.0.1:{free_port()}"

    error = refusal("--url", url, "--api-key", "k")

    assert error.returncode == 2
    assert f"Rebound does not answer at {url}" in str(error)


@pytest.mark.slow
def test_it_exits_2_without_a_traceback_from_the_command_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    done = subprocess.run(
        [PYTHON, "manage.py", "drill", "--url", url, "--api-key", "k"],
        cwd=ROOT,
        env=process_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.strip()] == [
        line for line in done.stderr.splitlines() if f"Rebound does not answer at {url}" in line
    ]


def test_it_exits_2_when_the_runner_cannot_run(runner: FakeRunner) -> None:
    runner.results = [DrillError("Rebound refused the agent key: /api/v1/me answered 401")]

    error = refusal("--api-key", "k")

    assert error.returncode == 2
    assert str(error) == "Rebound refused the agent key: /api/v1/me answered 401"


# --- local mode's keys -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_mints_an_agent_and_an_operator_with_keys_in_local_mode() -> None:
    minted = command.mint_local_keys()

    agent_row, user_row = minted.issued
    assert agent_row.agent == Agent.objects.get(name="drill-fleet")
    user = get_user_model().objects.get(username="drill")
    assert user_row.user == user
    assert set(user.groups.values_list("name", flat=True)) == {"operators", "reviewers"}
    assert keys.matches(minted.agent_key, ApiKey.objects.get(pk=agent_row.pk).key_hash)
    assert keys.matches(minted.operator_key, ApiKey.objects.get(pk=user_row.pk).key_hash)
    issued = AuditEvent.objects.filter(action="apikey.issue", source=AuditEvent.Source.CLI)
    assert issued.count() == 2


@pytest.mark.django_db
def test_it_reuses_the_agent_and_the_user_of_an_earlier_run() -> None:
    command.mint_local_keys()

    again = command.mint_local_keys()

    assert Agent.objects.filter(name="drill-fleet").count() == 1
    assert get_user_model().objects.filter(username="drill").count() == 1
    assert ApiKey.objects.filter(revoked_at__isnull=True).count() == 4
    assert again.agent_key != again.operator_key


@pytest.mark.django_db
def test_it_drives_the_runner_with_the_minted_keys_and_revokes_them_at_the_end(runner: FakeRunner) -> None:
    printed = drill("--seed", "1234")

    target = runner.calls[0]["target"]
    assert (target.url, runner.calls[0]["seed"], runner.calls[0]["fresh_learning"]) == (
        "http://127.0.0.1:8000",
        1234,
        True,
    )
    rows = ApiKey.objects.order_by("pk")
    assert (rows[0].agent_id, rows[1].user_id) == (
        Agent.objects.get(name="drill-fleet").pk,
        get_user_model().objects.get(username="drill").pk,
    )
    assert keys.matches(target.agent_key, rows[0].key_hash)
    assert keys.matches(str(target.operator_key), rows[1].key_hash)
    assert all(r.revoked_at is not None for r in rows)
    assert printed.startswith("seed 1234: repeat with --seed 1234\n")
    assert "local mode: minted keys" in printed


def test_it_skips_setup_with_an_agent_key_and_no_operator_key(runner: FakeRunner) -> None:
    drill("--api-key", "rb_agent", "--url", "http://rebound.example:8600/")

    target = runner.calls[0]["target"]
    assert target == Target(url="http://rebound.example:8600", agent_key="rb_agent", operator_key=None)


def test_it_uses_the_scenarios_seed_when_none_is_given(runner: FakeRunner) -> None:
    drill("--api-key", "a", "--operator-key", "o")

    assert runner.calls[0]["seed"] == runner.calls[0]["scenario"].seed


# --- runs and outputs --------------------------------------------------------------------------------------


def test_it_forgets_learning_before_the_first_of_two_runs_only(runner: FakeRunner) -> None:
    printed = drill("--api-key", "a", "--operator-key", "o", "--runs", "2")

    assert [c["fresh_learning"] for c in runner.calls] == [True, False]
    assert runner.calls[0]["workdir"] != runner.calls[1]["workdir"]
    assert "What learning changed" in printed


def test_it_keeps_what_was_learned_with_keep_learning(runner: FakeRunner) -> None:
    drill("--api-key", "a", "--operator-key", "o", "--runs", "2", "--keep-learning")

    assert [c["fresh_learning"] for c in runner.calls] == [False, False]


def test_it_writes_the_json_the_page_and_the_plot(runner: FakeRunner, tmp_path: Path) -> None:
    out = tmp_path / "docs"
    drill(
        "--api-key",
        "a",
        "--operator-key",
        "o",
        "--seed",
        "1234",
        "--json",
        str(out / "drill.json"),
        "--report",
        str(out / "drill.md"),
        "--plot",
        str(out / "img" / "drill.png"),
    )

    answer = json.loads((out / "drill.json").read_text())
    assert (answer["scenario"], answer["seed"], answer["passed"]) == ("smoke", 1234, True)
    assert answer["command"] == "python manage.py drill --scenario smoke --seed 1234"
    page = (out / "drill.md").read_text()
    assert "](img/drill.png)" in page
    assert (out / "img" / "drill.png").read_bytes()[:4] == b"\x89PNG"


def test_it_exits_1_when_a_correctness_goal_is_missed(runner: FakeRunner, tmp_path: Path) -> None:
    runner.results = [run_data([task("rebound", 0, "failed")])]

    error = refusal("--api-key", "a", "--json", str(tmp_path / "drill.json"))

    assert error.returncode == 1
    assert "correctness goals missed: completion" in str(error)
    assert json.loads((tmp_path / "drill.json").read_text())["passed"] is False

"""Scenarios as data (drill/scenario.py): the shipped ones load, a file loads by its suffix, and every mistake is
a ScenarioError naming its field. Pure: no server, no database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from drill import scenario
from drill.scenario import ScenarioError


def minimal(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "tiny",
        "agents": 1,
        "tasks_per_agent": 2,
        "duration_s": 2,
        "services": [{"name": "svc"}, {"name": "auth", "faults": {"always_401": True}}],
        "tasks": [{"steps": ["svc"]}],
    }
    data.update(changes)
    return data


def error_of(data: dict[str, Any]) -> ScenarioError:
    with pytest.raises(ScenarioError) as caught:
        scenario.parse(data)
    return caught.value


@pytest.mark.parametrize("name", ["smoke", "full"])
def test_it_loads_the_shipped_scenarios_by_name(name: str) -> None:
    loaded = scenario.load(name)

    assert loaded.name == name
    assert loaded.permanent_services == ("drill-auth",)
    assert any(s.faults.outages for s in loaded.services)


def test_it_sizes_the_shipped_scenarios_as_the_issue_asks() -> None:
    smoke, full = scenario.load("smoke"), scenario.load("full")

    assert (smoke.agents, full.agents) == (4, 20)
    assert smoke.deadline_s < 60
    assert [w.to_s - w.from_s for s in full.services for w in s.faults.outages] == [20]


def test_it_loads_a_json_file_by_its_suffix(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(minimal()))

    assert scenario.load(str(path)).name == "tiny"


def test_it_loads_a_yaml_file_by_its_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.yml"
    path.write_text(
        "name: tiny\nagents: 1\ntasks_per_agent: 1\nduration_s: 1\nservices: [{name: a}]\n"
        "tasks: [{steps: [a]}]\n"
    )

    assert scenario.load(path).services[0].name == "a"


def test_it_names_an_unknown_shipped_scenario() -> None:
    with pytest.raises(ScenarioError) as caught:
        scenario.load("nosuch")

    assert caught.value.field == "scenario"
    assert "smoke" in caught.value.reason


def test_it_names_a_file_that_is_not_valid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")

    with pytest.raises(ScenarioError) as caught:
        scenario.load(path)

    assert caught.value.field == "scenario"


def test_it_names_a_rate_out_of_range() -> None:
    data = minimal(services=[{"name": "svc", "faults": {"transient_rate": 1.5}}])

    assert error_of(data).field == "services.0.faults.transient_rate"


def test_it_names_an_unknown_field() -> None:
    assert error_of(minimal(agent=3)).field == "agent"


def test_it_names_an_unknown_breaker_setting() -> None:
    error = error_of(minimal(services=[{"name": "svc", "breaker": {"wait_s": 1}}]))

    assert error.field == "services.0"
    assert "wait_s" in error.reason


def test_it_refuses_a_task_step_naming_an_unknown_service() -> None:
    error = error_of(minimal(tasks=[{"steps": ["svc", "ghost"]}]))

    assert "ghost" in error.reason


def test_it_refuses_a_fallback_to_an_unknown_service() -> None:
    data = minimal(services=[{"name": "svc", "fallbacks": [{"kind": "service", "target": "ghost"}]}])

    assert "ghost" in error_of(data).reason


def test_it_refuses_an_outage_that_ends_before_it_starts() -> None:
    data = minimal(services=[{"name": "svc", "faults": {"outages": [{"from_s": 5, "to_s": 2}]}}])

    assert error_of(data).field == "services.0.faults.outages.0"

"""The fault schedule and the task list (drill/faults.py): pure functions of the scenario and the seed, the same
for both fleets whatever order the calls come in. No server, no database."""

from __future__ import annotations

from typing import Any

from drill import faults
from drill.scenario import ServiceSpec, load, parse


def service(**faults_: Any) -> ServiceSpec:
    return ServiceSpec.model_validate({"name": "svc", "faults": faults_})


def answers(spec: ServiceSpec, seed: int, calls: list[tuple[str, int, int]]) -> list[faults.Answer]:
    return [faults.answer(spec, seed, task_id=t, step=s, attempt=a, t_s=1.0) for t, s, a in calls]


CALLS = [(f"t{i % 7}-{i}", i % 3, 1 + i % 3) for i in range(400)]


def test_it_answers_a_call_the_same_whatever_the_order() -> None:
    spec = service(transient_rate=0.2, rate_limit_rate=0.1, slow_rate=0.1)

    forward = answers(spec, 7, CALLS)
    backward = answers(spec, 7, CALLS[::-1])[::-1]

    assert forward == backward


def test_it_draws_other_faults_for_another_seed() -> None:
    spec = service(transient_rate=0.3)

    assert answers(spec, 1, CALLS) != answers(spec, 2, CALLS)


def test_it_fails_about_the_rate_it_is_given() -> None:
    spec = service(transient_rate=0.2)

    failed = sum(a.status == faults.UNAVAILABLE for a in answers(spec, 3, CALLS))

    assert 50 <= failed <= 110


def test_it_cuts_every_call_while_the_service_is_down() -> None:
    spec = service(outages=[{"from_s": 10, "to_s": 30}], transient_rate=0.5)

    inside = faults.answer(spec, 1, task_id="t0-0", step=0, attempt=1, t_s=10.0)
    after = [faults.answer(spec, 1, task_id=t, step=s, attempt=a, t_s=30.0) for t, s, a in CALLS]

    assert (inside.status, inside.down) == (None, True)
    assert not any(a.down for a in after)


def test_it_answers_401_always_for_an_always_401_service() -> None:
    spec = service(always_401=True, outages=[{"from_s": 0, "to_s": 100}])

    assert {a.status for a in answers(spec, 5, CALLS)} == {faults.UNAUTHORIZED}


def test_it_sends_retry_after_with_every_429() -> None:
    spec = service(rate_limit_rate=0.5, retry_after_s=2.5)

    limited = [a for a in answers(spec, 9, CALLS) if a.status == faults.RATE_LIMITED]

    assert limited
    assert {a.retry_after_s for a in limited} == {2.5}


def test_it_slows_calls_without_failing_them() -> None:
    spec = service(slow_rate=1.0, slow_s=0.7)

    assert {(a.status, a.delay_s) for a in answers(spec, 1, CALLS[:20])} == {(200, 0.7)}


def test_it_holds_a_tasks_failures_for_hold_s() -> None:
    spec = service(transient_rate=1.0, hold_s=3.0)
    first = faults.answer(spec, 1, task_id="t0-0", step=0, attempt=1, t_s=5.0)
    clean = service(hold_s=3.0)

    during = faults.answer(
        clean, 1, task_id="t0-0", step=0, attempt=2, t_s=7.9, held_until_s=first.hold_until_s
    )
    later = faults.answer(
        clean, 1, task_id="t0-0", step=0, attempt=3, t_s=8.1, held_until_s=first.hold_until_s
    )

    assert (first.status, first.hold_until_s) == (faults.UNAVAILABLE, 8.0)
    assert (during.status, during.why) == (faults.UNAVAILABLE, "held")
    assert later.ok


def test_it_plans_the_same_tasks_for_a_seed() -> None:
    scenario = load("smoke")

    assert faults.tasks(scenario, 3) == faults.tasks(scenario, 3)
    assert faults.tasks(scenario, 3) != faults.tasks(scenario, 4)


def test_it_plans_each_agents_share_in_start_order() -> None:
    scenario = load("smoke")

    planned = faults.tasks(scenario, 3, agent=1)

    assert [t.task_id for t in planned] == [f"t1-{i}" for i in range(scenario.tasks_per_agent)]
    assert [t.start_s for t in planned] == sorted(t.start_s for t in planned)
    assert all(0 <= t.start_s < scenario.duration_s for t in planned)


def test_it_marks_tasks_calling_an_always_401_service_permanent() -> None:
    scenario = parse(
        {
            "name": "p",
            "agents": 2,
            "tasks_per_agent": 20,
            "duration_s": 10,
            "services": [{"name": "ok"}, {"name": "auth", "faults": {"always_401": True}}],
            "tasks": [{"steps": ["ok"]}, {"steps": ["ok", "auth"]}],
        }
    )

    planned = faults.tasks(scenario, 1)

    assert {t.permanent for t in planned} == {True, False}
    assert all(t.permanent == ("auth" in t.steps) for t in planned)

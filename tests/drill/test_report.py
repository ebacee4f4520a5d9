"""The drill's report from hand-made runs: the figures per fleet, the goals, the learning effect of two runs and
the three renderings (drill/report.py). Pure: no server, no database."""

from __future__ import annotations

import json
from dataclasses import replace

from drill import report
from drill.records import Outage, PlanSeen
from tests.support.drill import call, escalation, good_run, plan, run_data, task


def goal(built: report.RunReport, name: str) -> report.Goal:
    return next(g for g in built.goals if g.name == name)


def test_it_counts_the_recoverable_tasks_each_fleet_completed() -> None:
    built = report.run_report(good_run())

    assert (built.rebound.tasks_total, built.rebound.tasks_recoverable, built.rebound.tasks_completed) == (
        5,
        4,
        4,
    )
    assert (built.naive.tasks_completed, built.naive.completion_ratio) == (2, 0.5)
    assert built.rebound.completion_ratio == 1.0


def test_it_counts_a_partial_task_as_completed() -> None:
    run = run_data([task("rebound", 0, partial=True), task("rebound", 1, "failed")])

    figures = report.fleet_figures(run, "rebound")

    assert (figures.tasks_completed, figures.tasks_partial, figures.completion_ratio) == (1, 1, 0.5)


def test_it_measures_mttr_of_the_worst_outage_from_its_end_to_the_first_ok_call() -> None:
    outages = (Outage("payments", 10.0, 30.0), Outage("search", 5.0, 8.0))
    calls = [
        call("rebound", "payments", 29.0),  # before the end: not a recovery
        call("rebound", "payments", 30.5, False),  # after, but failed
        call("rebound", "payments", 31.25),
        call("rebound", "search", 12.0),
        call("rebound", "search", 9.0),
    ]

    figures = report.fleet_figures(run_data(calls=calls, outages=outages), "rebound")

    assert [o.mttr_s for o in figures.outages] == [1.25, 1.0]
    assert figures.mttr_s == 1.25


def test_it_has_no_mttr_and_misses_the_goal_when_the_fleet_never_called_the_service_again() -> None:
    run = run_data(calls=[call("rebound", "payments", 12.0, False, down=True)])

    built = report.run_report(run)

    assert built.rebound.mttr_s is None
    assert (goal(built, "mttr").met, goal(built, "mttr").kind) == (False, "measure")


def test_it_counts_each_fleets_calls_to_the_dead_service_while_it_was_down() -> None:
    built = report.run_report(good_run())

    assert (built.rebound.dead_service_calls, built.naive.dead_service_calls) == (1, 20)
    assert (built.rebound.calls_total, built.naive.calls_total) == (3, 21)


def test_it_counts_a_permanent_task_escalated_only_when_the_queue_shows_its_service() -> None:
    tasks = [task("rebound", 0, "escalated", steps=("legacy",), permanent=True)]

    unseen = report.run_report(run_data(tasks, escalations=[]))
    seen = report.run_report(run_data(tasks, escalations=[escalation("legacy")]))

    assert (unseen.rebound.permanent_failures, unseen.rebound.permanent_escalated) == (1, 0)
    assert goal(unseen, "permanent_escalated").met is False
    assert seen.rebound.permanent_escalated == 1
    assert goal(seen, "permanent_escalated").met is True


def test_it_counts_false_escalations_from_the_queue_and_from_recoverable_tasks() -> None:
    tasks = [task("rebound", 0, "escalated", steps=("payments",))]
    queue = [escalation("payments", 1), escalation("legacy", 2)]

    built = report.run_report(run_data(tasks, escalations=queue))

    assert built.rebound.false_escalations == 2  # payments in the queue, and the recoverable task escalated
    assert goal(built, "false_escalations").met is False
    assert built.naive.false_escalations == 0


def test_it_counts_manual_interventions_as_escalations_for_rebound_and_failures_for_naive() -> None:
    built = report.run_report(good_run())

    assert built.rebound.manual_interventions == 1
    assert built.naive.manual_interventions == 3
    assert built.naive.manual_intervention_ratio == 0.6


def test_it_counts_plans_by_action_and_those_learning_chose() -> None:
    plans = (plan("retry", learned=True), plan("retry"), plan("fallback", learned=True))
    run = run_data([task("rebound", 0, plans=plans)])

    figures = report.fleet_figures(run, "rebound")

    assert figures.plans_by_action == {"fallback": 1, "retry": 2}
    assert (figures.plans_total, figures.plans_learned, figures.retries_planned) == (3, 2, 2)


def test_it_meets_every_goal_of_a_good_run() -> None:
    built = report.build([good_run()], "python manage.py drill --scenario smoke --seed 1234")

    assert {g.name: g.met for g in built.last.goals} == {
        "completion": True,
        "permanent_escalated": True,
        "false_escalations": True,
        "lost_tasks": True,
        "mttr": True,
        "dead_service_calls": True,
    }
    assert goal(built.last, "dead_service_calls").value == 0.05
    assert report.exit_code(built) == 0


def test_it_fails_when_fewer_than_99_5_percent_of_the_recoverable_tasks_complete() -> None:
    tasks = [task("rebound", n) for n in range(199)] + [task("rebound", 199, "failed")]

    built = report.build([run_data(tasks)], "cmd")

    assert goal(built.last, "completion").value == 0.995
    assert goal(built.last, "completion").met is True
    worse = report.build([run_data([*tasks[:198], task("rebound", 198, "failed"), tasks[-1]])], "cmd")
    assert goal(worse.last, "completion").met is False
    assert report.missed_correctness(worse) == ["completion"]
    assert report.exit_code(worse) == 1


def test_it_fails_when_a_task_of_either_fleet_is_lost() -> None:
    built = report.build([run_data([task("naive", 0, "lost", ended_s=None)])], "cmd")

    assert built.last.naive.lost_tasks == 1
    assert report.missed_correctness(built) == ["lost_tasks"]


def test_it_reports_too_many_dead_service_calls_as_a_missed_measure_that_does_not_fail_the_drill() -> None:
    calls = [call("rebound", "payments", 11.0 + n / 10, False, down=True) for n in range(2)]
    calls += [call("naive", "payments", 11.0 + n / 10, False, down=True) for n in range(20)]
    calls += [call(fleet, "payments", 31.0) for fleet in ("rebound", "naive")]

    built = report.build([run_data(calls=calls)], "cmd")

    dead = goal(built.last, "dead_service_calls")
    assert (dead.value, dead.met, dead.kind) == (0.1, False, "measure")
    assert report.exit_code(built) == 0


def test_it_writes_the_json_keys_the_issue_names() -> None:
    built = report.build([good_run()], "python manage.py drill --scenario smoke --seed 1234")

    answer = json.loads(json.dumps(report.to_json(built)))

    assert {"scenario", "seed", "runs", "rebound", "naive", "goals", "learning_effect", "per_run"} <= set(
        answer
    )
    assert (answer["scenario"], answer["seed"], answer["runs"], answer["learning_effect"]) == (
        "smoke",
        1234,
        1,
        None,
    )
    for fleet in ("rebound", "naive"):
        assert {
            "tasks_total",
            "tasks_recoverable",
            "tasks_completed",
            "completion_ratio",
            "mttr_s",
            "dead_service_calls",
            "permanent_failures",
            "permanent_escalated",
            "false_escalations",
            "manual_interventions",
            "lost_tasks",
            "calls_total",
        } <= set(answer[fleet])
    assert answer["goals"]["completion"] == {
        "target": "≥ 99.5% of the recoverable tasks complete",
        "value": 1.0,
        "met": True,
        "kind": "correctness",
    }
    assert answer["rebound"]["mttr_s"] == 1.5
    assert len(answer["per_run"]) == 1


def test_it_reports_what_learning_changed_between_two_runs() -> None:
    first = good_run()
    learned = [
        replace(t, plans=(plan("fallback", learned=True),), ended_s=2.0) if t.fleet == "rebound" else t
        for t in first.tasks
    ]
    second = replace(first, tasks=learned, calls=[c for c in first.calls if c.t_s != 11.0])

    built = report.build([first, second], "cmd")

    changes = {c.name: (c.before, c.after, c.change) for c in built.learning or ()}
    assert changes["plans_learned"] == (0, 5, 5)
    assert changes["dead_service_calls"] == (1, 0, -1)
    assert changes["calls_total"] == (3, 2, -1)
    assert changes["mean_task_s"] == (2.0, 1.0, -1.0)
    assert report.to_json(built)["learning_effect"]["completion_ratio"] == {
        "before": 1.0,
        "after": 1.0,
        "change": 0.0,
    }


def test_it_lists_the_plans_learning_changed_by_service_and_action_with_a_reason() -> None:
    timed = PlanSeen("p1", "ledger", "retry", reason="retry in 3 s (learned: ...)", learned=True)
    stood = PlanSeen("p2", "ledger", "retry", reason="retry in 1 s", learned=False)
    run = run_data([task("rebound", 0, plans=(timed, stood)), task("rebound", 1, plans=(timed,))])

    assert report.learned_plans(run) == [("ledger", "retry", 2, "retry in 3 s (learned: ...)")]
    page = report.markdown(report.build([good_run(), run], "cmd"))
    assert "| ledger | retry | 2 | `retry in 3 s (learned: ...)` |" in page


def test_it_fails_the_report_when_a_correctness_goal_of_the_first_of_two_runs_is_missed() -> None:
    broken = run_data([task("rebound", 0, "failed")])

    built = report.build([broken, good_run()], "cmd")

    assert report.missed_correctness(built) == ["run 1: completion"]
    assert report.to_json(built)["passed"] is False
    assert report.to_json(built)["goals"]["completion"]["met"] is True  # the headline is the last run's


def test_it_renders_the_page_with_the_command_the_tables_the_goals_the_plot_and_the_notes() -> None:
    run = replace(good_run(), notes=["learning reset: 404 (not deployed yet)"])
    built = report.build([run, good_run()], "python manage.py drill --scenario smoke --seed 1234 --runs 2")

    page = report.markdown(built, "img/drill.png")

    assert page.startswith("# The chaos drill")
    assert "python manage.py drill --scenario smoke --seed 1234 --runs 2" in page
    assert "| recoverable tasks completed | 4 of 4 (100.0%) | 2 of 4 (50.0%) |" in page
    assert "| no false escalation | correctness | 0 | met |" in page
    assert "![Tasks completed and calls to the dead service over time](img/drill.png)" in page
    assert "## What learning changed" in page
    assert "- run 1: learning reset: 404 (not deployed yet)" in page
    assert "Every correctness goal was met." in page


def test_it_prints_both_fleets_side_by_side_and_the_missed_goals() -> None:
    built = report.build([run_data([task("rebound", 0, "failed"), task("naive", 0)])], "cmd")

    printed = report.text(built)

    line = next(line for line in printed.splitlines() if line.startswith("recoverable tasks completed"))
    assert line.split()[-8:] == ["0", "of", "1", "(0.0%)", "1", "of", "1", "(100.0%)"]
    assert "MISSED" in printed
    assert printed.rstrip().endswith("Correctness goals missed: completion")

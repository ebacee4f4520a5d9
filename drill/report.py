"""The drill's report, pure: from the RunData of one or more runs (drill/records.py) to the figures of each fleet,
the goals (met or missed), the learning effect of a second run, and three renderings: the text printed by
`manage.py drill`, the markdown page (docs/drill.md) and the JSON dict of `--json`. No I/O, no Django."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from drill.records import Fleet, RunData, TaskRecord

# The goals. Completion and the escalations are correctness (the command fails when one is missed);
# the timings and the calls spent are measures (reported, never failing a run: a loaded machine must not
# turn a correct Rebound into a failed CI job).
COMPLETION_GOAL = 0.995
MTTR_GOAL_S = 5.0
DEAD_CALLS_GOAL = 0.05  # rebound's calls to the dead service, as a share of the naive fleet's

GoalKind = Literal["correctness", "measure"]
NONE = "-"  # a figure that does not apply


@dataclass(frozen=True)
class OutageRecovery:
    service: str
    from_s: float
    to_s: float
    mttr_s: float | None  # None: the fleet never called the service successfully after it came back


@dataclass(frozen=True)
class FleetFigures:
    """One fleet's figures of one run. The first fields are the JSON keys the issue names."""

    tasks_total: int
    tasks_recoverable: int
    tasks_completed: int
    completion_ratio: float
    mttr_s: float | None
    dead_service_calls: int
    permanent_failures: int
    permanent_escalated: int
    false_escalations: int
    manual_interventions: int
    lost_tasks: int
    calls_total: int
    # Beyond the list: what the tables and the learning effect use.
    tasks_partial: int
    tasks_failed: int
    tasks_escalated: int
    manual_intervention_ratio: float
    mean_task_s: float | None  # over the recoverable tasks that completed
    plans_total: int
    plans_by_action: dict[str, int]
    plans_learned: int  # plans whose reason says learning chose or timed them
    retries_planned: int
    outages: tuple[OutageRecovery, ...]


@dataclass(frozen=True)
class Goal:
    name: str
    target: str
    value: float | int | None
    met: bool
    kind: GoalKind


@dataclass(frozen=True)
class RunReport:
    data: RunData
    rebound: FleetFigures
    naive: FleetFigures
    goals: tuple[Goal, ...]

    def fleet(self, fleet: Fleet) -> FleetFigures:
        return self.rebound if fleet == "rebound" else self.naive


@dataclass(frozen=True)
class Change:
    """One figure of the rebound fleet, run 1 (learning forgotten) → run 2 (with what run 1 learned)."""

    name: str
    label: str
    before: float | int | None
    after: float | int | None

    @property
    def change(self) -> float | int | None:
        if self.before is None or self.after is None:
            return None
        return self.after - self.before


@dataclass(frozen=True)
class Report:
    scenario: str
    seed: int
    command: str  # how to repeat the run exactly
    runs: tuple[RunReport, ...]
    learning: tuple[Change, ...] | None  # None with a single run

    @property
    def last(self) -> RunReport:
        """The run the headline figures come from: with two runs, the one that had learning to use."""
        return self.runs[-1]


# --- figures ---------------------------------------------------------------------------------------------


def fleet_figures(run: RunData, fleet: Fleet) -> FleetFigures:
    tasks = [t for t in run.tasks if t.fleet == fleet]
    calls = [c for c in run.calls if c.fleet == fleet]
    recoverable = [t for t in tasks if not t.permanent]
    completed = [t for t in recoverable if t.status == "completed"]
    permanent = [t for t in tasks if t.permanent]
    escalated_services = {e.service for e in run.escalations}
    outages = tuple(_recovery(run, fleet, o.service, o.from_s, o.to_s) for o in run.outages)
    plans = [p for t in tasks for p in t.plans]
    by_action = Counter(p.action for p in plans)
    if fleet == "rebound":
        # A permanent task counts as escalated only if the queue really shows its service: an agent saying
        # "escalated" is not enough, the human must be able to find it.
        permanent_escalated = sum(
            1 for t in permanent if t.status == "escalated" and _permanent_steps(run, t) & escalated_services
        )
        wrong_queue = sum(1 for e in run.escalations if e.service not in run.permanent_services)
        manual = sum(1 for t in tasks if t.status == "escalated")
    else:
        # The naive fleet has no queue: nothing it gives up on is escalated, and every task it fails is one
        # a human must find by themselves.
        permanent_escalated = 0
        wrong_queue = 0
        manual = sum(1 for t in tasks if t.status == "failed" or t.permanent)
    durations = [
        t.ended_s - t.started_s for t in completed if t.started_s is not None and t.ended_s is not None
    ]
    return FleetFigures(
        tasks_total=len(tasks),
        tasks_recoverable=len(recoverable),
        tasks_completed=len(completed),
        completion_ratio=_ratio(len(completed), len(recoverable)),
        mttr_s=_worst([o.mttr_s for o in outages]),
        dead_service_calls=sum(1 for c in calls if c.down),
        permanent_failures=len(permanent),
        permanent_escalated=permanent_escalated,
        false_escalations=wrong_queue + sum(1 for t in recoverable if t.status == "escalated"),
        manual_interventions=manual,
        lost_tasks=sum(1 for t in tasks if t.status == "lost"),
        calls_total=len(calls),
        tasks_partial=sum(1 for t in completed if t.partial),
        tasks_failed=sum(1 for t in tasks if t.status == "failed"),
        tasks_escalated=sum(1 for t in tasks if t.status == "escalated"),
        manual_intervention_ratio=_ratio(manual, len(tasks), empty=0.0),
        mean_task_s=round(sum(durations) / len(durations), 3) if durations else None,
        plans_total=len(plans),
        plans_by_action=dict(sorted(by_action.items())),
        plans_learned=sum(1 for p in plans if p.learned),
        retries_planned=by_action.get("retry", 0),
        outages=outages,
    )


def _permanent_steps(run: RunData, task: TaskRecord) -> set[str]:
    return set(task.steps) & set(run.permanent_services)


def _recovery(run: RunData, fleet: Fleet, service: str, from_s: float, to_s: float) -> OutageRecovery:
    """The first successful call of the fleet to the service at or after it came back, minus that moment."""
    after = [c.t_s for c in run.calls if c.fleet == fleet and c.service == service and c.ok and c.t_s >= to_s]
    mttr = round(min(after) - to_s, 3) if after else None
    return OutageRecovery(service=service, from_s=from_s, to_s=to_s, mttr_s=mttr)


def _worst(values: list[float | None]) -> float | None:
    """The worst outage's time to recover; None when any outage was never recovered from (a missed goal)."""
    if any(v is None for v in values):
        return None
    present = [v for v in values if v is not None]
    return max(present) if present else 0.0


def _ratio(part: int, whole: int, empty: float = 1.0) -> float:
    # No recoverable task at all: nothing was left undone, the goal is met vacuously.
    return round(part / whole, 4) if whole else empty


# --- goals -----------------------------------------------------------------------------------------------


def goals(run: RunData, rebound: FleetFigures, naive: FleetFigures) -> tuple[Goal, ...]:
    escalated_share = _ratio(rebound.permanent_escalated, rebound.permanent_failures)
    lost = rebound.lost_tasks + naive.lost_tasks
    if naive.dead_service_calls:
        dead_share: float | None = round(rebound.dead_service_calls / naive.dead_service_calls, 4)
        dead_met = dead_share is not None and dead_share <= DEAD_CALLS_GOAL
    else:
        # The naive fleet never hit the dead service (no outage, or no task reached it): rebound must not have.
        dead_share = None
        dead_met = rebound.dead_service_calls == 0
    mttr_met = (rebound.mttr_s is not None and rebound.mttr_s <= MTTR_GOAL_S) if run.outages else True
    return (
        Goal(
            "completion",
            f"≥ {COMPLETION_GOAL:.1%} of the recoverable tasks complete",
            rebound.completion_ratio,
            rebound.completion_ratio >= COMPLETION_GOAL,
            "correctness",
        ),
        Goal(
            "permanent_escalated",
            "100% of the permanent failures escalated through the queue",
            escalated_share,
            rebound.permanent_escalated == rebound.permanent_failures,
            "correctness",
        ),
        Goal(
            "false_escalations",
            "no false escalation",
            rebound.false_escalations,
            rebound.false_escalations == 0,
            "correctness",
        ),
        Goal("lost_tasks", "no lost task (either fleet)", lost, lost == 0, "correctness"),
        Goal(
            "mttr",
            f"MTTR ≤ {MTTR_GOAL_S:g} s after the dependency returns",
            rebound.mttr_s,
            mttr_met,
            "measure",
        ),
        Goal(
            "dead_service_calls",
            f"calls to the dead service ≤ {DEAD_CALLS_GOAL:.0%} of the naive fleet's",
            dead_share,
            dead_met,
            "measure",
        ),
    )


def run_report(run: RunData) -> RunReport:
    rebound, naive = fleet_figures(run, "rebound"), fleet_figures(run, "naive")
    return RunReport(data=run, rebound=rebound, naive=naive, goals=goals(run, rebound, naive))


def build(runs: Sequence[RunData], command: str) -> Report:
    """The report of one run, or of two runs of the same scenario and seed (the second with what the first
    learned)."""
    if not runs:
        raise ValueError("a report needs at least one run")
    reports = tuple(run_report(run) for run in runs)
    learning = learning_effect(reports[0].rebound, reports[-1].rebound) if len(reports) > 1 else None
    return Report(
        scenario=runs[-1].scenario, seed=runs[-1].seed, command=command, runs=reports, learning=learning
    )


def learning_effect(before: FleetFigures, after: FleetFigures) -> tuple[Change, ...]:
    """What learning changed for the rebound fleet between a run with nothing learned and the next one."""
    rows: list[tuple[str, str]] = [
        ("completion_ratio", "recoverable tasks completed"),
        ("calls_total", "calls spent in all"),
        ("dead_service_calls", "calls to the dead service while down"),
        ("retries_planned", "retries planned"),
        ("plans_learned", "plans that learning chose or timed"),
        ("mean_task_s", "mean task time (s)"),
    ]
    return tuple(Change(name, label, getattr(before, name), getattr(after, name)) for name, label in rows)


def missed_correctness(report: Report) -> list[str]:
    """The correctness goals missed, in any run ("run 2: completion"); empty when the drill passed."""
    missed = []
    for index, run in enumerate(report.runs, start=1):
        prefix = f"run {index}: " if len(report.runs) > 1 else ""
        missed += [f"{prefix}{g.name}" for g in run.goals if g.kind == "correctness" and not g.met]
    return missed


def exit_code(report: Report) -> int:
    return 1 if missed_correctness(report) else 0


# --- JSON ------------------------------------------------------------------------------------------------


def fleet_json(figures: FleetFigures) -> dict[str, Any]:
    return asdict(figures)


def goals_json(found: Sequence[Goal]) -> dict[str, dict[str, Any]]:
    return {g.name: {"target": g.target, "value": g.value, "met": g.met, "kind": g.kind} for g in found}


def run_json(run: RunReport, index: int) -> dict[str, Any]:
    data = run.data
    return {
        "run": index,
        "t0": data.t0,
        "duration_s": data.duration_s,
        "ended_s": data.ended_s,
        "agents_per_fleet": data.agents_per_fleet,
        "outages": [asdict(o) for o in data.outages],
        "permanent_services": list(data.permanent_services),
        "rebound": fleet_json(run.rebound),
        "naive": fleet_json(run.naive),
        "goals": goals_json(run.goals),
        "escalations": [asdict(e) for e in data.escalations],
        "notes": list(data.notes),
    }


def to_json(report: Report) -> dict[str, Any]:
    """`--json`: the headline (the last run's figures and goals) and each run in `per_run`."""
    last = report.last
    learning = None
    if report.learning is not None:
        learning = {
            c.name: {"before": c.before, "after": c.after, "change": c.change} for c in report.learning
        }
    return {
        "scenario": report.scenario,
        "seed": report.seed,
        "command": report.command,
        "runs": len(report.runs),
        "rebound": fleet_json(last.rebound),
        "naive": fleet_json(last.naive),
        "goals": goals_json(last.goals),
        "passed": not missed_correctness(report),
        "learning_effect": learning,
        "per_run": [run_json(run, i) for i, run in enumerate(report.runs, start=1)],
    }


# --- the tables, shared by the text and the markdown ----------------------------------------------------


def _pct(value: float | None) -> str:
    return NONE if value is None else f"{value:.1%}"


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def _of(part: int, whole: int) -> str:
    return f"{part} of {whole} ({_ratio(part, whole):.1%})" if whole else f"{part} of 0"


Row = tuple[str, Callable[[FleetFigures], str]]

ROWS: tuple[Row, ...] = (
    ("tasks", lambda f: str(f.tasks_total)),
    ("recoverable tasks completed", lambda f: _of(f.tasks_completed, f.tasks_recoverable)),
    ("  of which partial (a step degraded)", lambda f: str(f.tasks_partial)),
    ("tasks failed (nobody told)", lambda f: str(f.tasks_failed)),
    ("tasks escalated", lambda f: str(f.tasks_escalated)),
    ("tasks lost", lambda f: str(f.lost_tasks)),
    ("MTTR after the outage", lambda f: _seconds(f.mttr_s) if f.outages else "no outage"),
    ("calls to the dead service while down", lambda f: str(f.dead_service_calls)),
    ("calls in all", lambda f: str(f.calls_total)),
    ("permanent failures escalated", lambda f: _of(f.permanent_escalated, f.permanent_failures)),
    ("false escalations", lambda f: str(f.false_escalations)),
    ("manual interventions", lambda f: f"{f.manual_interventions} ({_pct(f.manual_intervention_ratio)})"),
    ("mean task time (completed)", lambda f: NONE if f.mean_task_s is None else f"{f.mean_task_s:.2f} s"),
    ("recovery plans followed", lambda f: _plans(f)),
    ("plans learning chose or timed", lambda f: str(f.plans_learned)),
)


def _plans(figures: FleetFigures) -> str:
    if not figures.plans_total:
        return "0"
    detail = ", ".join(f"{action} {n}" for action, n in figures.plans_by_action.items())
    return f"{figures.plans_total} ({detail})"


def _value(goal: Goal) -> str:
    if goal.value is None:
        return "never" if goal.name == "mttr" else NONE
    if goal.name in ("completion", "permanent_escalated", "dead_service_calls"):
        return _pct(float(goal.value))
    if goal.name == "mttr":
        return _seconds(float(goal.value))
    return str(goal.value)


def _verdict(goal: Goal) -> str:
    return "met" if goal.met else "MISSED"


def _number(value: float | int | None, name: str) -> str:
    if value is None:
        return NONE
    if name == "completion_ratio":
        return _pct(float(value))
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _signed(change: float | int | None, name: str) -> str:
    if change is None:
        return NONE
    if name == "completion_ratio":
        return f"{change * 100:+.1f} points"
    if isinstance(change, float):
        return f"{change:+.2f}"
    return f"{change:+d}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _aligned(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    out = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(header)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    return out + ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def _fleet_rows(run: RunReport) -> list[list[str]]:
    return [[label, show(run.rebound), show(run.naive)] for label, show in ROWS]


def _goal_rows(run: RunReport) -> list[list[str]]:
    return [[g.target, g.kind, _value(g), _verdict(g)] for g in run.goals]


def _learning_rows(changes: Sequence[Change]) -> list[list[str]]:
    return [
        [c.label, _number(c.before, c.name), _number(c.after, c.name), _signed(c.change, c.name)]
        for c in changes
    ]


FLEET_HEADER = ("", "rebound", "naive (tenacity)")
GOAL_HEADER = ("goal (rebound fleet)", "kind", "value", "result")
LEARNING_HEADER = ("rebound fleet", "run 1 (nothing learned)", "run 2 (learned)", "change")


# --- text (stdout) ---------------------------------------------------------------------------------------


def text(report: Report) -> str:
    lines = [f"Chaos drill {report.scenario!r}, seed {report.seed} (repeat: {report.command})", ""]
    for index, run in enumerate(report.runs, start=1):
        if len(report.runs) > 1:
            lines += [f"Run {index} of {len(report.runs)}", ""]
        lines += [*_aligned(FLEET_HEADER, _fleet_rows(run)), ""]
        lines += [*_aligned(GOAL_HEADER, _goal_rows(run)), ""]
        lines += [f"note: {note}" for note in run.data.notes]
        if run.data.notes:
            lines.append("")
    if report.learning is not None:
        lines += ["What learning changed", "", *_aligned(LEARNING_HEADER, _learning_rows(report.learning))]
        lines.append("")
    missed = missed_correctness(report)
    lines.append(
        "Correctness goals missed: " + ", ".join(missed) if missed else "Every correctness goal was met."
    )
    return "\n".join(lines) + "\n"


# --- markdown (docs/drill.md) ----------------------------------------------------------------------------


LEARNED_HEADER = ("service", "action", "plans", "a reason")


def learned_plans(run: RunData) -> list[tuple[str, str, int, str]]:
    """The rebound fleet's plans that learning chose or timed, per (service, action), each with its first reason."""
    found: dict[tuple[str, str], list[str]] = {}
    for task in run.tasks:
        for plan in task.plans:
            if task.fleet == "rebound" and plan.learned:
                found.setdefault((plan.service, plan.action), []).append(plan.reason)
    return [(svc, action, len(reasons), reasons[0]) for (svc, action), reasons in sorted(found.items())]


def markdown(report: Report, plot: str | None = None) -> str:
    """The page: what the drill does and how to repeat it, the fleets side by side, the goals, the plot (`plot`
    is its path relative to the page), the learning effect and the runner's notes."""
    last = report.last
    data = last.data
    when = dt.datetime.fromtimestamp(data.t0, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# The chaos drill",
        "",
        "<!-- Written by `python manage.py drill --report ...` (`make drill-docs`); edits here are overwritten. -->",
        "",
        "The drill proves that recovery through Rebound works better than naive retries. A fault-injecting "
        "loopback server stands in for several services: transient 503s, 429s with `Retry-After`, slow calls, "
        "failures that hold for a few seconds, one service down hard (its connections cut) for a while and then "
        "back, and one service that always answers 401. Two fleets of agent processes run the same tasks "
        "against identical copies of those faults: the **rebound** fleet through the SDK (guarded calls, "
        "recovery plans, fallbacks, checkpoints, the escalation queue), the **naive** fleet with tenacity "
        "(3 attempts, exponential backoff) and nothing else.",
        "",
        f"This page: scenario `{report.scenario}`, seed {report.seed}, {data.agents_per_fleet} agents per fleet, "
        f"tasks starting for {data.duration_s:g} s, run on {when}"
        + (
            f", {len(report.runs)} runs (the second with what the first learned)."
            if len(report.runs) > 1
            else "."
        ),
        "",
        "Repeat it exactly (the faults are drawn from the seed) against a running Rebound:",
        "",
        "```sh",
        report.command,
        "```",
        "",
        _scenario_facts(data),
        "",
        "## The fleets side by side",
        "",
    ]
    if len(report.runs) > 1:
        lines += ["The last run's figures (it had the first run's statistics to learn from).", ""]
    lines += [*_table(FLEET_HEADER, _fleet_rows(last)), ""]
    lines += [
        "MTTR: from the moment the dead service answers again to the fleet's first successful call to it. "
        "Manual interventions: for rebound the tasks escalated through the queue (the permanent failures, and "
        "no recoverable task); for the naive fleet every task it failed, which nobody is told about. Mean task "
        "time covers the tasks each fleet completed: the naive fleet's are mostly those that met no fault, the "
        "rebound fleet's include those that waited out a rate limit, a hold or the breaker.",
        "",
        "## Goals",
        "",
    ]
    for index, run in enumerate(report.runs, start=1):
        if len(report.runs) > 1:
            lines += [f"Run {index}:", ""]
        lines += [*_table(GOAL_HEADER, _goal_rows(run)), ""]
    missed = missed_correctness(report)
    lines += [
        "Correctness goals missed: " + ", ".join(missed) + "."
        if missed
        else "Every correctness goal was met.",
        "",
    ]
    if plot:
        lines += [
            "## Over time",
            "",
            f"![Tasks completed and calls to the dead service over time]({plot})",
            "",
            "The outage is shaded. Top: recoverable tasks completed so far, per fleet. Bottom: calls to the "
            "service that went down, per second, per fleet.",
            "",
        ]
    if report.learning is not None:
        lines += [
            "## What learning changed",
            "",
            "The same scenario and seed twice against the same Rebound: run 1 with the drill services' "
            "learning forgotten, run 2 with what run 1 taught it.",
            "",
        ]
        lines += [*_table(LEARNING_HEADER, _learning_rows(report.learning)), ""]
        changed = learned_plans(last.data)
        if changed:
            lines += [
                "The plans learning chose or timed in run 2, by service and action, with one reason as the "
                "planner gave it:",
                "",
                *_table(
                    LEARNED_HEADER, [[svc, action, str(n), f"`{why}`"] for svc, action, n, why in changed]
                ),
                "",
            ]
    notes = [(i, n) for i, run in enumerate(report.runs, start=1) for n in run.data.notes]
    if notes:
        lines += ["## Notes from the runner", ""]
        lines += [f"- {'run ' + str(i) + ': ' if len(report.runs) > 1 else ''}{note}" for i, note in notes]
        lines.append("")
    return "\n".join(lines)


def _scenario_facts(data: RunData) -> str:
    outages = "; ".join(f"`{o.service}` down from {o.from_s:g} s to {o.to_s:g} s" for o in data.outages)
    permanent = ", ".join(f"`{s}`" for s in data.permanent_services)
    facts = [f"Services: {', '.join(f'`{s}`' for s in data.services)}."]
    if outages:
        facts.append(f"Outage: {outages}.")
    if permanent:
        facts.append(f"Always 401 (tasks calling it are the permanent failures): {permanent}.")
    return " ".join(facts)

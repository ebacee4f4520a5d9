"""What the health-check benchmark found, and how it is told: the console, bench/results/*.json and the docs."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import server

RESULTS = Path(__file__).resolve().parent / "results"
GOAL_P99_S = 1.0  # issue 12: p99 lateness of a run against its next_due_at under 1 s
NOISY_CPU_PCT = 10.0


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    if math.isinf(seconds):
        return "never"
    return f"{seconds * 1000:,.0f}" if abs(seconds) >= 0.1 else f"{seconds * 1000:,.1f}"


def _msu(seconds: float) -> str:
    """A duration with its unit: ms below 10 s, "never" for a run that never started."""
    if math.isinf(seconds):
        return "never"
    return f"{_ms(seconds)} ms" if seconds < 10 else f"{seconds:,.1f} s"


def _ratio(value: float) -> str:
    return "-" if math.isinf(value) or math.isnan(value) else f"{value:.2f}"


def _met(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


def _pct(seconds: float, window_s: float) -> str:
    return f"{100 * seconds / window_s:.1f}%" if window_s > 0 else "-"


@dataclass
class Outcome:
    opts: dict[str, Any]
    command: str
    started: datetime
    environment: dict[str, str]
    baseline: dict[str, Any]
    commits: dict[str, dict[str, float]]
    phases: list[dict[str, Any]]

    # --- figures ---------------------------------------------------------------------------------------------

    @property
    def base_late(self) -> dict[str, float]:
        values = sorted(v / 1000 for v in self.baseline["lateness_ms"])

        def rank(pct: float) -> float:
            return values[max(0, math.ceil(pct / 100 * len(values)) - 1)] if values else math.nan

        return {"p50": rank(50), "p95": rank(95), "p99": rank(99), "max": values[-1] if values else math.nan}

    def phase_ok(self, p: dict[str, Any]) -> list[str]:
        """What broke 'never twice' (or the probes) in a phase; empty when nothing did. A missed run is a figure
        of the verdict, not a failure here: Rebound drops a run that is still queued when the next one comes
        due, by design, and that happens only when the scheduler is behind."""
        problems = []
        if p["duplicate_results"] or p["double_claims"]:
            problems.append(
                f"{p['double_claims']} due runs claimed twice, {p['duplicate_results']} duplicate rows"
            )
        if p["extra_probes"]:
            problems.append(f"{p['extra_probes']:+} probes at the target against the results stored")
        if p["failed_in_window"]:
            problems.append(f"{p['failed_in_window']} failed probes of a target that always answers 200")
        if p["queue_after_drain"]:
            problems.append(f"{p['queue_after_drain']} messages still queued when the worker was stopped")
        return problems

    @property
    def baseline_problems(self) -> list[str]:
        b = self.baseline
        return [f"{b['failed']} baseline requests failed: {b['failures'][:3]}"] if b["failed"] else []

    @property
    def correct(self) -> bool:
        return not self.baseline_problems and not any(self.phase_ok(p) for p in self.phases)

    # --- rounds ----------------------------------------------------------------------------------------------

    @property
    def rounds(self) -> int:
        return max((p.get("round", 1) for p in self.phases), default=1)

    def of_pool(self, label: str) -> list[dict[str, Any]]:
        return [p for p in self.phases if p["pool"] == label]

    @property
    def labels(self) -> list[str]:
        return list(dict.fromkeys(p["pool"] for p in self.phases))

    @property
    def medians(self) -> list[dict[str, Any]]:
        """Per pool, the round whose p99 lateness is the median of its rounds (the lower one of an even number):
        the tables of causes and CPU show that round."""
        chosen = []
        for label in self.labels:
            rounds = sorted(self.of_pool(label), key=lambda p: p["lateness_s"]["p99"])
            chosen.append(rounds[(len(rounds) - 1) // 2])
        return chosen

    def name(self, p: dict[str, Any]) -> str:
        """The pool, and with several rounds which one (the median's tables say so)."""
        return f"`{p['pool']}`" + (f" (round {p['round']})" if self.rounds > 1 else "")

    # --- telling ---------------------------------------------------------------------------------------------

    def missed(self, p: dict[str, Any]) -> str:
        if not p["missing"] and not p["off_grid"]:
            return "none missed"
        text = (
            f"**{p['missing']:,} missed** ({p['missing_sent']:,} sent but dropped unrun, their message expired at the "
            f"check's next due time; {p['missing_unclaimed']:,} not claimed by the end)"
        )
        if p["off_grid"]:
            text += f", {p['off_grid']:,} runs moved off the schedule (claimed more than an interval late)"
        return text

    def commit_floor(self) -> str:
        before, after = self.commits["before"], self.commits["after"]
        return (
            f"The floor of a claim, measured in the same run: a one-row `UPDATE` in autocommit (the shape of the "
            f"dispatcher's compare-and-set, each waiting for its WAL flush) took {_ms(before['p50'])} ms p50 and "
            f"{_ms(before['p99'])} ms p99 before the measurements, {_ms(after['p50'])} ms and "
            f"{_ms(after['p99'])} ms after them."
        )

    def verdict(self) -> str:
        base = self.base_late
        lines = []
        for n, p in enumerate(self.medians, 1):
            late, seen = p["lateness_s"], p["lateness_observed_s"]
            per_round = ""
            if self.rounds > 1:
                values = ", ".join(_msu(r["lateness_s"]["p99"]) for r in self.of_pool(p["pool"]))
                per_round = f" The median of {len(self.of_pool(p['pool']))} rounds (p99 per round: {values}); its figures:"
            cpu, window = p["cpu_s"], p["window_s"]
            loop = ""
            if p.get("loop") is not None:
                loop = f", loop {_pct(cpu.get('dispatch_loop', 0.0), window)}"
            if math.isinf(late["p99"]):
                p99 = (
                    f"p99 lateness **never started** (more than 1% of the due runs were missed; goal < "
                    f"{_msu(GOAL_P99_S)}: **NOT met**); of the {seen['n']:,} runs that did start: p50 "
                    f"{_msu(seen['p50'])}, p99 {_msu(seen['p99'])}, max {_msu(seen['max'])}"
                )
            else:
                p99 = (
                    f"p99 lateness **{_msu(late['p99'])}** (goal < {_msu(GOAL_P99_S)}: "
                    f"{_met(late['p99'] < GOAL_P99_S)}; p99 / goal = **{late['p99'] / GOAL_P99_S:.2f}**); p50 "
                    f"{_msu(late['p50'])}, p95 {_msu(late['p95'])}, max {_msu(late['max'])}"
                )
            lines.append(
                f"{n}. {'Comparison, not what production runs: ' if loop else ''}Worker pool `{p['pool']}`:{per_round} {p99}; "
                f"over {p['due_in_window']:,} due runs. {p['runs_per_s']:.1f} runs/s achieved of "
                f"{p['offered_per_s']:g} offered, {self.missed(p)}. Scheduler CPU (beat + the dispatcher): "
                f"**{_pct(cpu['scheduler'], window)} of one core** (beat {_pct(cpu['beat'], window)}, dispatcher "
                f"task {_pct(cpu['dispatcher'], window)}{loop}); the whole worker {_pct(cpu['worker'], window)}. "
                f"{self.cpu_per_run(p)}"
            )
        lines.append(
            f"\nThe baseline, a plain loop of the same {self.opts['checks'] / self.opts['interval']:g} requests/s: "
            f"lateness p50 {_msu(base['p50'])}, p99 {_msu(base['p99'])}, max {_msu(base['max'])}, with "
            f"{_pct(self.baseline['cpu_s'], self.baseline['elapsed_s'])} of one core."
        )
        return "\n".join(lines)

    def cpu_per_run(self, p: dict[str, Any]) -> str:
        """What a run costs the machine (worker, beat, a dispatcher loop, PostgreSQL, Redis) against what the plain
        loop's request costs it (the loop's own CPU): the ratio that does not move with the machine's speed."""
        cpu, runs = p["cpu_s"], max(p["checks_run_in_window"], 1)
        ours = sum(cpu.get(k, 0.0) for k in ("worker", "beat", "dispatch_loop", "postgresql", "redis"))
        b = self.baseline
        theirs = b["cpu_s"] / max(b["requests"], 1)
        return (
            f"CPU per run: **{1000 * ours / runs:.1f} ms** (worker, beat, PostgreSQL, Redis), "
            f"**{ours / runs / theirs:.0f} times** the plain loop's {1000 * theirs:.2f} ms per request."
        )

    def bounds(self) -> str:
        """Per measurement, the three terms of the lateness with their causes, from the figures above."""
        lines = []
        for p in self.medians:
            parts, cpu, runs = p["parts_s"], p["cpu_s"], max(p["checks_run_in_window"], 1)
            per_run_ms = 1000 * cpu["worker"] / runs
            passes = [d for d in p["dispatchers"] if d["claimed"]["n"]]
            pass_text = "; ".join(
                f"{d['source']}: a pass every {d['period_s']['mean']:.2f} s, {d['claimed']['mean']:.0f} claims and "
                f"{_ms(d['wall_s']['p50'])} ms a pass at the median ({_ms(d['wall_s']['max'])} ms at most), "
                f"{1000 * d['wall_s']['p50'] / max(d['claimed']['mean'], 1):.1f} ms a claim"
                for d in passes
            )
            lines.append(
                f"- {self.name(p)}: sent against due p50 {_ms(parts['claim']['p50'])} ms, p99 {_ms(parts['claim']['p99'])} ms "
                f"({pass_text}); begun past due (or past sent) p99 {_ms(parts['queue']['p99'])} ms; begun → probe p99 "
                f"{_ms(parts['task']['p99'])} ms. The worker "
                f"spent {per_run_ms:.1f} ms of CPU per run ({1000 * cpu['run_check'] / runs:.1f} in `run_check`, "
                f"{1000 * cpu['dispatcher'] / runs:.1f} dispatching, {1000 * cpu['celery'] / runs:.1f} in Celery "
                f"itself): {1000 / per_run_ms:,.0f} runs/s per core at that cost, against "
                f"{p['offered_per_s']:g} offered."
            )
        return "\n".join(lines)

    def lateness_table(self) -> str:
        base, b = self.base_late, self.baseline
        lines = [
            "| measurement | due runs | runs/s (offered) | p50 ms | p95 ms | p99 ms | max ms | p99 / 1 s goal | missed | failed | other CPU |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| plain loop, {b['threads']} threads, no Rebound (baseline) | {b['requests']:,} "
            f"| {len(b['lateness_ms']) / b['elapsed_s']:.1f} ({self.opts['checks'] / self.opts['interval']:g}) "
            f"| {_ms(base['p50'])} | {_ms(base['p95'])} | {_ms(base['p99'])} | {_ms(base['max'])} "
            f"| {base['p99'] / GOAL_P99_S:.3f} | 0 | {b['failed']} | {b['other_cpu_pct']:.0f}% |",
        ]
        for p in sorted(self.phases, key=lambda p: (self.labels.index(p["pool"]), p.get("round", 1))):
            late = p["lateness_s"]
            lines.append(
                f"| Rebound: beat + one worker, {self.name(p)} | {p['due_in_window']:,} "
                f"| {p['runs_per_s']:.1f} ({p['offered_per_s']:g}) | {_ms(late['p50'])} | {_ms(late['p95'])} "
                f"| {_ms(late['p99'])} | {_ms(late['max'])} | {_ratio(late['p99'] / GOAL_P99_S)} "
                f"| {p['missing']:,} | {p['failed_in_window']} | {p['other_cpu_pct']:.0f}%"
                + (f" (quietest of {p['attempts']})" if p.get("attempts", 1) > 1 else "")
                + " |"
            )
        return "\n".join(lines)

    def parts_table(self) -> str:
        lines = [
            "| pool | part of the lateness | p50 ms | p95 ms | p99 ms | max ms |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
        ]
        names = {
            "claim": "claimed and sent, against the due time (negative: ahead, with an ETA)",
            "queue": "the task begins, after its due time or its sending if later (broker, worker, a free slot)",
            "task": "the task begins → `started_at` (loading the check, before the probe)",
        }
        for p in self.medians:
            for part, label in names.items():
                s = p["parts_s"][part]
                lines.append(
                    f"| {self.name(p)} | {label} | {_ms(s['p50'])} | {_ms(s['p95'])} | {_ms(s['p99'])} | {_ms(s['max'])} |"
                )
        return "\n".join(lines)

    def dispatcher_table(self) -> str:
        lines = [
            "| pool | passes by | passes | period mean / max s | claimed per pass mean / max | pass wall p50 / max ms | pass CPU ms | run_check wall p50 / p99 ms |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for p in self.medians:
            run = p["run_wall_s"]
            for d in p["dispatchers"]:
                period, wall, claimed = d["period_s"], d["wall_s"], d["claimed"]
                claims = f"{claimed['mean']:.1f} / {claimed['max']:.0f}" if claimed["n"] else "-"
                lines.append(
                    f"| {self.name(p)} | {d['source']} | {d['passes']} | {period['mean']:.3f} / {period['max']:.3f} "
                    f"| {claims} | {_ms(wall['p50'])} / {_ms(wall['max'])} | {d['cpu_ms']:.1f} "
                    f"| {_ms(run['p50'])} / {_ms(run['p99'])} |"
                )
        return "\n".join(lines)

    def cpu_table(self) -> str:
        lines = [
            "| pool | process or task | CPU s | % of one core | CPU ms per run |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        rows = [
            ("beat", "beat (`celery -A config beat`, DatabaseScheduler)"),
            ("dispatcher", "the dispatcher task (`dispatch_due_checks`, in the worker)"),
            ("dispatch_loop", "the dispatcher loop process (the comparison only)"),
            ("scheduler", "**scheduler: beat + dispatcher**"),
            ("run_check", "the checks (`run_check` tasks: load, probe, result, state)"),
            ("other_tasks", "beat's other tasks (breakers, degradation, healing, …)"),
            ("celery", "Celery itself (consumer, broker I/O, acknowledgements, pool)"),
            ("worker", "**the worker process, all of it**"),
            ("postgresql", "PostgreSQL (every backend, also other people's)"),
            ("redis", "Redis (the broker; the whole server)"),
            ("target", "the loopback target"),
        ]
        for p in self.medians:
            window, runs = p["window_s"], max(p["checks_run_in_window"], 1)
            for key, label in rows:
                if key not in p["cpu_s"]:
                    continue
                seconds = p["cpu_s"][key]
                lines.append(
                    f"| {self.name(p)} | {label} | {seconds:.1f} | {_pct(seconds, window)} | {1000 * seconds / runs:.2f} |"
                )
        b = self.baseline
        window, runs = b["elapsed_s"], max(b["requests"], 1)
        lines.append(
            f"| baseline | the plain loop (schedule + requests) | {b['cpu_s']:.1f} | {_pct(b['cpu_s'], window)} "
            f"| {1000 * b['cpu_s'] / runs:.2f} |"
        )
        lines.append(
            f"| baseline | the loopback target | {b['target_cpu_s']:.1f} | {_pct(b['target_cpu_s'], b['window_s'])} "
            f"| {1000 * b['target_cpu_s'] / runs:.2f} |"
        )
        return "\n".join(lines)

    def correctness(self) -> str:
        lines = []
        for p in sorted(self.phases, key=lambda p: (self.labels.index(p["pool"]), p.get("round", 1))):
            problems = self.phase_ok(p)
            lines.append(
                f"- {self.name(p)}: {p['due_in_window']:,} runs due in the window, {p['results_in_window']:,} results "
                f"({p['missing']:,} missed: {p['missing_sent']:,} expired unrun, {p['missing_unclaimed']:,} never "
                f"claimed; {p['off_grid']:,} off the schedule); {p['double_claims']} due runs claimed "
                f"twice, {p['duplicate_results']} duplicate result rows; over the whole phase {p['probes']:,} probes "
                f"reached the target for {p['results_total']:,} results; {p['failed_in_window']} failed probes; "
                f"{p['queue_after_drain']} messages left in the broker: "
                + ("**ok**" if not problems else "**FAILED**: " + "; ".join(problems))
                + "."
            )
        b = self.baseline
        lines.append(
            f"- Baseline: {b['requests']:,} requests, {b['failed']} failed: "
            + ("**ok**" if not self.baseline_problems else "**FAILED**")
            + "."
        )
        return "\n".join(lines)

    def blocks(self) -> list[str]:
        return [
            self.lateness_table(),
            self.parts_table(),
            self.dispatcher_table(),
            self.cpu_table(),
            self.verdict(),
            self.commit_floor(),
            "Correctness:\n" + self.correctness(),
        ]

    def save(self) -> None:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"health-checks-{self.started:%Y%m%dT%H%M%SZ}.json"
        baseline = {**self.baseline, "lateness_s": self.base_late}
        data = {
            "started": self.started.isoformat(),
            "command": self.command,
            "options": self.opts,
            "environment": self.environment,
            "baseline": baseline,
            "commits": self.commits,
            "phases": self.phases,
        }
        path.write_text(json.dumps(data, indent=2, default=str))
        print(f"raw results: {path.relative_to(server.ROOT)}")

    @classmethod
    def load(cls, path: Path) -> Outcome:
        """A saved run, to tell again (`--render`): the docs' wording can change without measuring again."""
        data = json.loads(path.read_text())
        baseline = {k: v for k, v in data["baseline"].items() if k != "lateness_s"}
        return cls(
            opts=data["options"],
            command=data["command"],
            started=datetime.fromisoformat(data["started"]),
            environment=data["environment"],
            baseline=baseline,
            commits=data["commits"],
            phases=data["phases"],
        )

    def section(self) -> str:
        env, o = self.environment, self.opts
        pools = ", ".join(f"`{label}`" for label in self.labels)
        return SECTION.format(
            verdict=self.verdict(),
            rounds=self.rounds,
            floor=self.commit_floor(),
            lateness=self.lateness_table(),
            parts=self.parts_table(),
            bounds=self.bounds(),
            dispatcher=self.dispatcher_table(),
            cpu=self.cpu_table(),
            correctness=self.correctness(),
            date=self.started.strftime("%Y-%m-%d %H:%M UTC"),
            command=self.command,
            checks=f"{o['checks']:,}",
            interval=f"{o['interval']:g}",
            timeout=f"{o['timeout']:g}",
            rate=f"{o['checks'] / o['interval']:g}",
            duration=f"{o['duration']:g}",
            warmup=f"{o['warmup']:g}",
            tail=f"{o['tail']:g}",
            baseline_duration=f"{o['baseline_duration']:g}",
            threads=self.baseline["threads"],
            pools=pools,
            db=o["db_name"],
            redis_db=env.get("redis_db", o.get("redis_db", "?")),
            noisy=f"{NOISY_CPU_PCT:.0f}",
            code=env.get("code", "?"),
            machine=f"{env['cores']} cores ({env['cpu']}), {env['memory']}, {env['os']}; Python {env['python']}, "
            f"PostgreSQL {env['postgresql']}, Redis {env['redis']}, Django {env['django']}, Celery {env['celery']}, "
            f"django-celery-beat {env['django-celery-beat']}, kombu {env['kombu']}, httpx {env['httpx']}",
        )


SECTION = """
## Health-check scheduling (issue 12)

How late the runs of {checks} http checks (every {interval} s: {rate} due runs per second; fewer checks where
a row says so) start against their due time, and what the scheduler costs, with what production runs: one beat
(`celery -A config beat`, django-celery-beat's DatabaseScheduler) sending `dispatch_due_checks` every second,
and ONE Celery worker process running it and every `run_check` it enqueues. A run's lateness is its result's
`started_at - due_at` (`due_at` is the `next_due_at` the dispatcher claimed). Goal: p99 lateness under 1 s.
The baseline, in the same run against the same target: a plain loop that makes the same {rate} requests per
second from a pool of {threads} threads with no Rebound, no broker and no database; its lateness is the
machine's floor, and its CPU per request the floor of a run's.

{verdict}

### Lateness

{lateness}

{floor}

Each measurement was made in {rounds} round(s), interleaved (every pool once, then again); the numbered
verdict and the tables below this one show, per pool, the round whose p99 is the median of its rounds.

A due run that has no result by the end of the measurement counts as never started ("never"), so the
percentiles cannot hide a missed run; "failed" counts those and failed probes. Runs/s counts results whose
`started_at` lies in the window. "Other CPU" is the most that processes outside the benchmark (other people's
work on this shared machine) took of the cores meanwhile (`bench/cpu.py`); above {noisy}% a run is noisy, and
the benchmark measures such a pool again (at most twice), keeping the quietest.

### Where the lateness comes from

{parts}

From the worker's trace (`bench/health_celery.py`: Rebound's Celery app with three signal handlers that note,
per task, when it began and its thread's CPU, and when each `run_check` message was sent), per run due in the
window.

What bounds each measurement (the worker's CPU per run counts every run that began in the window):

{bounds}

### The dispatcher

{dispatcher}

### CPU

{cpu}

CPU from /proc over the window: each process's user + system time (the worker with its children); the tasks'
shares from the CPU time of the thread that ran them; "Celery itself" is the worker's total minus its tasks'.
"Per run" divides by the `run_check` tasks that began in the window. PostgreSQL and Redis are whole servers,
shared with anything else that used them meanwhile.

### How it was measured

- Date: {date}. Command: `{command}`
- Machine: {machine}.
- Code: {code}.
- Processes, `REBOUND_MODE=production` (PostgreSQL database `{db}`, created fresh, migrated, dropped at the
  end; Redis db {redis_db} as broker and cache, claimed, emptied at the start and the end; `LOG_LEVEL=WARNING`;
  `OUTBOUND_ALLOWED_HOSTS=127.0.0.1:<the target's port>`): `celery -A config beat -l WARNING` and
  `celery -A bench.health_celery worker --pool <pool> --concurrency <n> -l WARNING` (pools measured: {pools}),
  each started fresh for its measurement. `bench.health_celery` is `config.celery`'s app plus the trace. A
  "+ dispatcher loop" row adds `bench/health_dispatch.py`, a process calling Rebound's own
  `healing.checks.services.dispatch_due()` at that period beside beat's (the two race for the same claims, and
  the loop, out of the worker, makes nearly all of them): a comparison of a dispatcher that neither waits for
  beat's second nor takes a slot of the worker, not something production runs.
- Checks: {checks} `http` checks (a row with fewer spreads only the first ones), `GET http://127.0.0.1:<port>/c/<i>`, `interval_s` {interval}, `timeout_s`
  {timeout}, expected status 2xx, created in the database with the ORM; once the worker has run a first
  dispatch pass, their `next_due_at` are spread evenly over one interval from 2 s later: {rate} due runs per
  second (or fewer), offered steadily; between measurements no check is due. Warm-up {warmup} s, then {duration} s measured: the runs due in the window count.
  Beat runs on {tail} s after the window, then the worker finishes what was sent and is stopped (warm shutdown).
- The target (`bench/health_target.py serve`): Python's threading HTTP server in a process of its own,
  HTTP/1.1 keep-alive, a 3-byte 200, counting the requests per path. The checks' probes go through Rebound's
  outbound executor (the SSRF guard, a pooled httpx client per worker process).
- Baseline (`bench/health_target.py loop`): {baseline_duration} s before the worker starts, one thread keeps the
  schedule (request k due at start + k / {rate} s) and hands each due request to a pool of {threads} threads that
  `GET` the same target with one shared httpx client; lateness = when the thread starts the request minus its
  due time, the same measure as `started_at - due_at`.
- Everything (beat, the worker, PostgreSQL, Redis, the target, the benchmark) shares the same cores; the
  absolute figures move with the machine, the ratios are the result.

### Correctness

Never twice: no due run was claimed (sent as a `run_check` message) twice, no two result rows share a check and
a due time, and the target saw exactly one probe per result row over the whole measurement (a second delivery
that probed again would show there); the target always answers 200, so no probe may fail; nothing is left in
the broker at the end. Each of these fails the run (exit status 1). Missed runs (a due time of a check in the
window, its first due time plus whole intervals, with no result) are counted in the lateness as never started
and shown in the verdict, but do not fail the run: Rebound drops a run whose message is still queued when the
check's next run comes due, by design, which happens only when the scheduler is behind.

{correctness}

### Reproduce

1. PostgreSQL on 127.0.0.1:5432 (user `postgres`, trust auth) and Redis on 127.0.0.1:6379; the benchmark drops
   and creates only the database `{db}`, and claims one Redis database of `--redis-dbs` (default 7 down to 1)
   that no test, fuzz or benchmark run holds and that is empty or marked as a benchmark's (db {redis_db} here).
2. `.venv/bin/python -m bench.health_checks --write-docs` (options: `--checks`, `--interval`, `--timeout`,
   `--duration`, `--warmup`, `--tail`, `--baseline-duration`, `--pools POOL:N[+loop:S][@CHECKS],...`,
   `--retries`, `--quiet-wait`, `--redis-dbs`, `--keep-db`, `--keep-workdir`; `--render RESULTS.json` tells a
   saved run again). It prints the tables; `--write-docs` rewrites this section (and nothing else
   in the file); the raw figures go to `bench/results/` (not committed). See `bench/README.md`.
"""

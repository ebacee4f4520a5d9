"""Error-intake benchmark (issue 2): authenticated POST /api/v1/errors against the bare JSON view.

    .venv/bin/python -m bench.intake [--duration 10] [--connections 8] [--workers 2] [--rounds 3] [--write-docs]

One gunicorn, configured by config/gunicorn.conf.py in production mode, serves both the baseline (GET /healthz,
a bare Django JSON view: no database, no authentication) and the intake, so the ratio compares the intake's
own cost with everything it shares (middleware, WSGI, gunicorn, the machine). Each round loads, in turn,
the bare view, one error per request and a batch of 100 errors per request, each after a warm-up. The goal:
one error per request reaches at least 0.5 of the bare view's requests per second.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from bench import loadgen, payloads, report, server, sustained, verify
from bench.loadgen import Measurement, Target

GOAL = 0.7  # issue 17, goal 1
SUSTAINED_GOAL = 25_000  # issue 17, goal 3: errors/s reaching PostgreSQL while batches keep arriving
# Above this share of the CPU taken by other people's processes during a timed run, the run is called noisy.
NOISY_CPU_PCT = 10.0
BATCH_SIZE = 100
BARE, SINGLE, BATCH = "bare", "single", "batch"
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Options:
    duration: int
    warmup: int
    connections: int
    workers: int
    rounds: int
    write_docs: bool
    pg_admin_url: str
    db_name: str
    keep_workdir: bool
    rates: list[int]
    step_s: int
    step_warmup_s: int
    drain_processes: int
    pacer_threads: int


@dataclass
class Round:
    measurements: dict[str, Measurement] = field(default_factory=dict)
    checks: list[verify.PhaseCheck] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.measurements[SINGLE].rps / self.measurements[BARE].rps


def targets() -> dict[str, Target]:
    return {
        BARE: Target("bare view: GET /healthz", "GET", "/healthz"),
        SINGLE: Target(
            "POST /api/v1/errors, 1 error", "POST", "/api/v1/errors", payloads.single_body(), True, 1
        ),
        BATCH: Target(
            f"POST /api/v1/errors, batch of {BATCH_SIZE}",
            "POST",
            "/api/v1/errors",
            payloads.batch_body(BATCH_SIZE),
            True,
            BATCH_SIZE,
        ),
    }


def parse_args(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.intake", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--duration", type=int, default=10, help="seconds of measurement per target and round"
    )
    parser.add_argument("--warmup", type=int, default=3, help="seconds of unmeasured load before each target")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers, one per core (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all targets; medians are reported")
    parser.add_argument(
        "--rates",
        default="15000,20000,25000,30000,35000,40000",
        help="sustained phase: offered errors/s, stepped up until one is not sustained",
    )
    parser.add_argument(
        "--step-duration", type=int, default=60, help="measured seconds per rate (default 60)"
    )
    parser.add_argument("--step-warmup", type=int, default=5, help="unmeasured seconds before each rate")
    parser.add_argument("--drain-processes", type=int, default=2, help="Celery worker processes (default 2)")
    parser.add_argument("--pacer-threads", type=int, default=16, help="threads of the paced load generator")
    server.add_stack_options(parser)
    a = parser.parse_args(argv)
    if min(a.duration, a.connections, a.workers, a.rounds) < 1 or a.warmup < 0:
        parser.error("duration, connections, workers and rounds must be at least 1, warmup at least 0")
    rates = [int(r) for r in a.rates.split(",") if r.strip()]
    if not rates or min(rates) < 100 or min(a.step_duration, a.drain_processes, a.pacer_threads) < 1:
        parser.error("rates of at least 100, step duration, drain processes and pacer threads at least 1")
    return Options(
        a.duration,
        a.warmup,
        a.connections,
        a.workers,
        a.rounds,
        a.write_docs,
        a.pg,
        a.db,
        a.keep_workdir,
        rates,
        a.step_duration,
        a.step_warmup,
        a.drain_processes,
        a.pacer_threads,
    )


def prepare(stack: server.Stack) -> str:
    """A fresh, migrated database (with the built-in rules) and an agent key; returns the key."""
    print(f"database {stack.db_name}: recreating and migrating …", flush=True)
    server.recreate_database(stack)
    # The buffered intake's stream lives in Redis: start it empty too, with the database.
    redis.Redis.from_url(stack.redis_url).flushdb()
    stack.env = server.server_env(stack)
    server.manage(stack, "migrate", "--noinput")
    return server.create_agent_key(stack, "bench-agent")


def measure(
    stack: server.Stack, key: str, target: Target, body: Path | None, opts: Options
) -> tuple[Measurement | None, Measurement]:
    """A warm-up run, then the timed run: (warm-up, timed)."""
    return loadgen.warm_then_timed(
        target,
        base_url=stack.base_url,
        key=key,
        body_file=body,
        connections=opts.connections,
        warmup_s=opts.warmup,
        duration_s=opts.duration,
    )


def run_round(
    stack: server.Stack, key: str, all_targets: dict[str, Target], bodies: dict[str, Path], opts: Options
) -> Round:
    result = Round()
    for name, target in all_targets.items():
        before = verify.settled_counts(stack)
        if name == BARE:
            server.wait_for_quiet_postgres(stack.pg_admin_url)
        warm, m = measure(stack, key, target, bodies.get(name), opts)
        result.measurements[name] = m
        print(
            f"  {target.name:<38} {m.rps:>9,.0f} req/s  p50 {m.p50_ms:7.1f} ms  p99 {m.p99_ms:7.1f} ms"
            f"  (other processes: {m.other_cpu_pct:.0f}% CPU)",
            flush=True,
        )
        if target.errors_per_request:
            stored = verify.settled_counts(stack) - before
            result.checks.append(_phase_check(target, warm, m, stored, opts))
    return result


def _phase_check(
    target: Target, warm: Measurement | None, m: Measurement, stored: verify.Counts, opts: Options
) -> verify.PhaseCheck:
    # Between the two settled readings ran the warm-up and the timed run. wrk saw their answered requests;
    # when each run's time was up it dropped what was in flight, at most one request per connection,
    # which the server still completed and stored.
    runs = [r for r in (warm, m) if r is not None]
    answered = sum(r.ok_requests for r in runs) * target.errors_per_request
    allowance = len(runs) * opts.connections * target.errors_per_request
    return verify.PhaseCheck(target.name, answered, stored, allowance)


def write_bodies(workdir: Path, all_targets: dict[str, Target]) -> dict[str, Path]:
    bodies = {}
    for name, target in all_targets.items():
        if target.body is not None:
            bodies[name] = workdir / f"{name}.json"
            bodies[name].write_bytes(target.body)
    return bodies


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    # A SIGTERM must unwind like Ctrl-C does, so that the finally blocks stop gunicorn.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if loadgen.wrk_path() is None:
        print(loadgen.INSTALL_HINT, file=sys.stderr)
        return 2
    # The breaker benchmark loads the same cores and waits for this one; this one waits for it (and for another
    # run of itself). Waiting for every benchmark could wait forever on one that waits for this one.
    server.wait_for_other_benchmarks(("intake", "breakers"))
    with (
        server.scratch_stack(
            prefix="rebound-bench-",
            pg_admin_url=opts.pg_admin_url,
            db_name=opts.db_name,
            workers=opts.workers,
            keep_workdir=opts.keep_workdir,
        ) as stack,
        server.own_redis(stack),
    ):
        return _run(stack, opts)


def _run(stack: server.Stack, opts: Options) -> int:
    started = datetime.now(UTC)
    key = prepare(stack)
    all_targets = targets()
    bodies = write_bodies(stack.workdir, all_targets)
    rounds: list[Round] = []
    with server.gunicorn(stack) as web:
        print(
            f"gunicorn on {stack.base_url}, {opts.workers} sync workers; wrk 1 thread, {opts.connections} conns"
        )
        for number in range(1, opts.rounds + 1):
            print(f"round {number}/{opts.rounds}", flush=True)
            rounds.append(run_round(stack, key, all_targets, bodies, opts))
        exact = verify.exact_pass(
            stack,
            key,
            single=payloads.single_body(),
            batch=payloads.batch_body(BATCH_SIZE),
            batch_size=BATCH_SIZE,
            singles=400,
            batches=20,
        )
        print(
            f"sustained: batches of {BATCH_SIZE} paced by {opts.pacer_threads} threads, "
            f"{opts.drain_processes} Celery worker processes draining, {opts.step_s} s per rate",
            flush=True,
        )
        steady = sustained.run(
            stack,
            key,
            payloads.batch_body(BATCH_SIZE),
            batch_size=BATCH_SIZE,
            rates=opts.rates,
            seconds=opts.step_s,
            warmup_s=opts.step_warmup_s,
            processes=opts.drain_processes,
            threads=opts.pacer_threads,
            gunicorn_pid=web.pid,
        )
        final = verify.settled_counts(stack)
    outcome = Outcome(opts, started, all_targets, rounds, exact, final, _environment(stack), steady)
    blocks = [
        outcome.markdown_table(),
        outcome.sustained_table(),
        f"{outcome.verdict()}\nCorrectness:\n{outcome.correctness()}",
    ]
    return report.finish("intake", outcome, blocks, write_docs=opts.write_docs)


def _environment(stack: server.Stack) -> dict[str, str]:
    env = report.machine()
    env["postgresql"] = server.postgres_version(stack)
    env["wrk"] = loadgen.wrk_version()
    info: Any = redis.Redis.from_url(stack.redis_url).info("server")
    env["redis"] = str(info["redis_version"])
    return env


@dataclass
class Outcome:
    """Everything one run found, and how it is told: the console, bench/results/*.json and the docs."""

    opts: Options
    started: datetime
    targets: dict[str, Target]
    rounds: list[Round]
    exact: verify.ExactCheck
    final: verify.Counts
    environment: dict[str, str]
    steady: sustained.Sustained

    @property
    def ratio(self) -> float:
        # The median of per-round ratios: each pairs two runs seconds apart, which cancels slow drift.
        return report.median(r.ratio for r in self.rounds)

    @property
    def busiest_other_cpu(self) -> float:
        return max(m.other_cpu_pct for r in self.rounds for m in r.measurements.values())

    @property
    def met(self) -> bool:
        return self.ratio >= GOAL

    @property
    def correct(self) -> bool:
        phases_ok = all(c.ok for r in self.rounds for c in r.checks)
        no_failures = all(
            m.status_errors == 0 and m.socket_errors == 0
            for r in self.rounds
            for m in r.measurements.values()
        )
        totals_ok = self.final.events == self.final.pattern_total
        return phases_ok and no_failures and totals_ok and self.exact.ok and self.steady.exact

    def combined(self) -> list[tuple[str, dict[str, float]]]:
        return [
            (t.name, report.combine([r.measurements[k] for r in self.rounds]))
            for k, t in self.targets.items()
        ]

    def markdown_table(self) -> str:
        return report.table(self.combined())

    def verdict(self) -> str:
        batch = report.median(r.measurements[BATCH].errors_per_s for r in self.rounds)
        state = "met" if self.met else "NOT met"
        rounds = ", ".join(f"{r.ratio:.2f}" for r in self.rounds)
        best = self.steady.best
        rate = best.drained_per_s if best else 0.0
        sustained_state = "met" if rate >= SUSTAINED_GOAL else "NOT met"
        if best is None:
            headline = (
                f"Sustained batch intake: **no offered rate was sustained** (the lowest, "
                f"{self.opts.rates[0]:,} errors/s, already grew the backlog; goal ≥ {SUSTAINED_GOAL:,}: "
                f"**NOT met**).\n"
            )
        else:
            headline = (
                f"Sustained batch intake: **{rate:,.0f} errors/s reach PostgreSQL** while batches of "
                f"{BATCH_SIZE} keep arriving (goal ≥ {SUSTAINED_GOAL:,}: **{sustained_state}**; offered "
                f"{best.rate:,}/s, the highest rate the drain kept up with for {self.opts.step_s} s, "
                f"{self.steady.processes} Celery worker processes).\n"
            )
        text = (
            headline
            + f"Single error / bare view: **{self.ratio:.2f}** (goal ≥ {GOAL}: **{state}**; per round: {rounds}).\n"
            + f"Into the Redis buffer (context: what the request side takes when nothing else runs): batch of "
            f"{BATCH_SIZE}: {batch:,.0f} errors/s; one `manage.py drain_intake` process alone wrote "
            f"{verify.drain_rate():,.0f} errors/s between the rounds."
        )
        if self.busiest_other_cpu > NOISY_CPU_PCT:
            text += (
                f"\nThe machine was shared: other processes took up to {self.busiest_other_cpu:.0f}% of the CPU "
                "during a timed run, so some figures are low; compare the rounds."
            )
        return text

    def sustained_table(self) -> str:
        lines = [
            "| offered errors/s | sent/s | accepted/s | reached PostgreSQL/s | backlog at start | at end | |"
            " CPU: gunicorn | Celery | PostgreSQL | Redis | generator | other | drain µs CPU/error |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for st in self.steady.steps:
            c = st.cpu_pct
            drain_us = st.cpu_us("celery", st.drained) + st.cpu_us("postgres", st.drained)
            lines.append(
                f"| {st.rate:,} | {st.offered_per_s:,.0f} | {st.accepted_per_s:,.0f} | {st.drained_per_s:,.0f} "
                f"| {st.backlog_start:,} | {st.backlog_end:,} | {'sustained' if st.sustained else 'NOT sustained'} "
                f"| {c.get('gunicorn', 0):.0f}% | {c.get('celery', 0):.0f}% | {c.get('postgres', 0):.0f}% "
                f"| {c.get('redis', 0):.0f}% | {c.get('load generator', 0):.0f}% | {c.get('other', 0):.0f}% "
                f"| {drain_us:.0f} |"
            )
        return "\n".join(lines)

    def correctness(self) -> str:
        lines = [
            "| round | target | errors answered (warm-up + timed) | rows stored | at most | pattern totals | |",
            "| ---: | --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for number, r in enumerate(self.rounds, 1):
            for c in r.checks:
                lines.append(
                    f"| {number} | {c.target} | {c.answered_errors:,} | {c.stored.events:,} "
                    f"| {c.answered_errors + c.in_flight_allowance:,} | +{c.stored.pattern_total:,} "
                    f"| {'ok' if c.ok else 'FAILED'} |"
                )
        e = self.exact
        statuses = ", ".join(f"{n} x {s}" for s, n in sorted(e.statuses.items()))
        totals_equal = self.final.events == self.final.pattern_total
        return "\n".join(
            [
                "After each timed run the stored rows must equal the patterns' added totals and lie",
                "between the errors wrk saw answered and that plus one request per connection for each of the two",
                "wrk runs (wrk drops what is in flight when its time is up; the server still stores it).",
                "",
                *lines,
                "",
                f"Exact pass, 8 concurrent clients, 400 single errors and 20 batches of {BATCH_SIZE}: "
                f"{e.sent_errors:,} errors sent, answers {statuses}, {e.stored.events:,} rows stored, pattern "
                f"totals +{e.stored.pattern_total:,}: **{'ok' if e.ok else 'FAILED'}**. Whole run: "
                f"{self.final.events:,} rows, pattern totals {self.final.pattern_total:,}: "
                f"**{'equal' if totals_equal else 'DIFFERENT'}**.",
                "",
                f"Sustained phase: {self.steady.accepted:,} errors accepted (201), {self.steady.stored:,} rows "
                f"stored, pattern totals +{self.steady.counted:,} once the backlog was written: "
                f"**{'ok' if self.steady.exact else 'FAILED'}**.",
            ]
        )

    def command(self) -> str:
        return ".venv/bin/python -m bench.intake " + shlex.join(sys.argv[1:])

    def save(self) -> None:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"intake-{self.started:%Y%m%dT%H%M%SZ}.json"
        data = {
            "started": self.started.isoformat(),
            "options": asdict(self.opts),
            "environment": self.environment,
            "ratio": self.ratio,
            "rounds": [
                {k: {**asdict(m), "rps": m.rps} for k, m in r.measurements.items()} for r in self.rounds
            ],
            "correct": self.correct,
            "sustained": [
                {**asdict(st), "statuses": dict(st.statuses), "sustained": st.sustained}
                for st in self.steady.steps
            ],
        }
        path.write_text(json.dumps(data, indent=2, default=str))
        print(f"raw results: {path.relative_to(server.ROOT)}")

    def section(self) -> str:
        env = self.environment
        o = self.opts
        return SECTION.format(
            verdict=self.verdict(),
            goal=GOAL,
            sustained_goal=SUSTAINED_GOAL,
            date=self.started.strftime("%Y-%m-%d %H:%M UTC"),
            command=self.command(),
            cores=env["cores"],
            cpu=env["cpu"],
            memory=env["memory"],
            os=env["os"],
            python=env["python"],
            postgresql=env["postgresql"],
            django=env["django"],
            gunicorn=env["gunicorn"],
            wrk=env["wrk"],
            redis=env["redis"],
            workers=o.workers,
            connections=o.connections,
            duration=o.duration,
            warmup=o.warmup,
            rounds=o.rounds,
            table=self.markdown_table(),
            sustained_table=self.sustained_table(),
            processes=self.steady.processes,
            threads=self.steady.threads,
            step_s=o.step_s,
            correctness=self.correctness(),
            batch=BATCH_SIZE,
            noisy=NOISY_CPU_PCT,
        )


SECTION = """\
## Error intake (issues 2 and 17)

How many errors per second reach PostgreSQL while batches keep arriving (the headline), and how many
`POST /api/v1/errors` takes in, authenticated with an agent key, compared with a bare Django JSON view
(`GET /healthz`: no database, no authentication) served by the same gunicorn in the same run. Goals: at
least {sustained_goal:,} errors/s sustained to PostgreSQL; one error per request at least {goal} of the bare
view's requests per second.

{verdict}

### Sustained: errors per second that reach PostgreSQL

{sustained_table}

A paced load generator (Python, {threads} threads, each on a fixed schedule: an open loop) offers batches of
100 at each rate for {step_s} s after a warm-up, while gunicorn answers from the Redis buffer and
{processes} Celery worker processes run the drain task as production schedules it (sent by the first report
after a quiet half second, and by beat every 5 s). "Reached PostgreSQL" is the patterns' added totals (equal
to the rows) over the window; the backlog is the errors queued in Redis and not yet written. A rate is
sustained when the backlog grew by at most one second of it and the generator kept its pace.

### Request side (one error, a batch, the bare view)

{table}

Requests/s counts answered requests only; errors/s is requests/s times the errors each request carries.
Each figure is the median of the {rounds} rounds, and the ratio the median of the per-round ratios;
latencies are wrk's, from the client, queueing included. "Other CPU" is the most that processes outside
the benchmark took of the cores during a timed run of that target (`bench/cpu.py`: the benchmark's own are
its processes, the redis-server and the PostgreSQL backends of its database; before the bare view it waits
for PostgreSQL's autovacuum to finish, up to 60 s); above {noisy:.0f}% a round is noisy.

### How it was measured

- Date: {date}. Command: `{command}`
- Machine: {cores} cores ({cpu}), {memory}, {os}; Python {python}, PostgreSQL {postgresql}, Django {django},
  gunicorn {gunicorn}, {wrk}.
- Server: `gunicorn -c config/gunicorn.conf.py config.wsgi`, {workers} sync workers, `REBOUND_MODE=production`
  (PostgreSQL database `rebound_bench`, created fresh and migrated with the built-in rules; a redis-server
  {redis} of the benchmark's own with AOF, `appendfsync everysec`, as docker-compose runs it;
  `LOG_LEVEL=WARNING`; `PROMETHEUS_MULTIPROC_DIR` set, as several workers need in production; persistent
  database connections, `DATABASE_CONN_MAX_AGE` 60 s; API key cache 5 s). `INTAKE_MODE` is `auto`, which with
  Redis and PostgreSQL is the buffered intake: the request classifies and queues the report in Redis, and the
  drain writes it to PostgreSQL: in the sustained phase Celery workers running the drain task, in the request
  side's rounds `manage.py drain_intake` between the timed runs. The checks below count rows only after a drain.
- Load: wrk, 1 thread, {connections} connections, {warmup} s warm-up then {duration} s measured per target,
  {rounds} rounds of bare view, one error, batch of {batch}. The single error is the issue's rate limit
  (`openai`/`chat`, 429, `Retry-After: 3`), so every request counts into the same pattern row; the batch
  holds {batch} varied errors over ten services and kinds, with `"successes": 400`.
- wrk, PostgreSQL and gunicorn share the same {cores} cores, so the absolute figures are low and move
  with the machine; the ratio is the result. gunicorn's sync workers close the connection after each
  response, so every request, bare or not, includes a TCP connect.

### Correctness

{correctness}

### Reproduce

1. PostgreSQL on 127.0.0.1:5432 (user `postgres`, trust auth) and `redis-server` on the PATH; the benchmark
   drops and creates only the database `rebound_bench` and starts a redis-server of its own.
2. `apt-get install -y wrk` (the benchmark says so if it is missing).
3. Run `{command}`. It prints the table; `--write-docs` rewrites this section (and nothing
   else in the file); the raw figures go to `bench/results/` (not committed). See `bench/README.md`.
"""


if __name__ == "__main__":
    raise SystemExit(main())

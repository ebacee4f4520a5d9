"""Escalation benchmark (issue 13): raising 10,000 escalations over 100 dedup keys, against PostgreSQL.

    .venv/bin/python -m bench.escalations [--rounds 3] [--processes 4] [--write-docs]

Several processes raise at once (`healing.escalations.services.raise_escalation`, in-process, as the triggers
call it), raise n with the key n mod 100, so every key is raised by every process and most raises are repeats
that count into the escalation open with their key, under the same row locks as production. The baseline, in
the same processes and the same run: one raw psycopg `INSERT` of one row per raise into a plain table, the
floor of writing anything per raise; for reference, a raw `INSERT ... ON CONFLICT (key) DO UPDATE` (the
smallest deduplication SQL can do, without history, levels or notices). Reported: raises per second, latency,
and the rows each raise wrote (PostgreSQL's own counts for the tables) and statements it sent.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shlex
import signal
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench import cpu, report, server

DB_NAME = "rebound_bench_escalations"
RESULTS = Path(__file__).resolve().parent / "results"
RAISES = 10_000
KEYS = 100
MODES = ("raw_insert", "raw_upsert", "rebound")
LABELS = {
    "raw_insert": "raw INSERT, one row per raise (baseline)",
    "raw_upsert": "raw INSERT … ON CONFLICT DO UPDATE (reference)",
    "rebound": "raise_escalation",
}
TABLES = {
    "raw_insert": ("bench_raw_escalation",),
    "raw_upsert": ("bench_raw_upsert",),
    "rebound": ("healing_escalation", "healing_escalationevent"),
}
RAW_TABLES = """
CREATE TABLE bench_raw_escalation (
    id bigserial PRIMARY KEY, dedup_key varchar(300) NOT NULL, level varchar(10) NOT NULL,
    title varchar(200) NOT NULL, service varchar(100) NOT NULL, context jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE bench_raw_upsert (
    id bigserial PRIMARY KEY, dedup_key varchar(300) NOT NULL UNIQUE, level varchar(10) NOT NULL,
    title varchar(200) NOT NULL, service varchar(100) NOT NULL, context jsonb NOT NULL,
    occurrences integer NOT NULL DEFAULT 1, first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now());
"""


def key_of(n: int) -> str:
    return f"repeated_pattern:bench-{n % KEYS:03d}"


# --- one raiser process --------------------------------------------------------------------------------------


def raiser(mode: str, index: int, processes: int, ready: Any, go: Any, answers: Any) -> None:
    """One process: set up Django (or a raw connection), wait for the others, make its share of the raises
    (n = index, index + processes, ...), answer its timings and counts."""
    import django

    django.setup()
    from django.db import connection

    from healing.escalations import services, signals
    from healing.escalations.models import Escalation

    # Nothing listens to the notices here: a connected receiver would enqueue a Celery task per notice on a
    # broker no worker reads. Each notice is counted instead (one per new escalation: 100 of the 10,000).
    signals.notice_due.receivers.clear()
    signals.notice_due.sender_receivers_cache.clear()
    notices = []
    signals.notice_due.connect(lambda sender, **kw: notices.append(kw["notice"]), weak=False)
    statements = [0]

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements[0] += 1
        return execute(sql, params, many, context)

    raw = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) if mode != "rebound" else None

    def raw_insert(n: int) -> None:
        assert raw is not None
        raw.execute(
            "INSERT INTO bench_raw_escalation (dedup_key, level, title, service, context) VALUES (%s, %s, %s, %s, %s)",
            (key_of(n), "warning", f"pattern {n % KEYS} repeated", "bench-svc", '{"count": 6}'),
        )
        statements[0] += 1

    def raw_upsert(n: int) -> None:
        assert raw is not None
        raw.execute(
            "INSERT INTO bench_raw_upsert (dedup_key, level, title, service, context) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (dedup_key) DO UPDATE SET occurrences = bench_raw_upsert.occurrences + 1, "
            "last_seen_at = now(), context = EXCLUDED.context",
            (key_of(n), "warning", f"pattern {n % KEYS} repeated", "bench-svc", '{"count": 6}'),
        )
        statements[0] += 1

    outcomes: dict[str, int] = {}

    def rebound(n: int) -> None:
        done = services.raise_escalation(
            services.Raise(
                trigger="repeated_pattern",
                dedup_key=key_of(n),
                level="warning",
                title=f"pattern {n % KEYS} repeated",
                summary="more than 5 errors of the pattern in 5 minutes",
                service="bench-svc",
                error_class="network",
                context={"count": 6},
            )
        )
        outcomes[done.outcome] = outcomes.get(done.outcome, 0) + 1

    call = {"raw_insert": raw_insert, "raw_upsert": raw_upsert, "rebound": rebound}[mode]
    Escalation.objects.exists()  # connect before the clock starts
    ready.wait()
    go.wait()
    samples: list[float] = []
    cpu_started = time.process_time()
    started = time.monotonic()
    with connection.execute_wrapper(count):
        for n in range(index, RAISES, processes):
            t0 = time.perf_counter()
            call(n)
            samples.append((time.perf_counter() - t0) * 1000)
    ended = time.monotonic()
    cpu_s = time.process_time() - cpu_started
    if raw is not None:
        raw.close()
    connection.close()
    answers.put(
        {
            "index": index,
            "started": started,
            "ended": ended,
            "samples_ms": samples,
            "statements": statements[0],
            "cpu_s": cpu_s,
            "notices": len(notices),
            "outcomes": outcomes,
        }
    )


# --- measuring ------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One mode, one round."""

    mode: str
    round: int
    seconds: float
    samples_ms: list[float]
    statements: int
    client_cpu_s: float  # the raiser processes' own CPU time, all of them
    notices: int
    outcomes: dict[str, int]
    writes: dict[str, dict[str, int]]  # table -> inserted, updated, hot_updated (PostgreSQL's counts)
    other_cpu_pct: float

    @property
    def per_second(self) -> float:
        return RAISES / self.seconds

    @property
    def p50(self) -> float:
        return report.percentile(self.samples_ms, 50)

    @property
    def p99(self) -> float:
        return report.percentile(self.samples_ms, 99)

    @property
    def client_cpu_us(self) -> float:
        return self.client_cpu_s / RAISES * 1e6

    def rows_per_raise(self) -> float:
        return sum(w["inserted"] + w["updated"] for w in self.writes.values()) / RAISES


def table_writes(conn: psycopg.Connection[Any], tables: tuple[str, ...]) -> dict[str, dict[str, int]]:
    rows = conn.execute(
        "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = ANY(%s)",
        (list(tables),),
    ).fetchall()
    return {name: {"inserted": ins, "updated": upd, "hot_updated": hot} for name, ins, upd, hot in rows}


def settled_writes(conn: psycopg.Connection[Any], tables: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """The tables' write counts once every backend's statistics reached the collector (a backend sends them at
    the end of its transactions at most once a second, and when it exits): read until two reads agree."""
    last = table_writes(conn, tables)
    for _ in range(20):
        time.sleep(1.0)
        conn.execute("SELECT pg_stat_clear_snapshot()")
        now = table_writes(conn, tables)
        if now == last:
            return now
        last = now
    return last


def delta(after: dict[str, dict[str, int]], before: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {
        table: {k: v - before.get(table, {}).get(k, 0) for k, v in counts.items()}
        for table, counts in after.items()
    }


def measure(mode: str, number: int, processes: int, admin: psycopg.Connection[Any]) -> Run:
    """Start the raisers, release them together, and time from the release to the last one done."""
    context = multiprocessing.get_context("spawn")
    ready, go = context.Barrier(processes + 1), context.Barrier(processes + 1)
    answers = context.Queue()
    before_writes = settled_writes(admin, TABLES[mode])
    workers = [
        context.Process(target=raiser, args=(mode, i, processes, ready, go, answers))
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    ready.wait(timeout=120)
    before = cpu.sample()
    go.wait(timeout=10)
    results = [answers.get(timeout=600) for _ in workers]
    other = cpu.other_share(before, cpu.sample())
    for worker in workers:
        worker.join(timeout=30)
    writes = delta(settled_writes(admin, TABLES[mode]), before_writes)
    seconds = max(r["ended"] for r in results) - min(r["started"] for r in results)
    outcomes: dict[str, int] = {}
    for r in results:
        for name, n in r["outcomes"].items():
            outcomes[name] = outcomes.get(name, 0) + n
    return Run(
        mode=mode,
        round=number,
        seconds=seconds,
        samples_ms=[s for r in results for s in r["samples_ms"]],
        statements=sum(r["statements"] for r in results),
        client_cpu_s=sum(r["cpu_s"] for r in results),
        notices=sum(r["notices"] for r in results),
        outcomes=outcomes,
        writes=writes,
        other_cpu_pct=other,
    )


def empty(admin: psycopg.Connection[Any]) -> None:
    """Each round starts from empty tables: its first raise of each key makes a new escalation."""
    admin.execute(
        "TRUNCATE healing_delivery, healing_escalationevent, healing_escalation, bench_raw_escalation, "
        "bench_raw_upsert RESTART IDENTITY CASCADE"
    )


def verify(run: Run, admin: psycopg.Connection[Any]) -> list[str]:
    """What the round must have left: every raise counted exactly once, one open escalation per key."""
    problems: list[str] = []

    def check(ok: bool, what: str) -> None:
        if not ok:
            problems.append(f"round {run.round}, {run.mode}: {what}")

    one = admin.execute
    check(len(run.samples_ms) == RAISES, f"{len(run.samples_ms)} raises timed")
    if run.mode == "raw_insert":
        check(one("SELECT count(*) FROM bench_raw_escalation").fetchone() == (RAISES,), "rows")
    elif run.mode == "raw_upsert":
        row = one("SELECT count(*), sum(occurrences) FROM bench_raw_upsert").fetchone()
        check(row == (KEYS, RAISES), f"keys and occurrences {row}")
    else:
        row = one(
            "SELECT count(*), count(*) FILTER (WHERE state = 'open'), sum(occurrences), count(DISTINCT dedup_key), "
            "sum(notice) FROM healing_escalation"
        ).fetchone()
        check(row == (KEYS, KEYS, RAISES, KEYS, KEYS), f"escalations, open, occurrences, keys, notices {row}")
        events = dict(one("SELECT kind, count(*) FROM healing_escalationevent GROUP BY kind").fetchall())
        check(events == {"raised": KEYS, "repeated": RAISES - KEYS}, f"events {events}")
        check(run.outcomes == {"raised": KEYS, "repeated": RAISES - KEYS}, f"outcomes {run.outcomes}")
        check(run.notices == KEYS, f"{run.notices} notices")
    return problems


# --- running ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    rounds: int
    processes: int
    write_docs: bool
    pg_admin_url: str
    db_name: str
    keep_workdir: bool


def parse_args(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.escalations", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every measurement; medians reported")
    parser.add_argument("--processes", type=int, default=4, help="raiser processes at once (default 4)")
    server.add_stack_options(parser, DB_NAME)
    a = parser.parse_args(argv)
    if min(a.rounds, a.processes) < 1:
        parser.error("rounds and processes must be at least 1")
    server.check_db_name(parser, a.db, server.DEFAULT_DB_NAME)
    return Options(a.rounds, a.processes, a.write_docs, a.pg, a.db, a.keep_workdir)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with server.scratch_stack(
        prefix="rebound-bench-esc-",
        pg_admin_url=opts.pg_admin_url,
        db_name=opts.db_name,
        workers=1,
        keep_workdir=opts.keep_workdir,
    ) as stack:
        try:
            return _run(stack, opts)
        finally:
            server.drop_database(stack)


def _run(stack: server.Stack, opts: Options) -> int:
    started = datetime.now(UTC)
    print(f"database {stack.db_name}: recreating and migrating …", flush=True)
    server.recreate_database(stack)
    stack.env = server.server_env(stack)
    server.manage(stack, "migrate", "--noinput")
    os.environ.update(stack.env)  # the raisers are spawned with the benchmark's environment
    runs: list[Run] = []
    failures: list[str] = []
    with psycopg.connect(stack.database_url, autocommit=True) as admin:
        admin.execute(RAW_TABLES)
        for number in range(1, opts.rounds + 1):
            print(f"round {number}/{opts.rounds}", flush=True)
            for mode in MODES:
                empty(admin)
                run = measure(mode, number, opts.processes, admin)
                failures += verify(run, admin)
                runs.append(run)
                print(
                    f"  {mode}: {run.per_second:,.0f} raises/s, p50 {run.p50:.2f} ms, p99 {run.p99:.2f} ms, "
                    f"{run.rows_per_raise():.2f} rows, {run.statements / RAISES:.2f} statements and "
                    f"{run.client_cpu_us:,.0f} µs of client CPU per raise, "
                    f"other CPU {run.other_cpu_pct:.0f}%",
                    flush=True,
                )
    env = report.machine()
    env["postgresql"] = server.postgres_version(stack)
    outcome = Outcome(opts, started, runs, failures, env)
    checked = "Correctness: " + ("ok" if outcome.correct else "FAILED: " + "; ".join(failures[:20]))
    return report.finish(
        "escalations",
        outcome,
        [outcome.table(), outcome.verdict() + "\n" + checked],
        write_docs=opts.write_docs,
    )


# --- telling ------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    opts: Options
    started: datetime
    runs: list[Run]
    failures: list[str]
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def correct(self) -> bool:
        return not self.failures

    def of(self, mode: str) -> list[Run]:
        return [r for r in self.runs if r.mode == mode]

    def median(self, mode: str, figure: str) -> float:
        return statistics.median(float(getattr(r, figure)) for r in self.of(mode))

    def ratio(self, mode: str, base: str) -> float:
        """The median over rounds of the round's raises per second against its baseline's."""
        pairs = zip(self.of(mode), self.of(base), strict=True)
        return statistics.median(m.per_second / b.per_second for m, b in pairs)

    def per_round(self, mode: str, base: str) -> str:
        pairs = zip(self.of(mode), self.of(base), strict=True)
        return ", ".join(f"{m.per_second / b.per_second:.2f}" for m, b in pairs)

    def writes(self, mode: str, table: str, kind: str) -> float:
        return statistics.median(r.writes.get(table, {}).get(kind, 0) / RAISES for r in self.of(mode))

    def table(self) -> str:
        lines = [
            "| measurement | raises/s | p50 ms | p99 ms | rows written per raise | statements per raise "
            "| client CPU µs per raise | other CPU |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for mode in MODES:
            runs = self.of(mode)
            lines.append(
                f"| {LABELS[mode]} | {self.median(mode, 'per_second'):,.0f} | {self.median(mode, 'p50'):.2f} "
                f"| {self.median(mode, 'p99'):.2f} | {statistics.median(r.rows_per_raise() for r in runs):.2f} "
                f"| {statistics.median(r.statements / RAISES for r in runs):.2f} "
                f"| {self.median(mode, 'client_cpu_us'):,.0f} | {max(r.other_cpu_pct for r in runs):.0f}% |"
            )
        return "\n".join(lines)

    def cpu_ratio(self) -> float:
        return self.median("rebound", "client_cpu_us") / self.median("raw_insert", "client_cpu_us")

    def rows_table(self) -> str:
        lines = [
            "| table | inserted per raise | updated per raise | of which HOT |",
            "| --- | ---: | ---: | ---: |",
        ]
        for table in TABLES["rebound"]:
            lines.append(
                f"| `{table}` | {self.writes('rebound', table, 'inserted'):.3f} "
                f"| {self.writes('rebound', table, 'updated'):.3f} | {self.writes('rebound', table, 'hot_updated'):.3f} |"
            )
        return "\n".join(lines)

    def verdict(self) -> str:
        ours = self.median("rebound", "per_second")
        return (
            f"raise_escalation: **{ours:,.0f} raises/s** with {self.opts.processes} processes over {KEYS} keys, "
            f"**{self.ratio('rebound', 'raw_insert'):.2f}** of the raw INSERT's rate (per round: "
            f"{self.per_round('rebound', 'raw_insert')}) and {self.ratio('rebound', 'raw_upsert'):.2f} of the raw "
            f"upsert's (per round: {self.per_round('rebound', 'raw_upsert')})."
        )

    def correctness(self) -> str:
        if self.failures:
            return "**FAILED**: " + "; ".join(self.failures[:20])
        return (
            f"Every round of raise_escalation left exactly {KEYS} escalations, all open, one per key, whose "
            f"occurrences add up to {RAISES:,}; {RAISES:,} events ({KEYS} `raised`, {RAISES - KEYS:,} `repeated`); "
            f"{KEYS} notices (one per new escalation, none for a repeat); the raisers' outcomes {KEYS} `raised` and "
            f"{RAISES - KEYS:,} `repeated`. The raw INSERT stored {RAISES:,} rows and the raw upsert {KEYS} rows whose "
            f"counts add up to {RAISES:,}: **ok**."
        )

    def command(self) -> str:
        return ".venv/bin/python -m bench.escalations " + shlex.join(sys.argv[1:])

    def save(self) -> None:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"escalations-{self.started:%Y%m%dT%H%M%SZ}.json"
        data = {
            "started": self.started.isoformat(),
            "options": asdict(self.opts),
            "environment": self.environment,
            "failures": self.failures,
            "runs": [
                {k: v for k, v in asdict(r).items() if k != "samples_ms"} | {"p50": r.p50, "p99": r.p99}
                for r in self.runs
            ],
        }
        path.write_text(json.dumps(data, indent=2))
        print(f"results: {path}")

    def section(self) -> str:
        env = self.environment
        return f"""## Escalations (issue 13)

How fast the escalation queue takes raises: {RAISES:,} raises of `healing.escalations.services.raise_escalation`
over {KEYS} dedup keys, from {self.opts.processes} processes at once, against PostgreSQL; the baseline is a raw
`INSERT` of one row per raise into a plain table, from the same processes in the same run.

{self.verdict()}

{self.table()}

Rows written per raise by raise_escalation, as PostgreSQL counts them (`pg_stat_user_tables`):

{self.rows_table()}

Raises/s is {RAISES:,} over the time from the moment the processes were released together to the last one's end;
latencies are each raise's, in its process. Each figure is the median of the {self.opts.rounds} rounds, and the
ratio the median of the per-round ratios. "Other CPU" is the most that processes outside the benchmark took of
the cores during a timed run (`bench/cpu.py`); above 10% a round is noisy.

What a raise does: {RAISES - KEYS:,} of the {RAISES:,} are repeats, and on PostgreSQL a repeat is one statement
(an `UPDATE … RETURNING` adding 1 to `occurrences` with the `INSERT` of its `repeated` event in the same `WITH`:
one round trip, no transaction of its own). The other {KEYS} are new escalations: that statement finds nothing,
then in a transaction a read of the one open with the key, a read of one resolved within the reopen window, the
runbook matched, the `INSERT` into the partial unique index and a `raised` event. Every raise writes two rows:
the escalation (inserted or updated, nearly always a HOT update) and its history event. The raw upsert is what
deduplication costs with nothing else: no history, no levels, no notices, no model. "Client CPU" is the raiser
processes' own CPU time per raise (Django, the escalation it answers built as a model, psycopg):
{self.cpu_ratio():.1f} times the raw INSERT's, on two cores that the raisers share with PostgreSQL.

### How it was measured

- Date: {self.started:%Y-%m-%d %H:%M} UTC. Command: `{self.command()}`
- Machine: {env.get("cores")} cores ({env.get("cpu")}), {env.get("memory")}, {env.get("os")}; Python {env.get("python")},
  PostgreSQL {env.get("postgresql")}, Django {env.get("django")}, psycopg {env.get("psycopg")}.
- Database `{self.opts.db_name}`, created fresh, migrated (`REBOUND_MODE=production`, the built-in triggers, policy
  and runbooks), emptied before each measurement and dropped at the end. No server: the raisers call the
  service in-process, as the triggers do (in the request that stores an error, or a Celery task).
- {self.opts.processes} raiser processes (spawned, each with its own database connection), released together by a
  barrier; process i makes raises i, i + {self.opts.processes}, … of key n mod {KEYS}, so every key is raised by
  every process and repeats of one key wait on its row lock as they would in production. Each round runs the
  raw INSERT, the raw upsert and raise_escalation in turn.
- The notices (signal `notice_due`, sent on commit) are counted, not sent: no notification receiver is connected
  in the raisers, so no Celery message is published (100 of the 10,000 raises notify).
- Rows written come from PostgreSQL's statistics for the tables, read before and after each measurement;
  statements are those the process sent (Django's `execute_wrapper`, savepoints included; BEGIN and COMMIT
  are not statements there).

### Correctness

{self.correctness()}

### Reproduce

1. PostgreSQL on 127.0.0.1:5432 (user `postgres`, trust auth); the benchmark drops and creates only the database
   `{self.opts.db_name}`, and drops it at the end. It uses no Redis.
2. `.venv/bin/python -m bench.escalations --write-docs` (options: `--rounds`, `--processes`, `--pg`, `--db`,
   `--keep-workdir`). It prints the table; `--write-docs` rewrites this section (and nothing else in the file);
   the raw figures go to `bench/results/` (not committed).
"""


if __name__ == "__main__":
    sys.exit(main())

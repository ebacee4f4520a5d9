"""Health-check scheduling benchmark (issue 12): how late the runs of 1,000 http checks start, and the scheduler's CPU.

    .venv/bin/python -m bench.health_checks [--checks 1000] [--interval 10] [--duration 60] [--write-docs]

N http checks (interval 10 s, timeout 2 s, their first due times spread evenly over one interval: 100 due runs
per second) against a loopback target, run by what production runs: ONE Celery worker process and ONE beat
(`celery -A config beat`, django-celery-beat's DatabaseScheduler), whose `dispatch_due_checks` every second
claims the due checks and enqueues one `run_check` per due run. Measured over a window after a warm-up:
- the lateness of each run, `started_at - due_at` of its HealthCheckResult, over the runs due in the window:
  p50/p95/p99/max, against the goal (p99 under 1 s) and against the baseline;
- the runs per second achieved against the rate offered, and whether each due run happened exactly once (no
  due run without a result, no second probe of one);
- the CPU of beat, of the dispatcher task, of the checks and of Celery itself, in percent of one core;
- the baseline, in the same run and against the same target: a plain loop of requests at the same rate from a
  pool of as many threads, no Rebound (the lateness floor of the machine, and its CPU per request).
Everything is started and stopped by the benchmark, also on Ctrl-C or an error: the processes, its own
PostgreSQL database (dropped at the end) and its own Redis database (emptied at the end).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import re
import secrets
import shlex
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any, cast

import redis

from bench import cpu, report, server
from bench.health_report import Outcome

DB_NAME = "rebound_bench_health"
# Not 8-15 (test runs claim those) nor 13 (the other benchmarks'): a database of its own, emptied at the end.
# Redis databases are shared with test runs (they claim 8-15, sometimes lower) and fuzz runs (7-4): the benchmark
# claims one the same way (a claim key with a TTL, taken only on an empty database or one it marked before).
DEFAULT_REDIS_DBS = "7,6,5,4,3,2,1"
REDIS_MARKER = "rebound:bench:health-checks"  # "this benchmark used this database": emptying it loses nothing
REDIS_CLAIM = "rebound:bench-run:claim"
REDIS_CLAIM_TTL = 900  # renewed at every measurement and every few seconds of one; a killed run's lapses
# Take (or, for the holder, empty and renew) the database: refused while another run holds it, or when it holds
# keys nobody marked as a benchmark's. Emptying and re-marking are one step, so no one else slips in between.
_CLAIM_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
if not holder and redis.call('DBSIZE') > 0 and redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
if ARGV[3] == '1' then redis.call('FLUSHDB') end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
redis.call('SET', KEYS[2], '1')
return 1
"""
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('FLUSHDB') return 1 end
return 0
"""
DISPATCH = "healing.checks.tasks.dispatch_due_checks"
RUN_CHECK = "healing.checks.tasks.run_check"
FAR_AWAY = timedelta(days=365)  # next_due_at of a check outside a phase: never due
LEAD_S = 2.0  # from spreading the due times to the first of them
SERVERS = ("redis-server",)  # Redis serves the benchmark: its CPU is ours, not other people's
CLK_TCK = os.sysconf("SC_CLK_TCK")
QUIET_PCT = 10.0  # other people's share of the cores under which a measurement starts (bench/cpu.py)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)


def micros(moment: datetime) -> int:
    """A timestamp as whole microseconds since the epoch: exact, so that due times match as keys."""
    return (moment - EPOCH) // US


def from_epoch(seconds: float) -> datetime:
    return EPOCH + timedelta(seconds=seconds)


# --- options ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pool:
    """One measurement: the worker's pool and concurrency; for the comparisons, a dispatcher loop beside beat with
    this period, and fewer checks than --checks (the first ones; the others are never due meanwhile)."""

    kind: str  # threads, prefork, solo
    concurrency: int
    loop: float | None = None
    checks: int | None = None

    @property
    def label(self) -> str:
        label = f"{self.kind}:{self.concurrency}"
        if self.loop is not None:
            label += f" + dispatcher loop {self.loop:g} s"
        if self.checks is not None:
            label += f", {self.checks:,} checks"
        return label


# The measurements of the documented run: the pools one worker could run (the recommended one first; prefork:2
# is production's default), production's default again with the dispatcher in a process of its own (a loop
# beside beat) and at half the load.
DEFAULT_POOLS = "prefork:8,prefork:4,prefork:2,threads:32,prefork:2+loop:0.25,prefork:2@500"


@dataclass(frozen=True)
class Options:
    checks: int
    interval: float
    timeout: float
    duration: float
    warmup: float
    tail: float
    baseline_duration: float
    pools: tuple[Pool, ...]
    rounds: int
    retries: int
    redis_dbs: tuple[int, ...]
    write_docs: bool
    pg_admin_url: str
    db_name: str
    keep_workdir: bool
    keep_db: bool
    quiet_wait: float

    @property
    def rate(self) -> float:
        return self.checks / self.interval


def parse_pools(text: str) -> tuple[Pool, ...]:
    """POOL:CONCURRENCY[+loop:SECONDS][@CHECKS], comma-separated: e.g. prefork:4,threads:32+loop:0.25@500."""
    pools = []
    for part in text.split(","):
        match = re.fullmatch(
            r"(threads|prefork|solo):(\d+)(?:\+loop:(\d+(?:\.\d+)?))?(?:@(\d+))?", part.strip()
        )
        if (
            not match
            or not 1 <= int(match[2]) <= 128
            or (match[3] is not None and not 0.05 <= float(match[3]) <= 10)
            or (match[4] is not None and int(match[4]) < 1)
        ):
            raise argparse.ArgumentTypeError(
                f"{part!r}: expected POOL:CONCURRENCY[+loop:SECONDS][@CHECKS], e.g. prefork:4 or threads:32+loop:0.25@500"
            )
        loop = float(match[3]) if match[3] is not None else None
        pools.append(Pool(match[1], int(match[2]), loop, int(match[4]) if match[4] is not None else None))
    return tuple(pools)


def parse_args(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.health_checks", description=__doc__.split("\n")[0])
    parser.add_argument("--checks", type=int, default=1000, help="http checks (default 1000)")
    parser.add_argument("--interval", type=float, default=10.0, help="each check's interval_s (default 10)")
    parser.add_argument("--timeout", type=float, default=2.0, help="each check's timeout_s (default 2)")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds per pool (default 60)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before the window (default 10)")
    parser.add_argument(
        "--tail", type=float, default=5.0, help="beat runs on this long after the window (default 5)"
    )
    parser.add_argument(
        "--baseline-duration", type=float, default=30.0, help="seconds of the plain loop (default 30)"
    )
    parser.add_argument(
        "--pools",
        type=parse_pools,
        default=parse_pools(DEFAULT_POOLS),
        help="the measurements, in order: POOL:CONCURRENCY[+loop:SECONDS][@CHECKS], comma-separated "
        f"(default {DEFAULT_POOLS}); +loop adds a dispatcher loop beside beat, @N spreads only N checks",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of every measurement, interleaved; the median round is reported (default 3)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help=f"measure again a pool during which other people took more than {QUIET_PCT:.0f}%% of the cores, "
        "at most this many times, keeping the quietest (default 2)",
    )
    parser.add_argument(
        "--redis-dbs",
        default=DEFAULT_REDIS_DBS,
        help=f"Redis databases to claim one of, in order (default {DEFAULT_REDIS_DBS})",
    )
    parser.add_argument("--keep-db", action="store_true", help="keep the PostgreSQL database at the end")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help=f"before each measurement, wait up to this long for other people's CPU under {QUIET_PCT:.0f}%% (default 300)",
    )
    server.add_stack_options(parser, DB_NAME)
    a = parser.parse_args(argv)
    # Bounded: at most 10,000 checks, 10 minutes per window, 1,000 due runs per second.
    if not 1 <= a.checks <= 10_000:
        parser.error("--checks must be between 1 and 10,000")
    if not (1 <= a.interval <= 3600 and 0.1 <= a.timeout <= 30 and a.checks / a.interval <= 1000):
        parser.error("--interval 1..3600 s, --timeout 0.1..30 s, and at most 1,000 due runs per second")
    if not (5 <= a.duration <= 600 and 0 <= a.warmup <= 300 and 2 <= a.tail <= 60):
        parser.error("--duration 5..600 s, --warmup 0..300 s, --tail 2..60 s")
    if not 1 <= a.baseline_duration <= 600:
        parser.error("--baseline-duration 1..600 s")
    if any(p.checks is not None and p.checks > a.checks for p in a.pools):
        parser.error("a measurement's @CHECKS must not exceed --checks")
    if not 0 <= a.retries <= 5:
        parser.error("--retries 0..5")
    if not 1 <= a.rounds <= 10:
        parser.error("--rounds 1..10")
    if not 0 <= a.quiet_wait <= 3600:
        parser.error("--quiet-wait 0..3600 s")
    try:
        redis_dbs = tuple(int(db) for db in a.redis_dbs.split(",") if db.strip())
    except ValueError:
        parser.error("--redis-dbs: comma-separated numbers")
    if not redis_dbs or not all(0 <= db <= 15 for db in redis_dbs):
        parser.error("--redis-dbs: databases 0..15")
    server.check_db_name(parser, a.db, DB_NAME)
    return Options(
        checks=a.checks,
        interval=a.interval,
        timeout=a.timeout,
        duration=a.duration,
        warmup=a.warmup,
        tail=a.tail,
        baseline_duration=a.baseline_duration,
        pools=a.pools,
        rounds=a.rounds,
        retries=a.retries,
        redis_dbs=redis_dbs,
        write_docs=a.write_docs,
        pg_admin_url=a.pg,
        db_name=a.db,
        keep_workdir=a.keep_workdir,
        keep_db=a.keep_db,
        quiet_wait=a.quiet_wait,
    )


# --- processes ----------------------------------------------------------------------------------------------


class Processes:
    """The benchmark's children, each in a session of its own; `stop_all` ends every one still running."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self, name: str, args: list[str], env: dict[str, str], *, stdout_pipe: bool = False
    ) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            args,
            cwd=server.ROOT,
            env=env,
            stdout=subprocess.PIPE if stdout_pipe else log,
            stderr=log,
            start_new_session=True,  # Ctrl-C at the terminal reaches only the benchmark, which stops them
        )
        log.close()
        self.running[name] = process
        return process

    def stop(self, name: str, grace_s: float = 30.0) -> None:
        """SIGTERM (Celery's warm shutdown: running tasks finish), then SIGKILL to its group if it hangs."""
        process = self.running.pop(name, None)
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        # A prefork worker's children are in its group: none may outlive it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name, grace_s=15.0)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


# --- CPU ----------------------------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, own user + system ticks, reaped children's ticks), or None once it has ended."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def tree_ticks(root: int) -> int:
    """The CPU ticks of a process and its descendants (a prefork worker's children), ended children included
    once their parent reaped them."""
    parents: dict[int, int] = {}
    own: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            parents[int(entry.name)], own[int(entry.name)] = stat[0], stat[1]
    mine, changed = {root}, True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if parent in mine and pid not in mine:
                mine.add(pid)
                changed = True
    root_stat = _stat(root)
    reaped = root_stat[2] if root_stat else 0
    return sum(own.get(pid, 0) for pid in mine) + reaped


@dataclass
class CpuReading:
    wall: float  # time.time()
    roles: dict[str, int]  # role -> ticks of its process tree
    machine: cpu.Sample


def read_cpu(roles: dict[str, int]) -> CpuReading:
    return CpuReading(
        time.time(), {role: tree_ticks(pid) for role, pid in roles.items()}, cpu.sample(SERVERS)
    )


def cpu_seconds(before: CpuReading, after: CpuReading) -> dict[str, float]:
    """CPU seconds per role between two readings, plus PostgreSQL's and Redis's (every process of theirs)."""
    seconds = {role: (after.roles[role] - before.roles.get(role, 0)) / CLK_TCK for role in after.roles}
    for kind, name in (("postgres", "postgresql"), ("server", "redis")):
        used = 0
        for pid, (what, ticks) in after.machine.ticks.items():
            if what == kind:
                used += ticks - before.machine.ticks.get(pid, (what, 0))[1]
        seconds[name] = max(used, 0) / CLK_TCK
    return seconds


# --- the stack ----------------------------------------------------------------------------------------------


@dataclass
class Context:
    opts: Options
    stack: server.Stack
    procs: Processes
    redis: redis.Redis
    target_port: int = 0
    trace_root: Path = Path()
    check_ids: list[int] = field(default_factory=list)  # in the order of their spread


CLAIM_ID = f"health-checks-{os.getpid()}-{secrets.token_hex(4)}"


def claim_redis(dbs: tuple[int, ...]) -> tuple[int, redis.Redis]:
    """The first of `dbs` nobody else holds, claimed and emptied; waits (at most ten minutes) while all are taken."""
    deadline = time.monotonic() + 600
    while True:
        for db in dbs:
            client = redis.Redis.from_url(f"redis://127.0.0.1:6379/{db}")
            try:
                if client.eval(
                    _CLAIM_SCRIPT, 2, REDIS_CLAIM, REDIS_MARKER, CLAIM_ID, str(REDIS_CLAIM_TTL), "1"
                ):
                    return db, client
            except redis.ResponseError:  # a database number the server does not have
                pass
            client.close()
        if time.monotonic() > deadline:
            raise SystemExit(f"no free Redis database among {list(dbs)}: all held by other runs or not empty")
        print(f"Redis databases {list(dbs)} are all taken: waiting", flush=True)
        time.sleep(10)


def renew_redis(client: redis.Redis, *, empty: bool = False) -> None:
    """Keep the claim (and empty the database, between measurements); losing it is an error: someone else's now."""
    if not client.eval(
        _CLAIM_SCRIPT, 2, REDIS_CLAIM, REDIS_MARKER, CLAIM_ID, str(REDIS_CLAIM_TTL), "1" if empty else "0"
    ):
        raise SystemExit("the benchmark lost its claim on its Redis database")


def release_redis(client: redis.Redis) -> None:
    with contextlib.suppress(redis.RedisError):
        client.eval(_RELEASE_SCRIPT, 1, REDIS_CLAIM, CLAIM_ID)


def start_target(ctx: Context) -> None:
    process = ctx.procs.start(
        "target", [server.PYTHON, "-m", "bench.health_target", "serve"], dict(os.environ), stdout_pipe=True
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode().strip()  # "port N", printed once the socket listens
    if not line.startswith("port "):
        raise SystemExit(f"the loopback target did not start:\n{ctx.procs.log_tail('target')}")
    ctx.target_port = int(line.split()[1])


def target_hits(ctx: Context) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{ctx.target_port}/__hits", timeout=10) as answer:
        return {str(k): int(v) for k, v in json.loads(answer.read()).items()}


def prepare(ctx: Context) -> None:
    opts, stack = ctx.opts, ctx.stack
    print(f"database {stack.db_name}: recreating and migrating …", flush=True)
    server.recreate_database(stack)
    stack.env = server.server_env(stack)
    stack.env.update(
        {
            "OUTBOUND_ALLOWED_HOSTS": f"127.0.0.1:{ctx.target_port}",
            "REBOUND_BENCH_TRACE_DIR": str(ctx.trace_root),
        }
    )
    server.manage(stack, "migrate", "--noinput")
    os.environ.update(stack.env)
    import django

    django.setup()
    from healing.checks.models import HealthCheck

    far = datetime.now(UTC) + FAR_AWAY
    HealthCheck.objects.bulk_create(
        [
            HealthCheck(
                name=f"bench-{i:05d}",
                service="bench-target",
                kind=HealthCheck.Kind.HTTP,
                interval_s=opts.interval,
                timeout_s=opts.timeout,
                method="GET",
                url=f"http://127.0.0.1:{ctx.target_port}/c/{i}",
                expected_status=[],
                next_due_at=far,
            )
            for i in range(opts.checks)
        ],
        batch_size=1000,
    )
    ctx.check_ids = list(HealthCheck.objects.order_by("name").values_list("id", flat=True))
    print(f"{len(ctx.check_ids)} http checks created against 127.0.0.1:{ctx.target_port}", flush=True)


# --- the baseline -------------------------------------------------------------------------------------------


def run_baseline(ctx: Context) -> dict[str, Any]:
    opts = ctx.opts
    threads = (
        max(p.concurrency for p in opts.pools if p.kind == "threads")
        if any(p.kind == "threads" for p in opts.pools)
        else opts.pools[0].concurrency
    )
    print(
        f"baseline: a plain loop of {opts.rate:g} requests/s from {threads} threads for {opts.baseline_duration:g} s …",
        flush=True,
    )
    args = [
        server.PYTHON,
        "-m",
        "bench.health_target",
        "loop",
        f"http://127.0.0.1:{ctx.target_port}/baseline",
        "--rate",
        str(opts.rate),
        "--duration",
        str(opts.baseline_duration),
        "--threads",
        str(threads),
        "--timeout",
        str(opts.timeout),
    ]
    wait_for_quiet(opts, "baseline")
    process = ctx.procs.start("baseline", args, dict(os.environ), stdout_pipe=True)
    roles = {"target": ctx.procs.running["target"].pid, "loop": process.pid}
    time.sleep(0.5)  # past its start-up (imports, the first connection): the loop itself begins after that
    before = read_cpu(roles)
    # On an error or Ctrl-C it stays in ctx.procs.running, so that stop_all ends it.
    out, _ = process.communicate(timeout=opts.baseline_duration + 60)
    ctx.procs.running.pop("baseline", None)
    after = read_cpu({"target": roles["target"]})
    if process.returncode != 0:
        raise SystemExit(f"the baseline loop failed:\n{ctx.procs.log_tail('baseline')}")
    data: dict[str, Any] = json.loads(out)
    data["threads"] = threads
    data["target_cpu_s"] = cpu_seconds(before, after)["target"]
    data["other_cpu_pct"] = cpu.other_share(before.machine, after.machine)
    data["window_s"] = after.wall - before.wall
    return data


def commit_latency(ctx: Context, samples: int = 300) -> dict[str, float]:
    """The floor of one claim on this machine: a one-row UPDATE in autocommit, the shape of the dispatcher's
    compare-and-set, in the benchmark's database. Each waits for PostgreSQL's WAL flush (fsync) at its commit."""
    import psycopg

    with psycopg.connect(ctx.stack.database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_commit (id int PRIMARY KEY, n bigint NOT NULL)")
        conn.execute("INSERT INTO bench_commit VALUES (1, 0) ON CONFLICT DO NOTHING")
        times = []
        for n in range(samples + 20):
            began = time.perf_counter()
            conn.execute("UPDATE bench_commit SET n = n + 1 WHERE id = 1")
            if n >= 20:  # the first ones warm the connection and the page
                times.append(time.perf_counter() - began)
    return spread_of(times)


# --- one measurement: a worker and beat -----------------------------------------------------------------------


@dataclass
class PhaseData:
    pool: Pool
    loop_pid: int  # the dispatcher loop's process, 0 without one
    t0: float  # the first due time (epoch seconds)
    w0: float  # the window
    w1: float
    first_due: dict[int, int]  # check id -> its first due time, µs since the epoch
    results: list[tuple[int, int, int, int, bool]]  # check id, due, started, created (µs), ok
    events: list[dict[str, Any]]
    cpu_s: dict[str, float]
    other_cpu_pct: float
    hits: dict[str, int]
    queue_after_drain: int
    beat_stopped_at: float
    worker_log: str
    attempts: int = 1
    round: int = 1


def wait_for_quiet(opts: Options, what: str) -> float:
    """This machine is shared: wait (bounded by --quiet-wait) until other people's processes have taken less than
    QUIET_PCT of the cores for 5 s, so that a test suite's burst does not land in a measurement. Answers the
    last share seen; the tables show what others took during the measurement itself."""
    deadline, told = time.monotonic() + opts.quiet_wait, False
    while True:
        before = cpu.sample(SERVERS)
        time.sleep(5)
        share = cpu.other_share(before, cpu.sample(SERVERS))
        if share < QUIET_PCT or time.monotonic() >= deadline:
            return share
        if not told:
            print(
                f"{what}: waiting for other people's CPU ({share:.0f}% of the cores) to drop under "
                f"{QUIET_PCT:.0f}% (at most {opts.quiet_wait:g} s) …",
                flush=True,
            )
            told = True


def _sleep_until(epoch: float) -> None:
    while (left := epoch - time.time()) > 0:
        time.sleep(min(left, 1.0))


def _queued(client: redis.Redis) -> int:
    """Messages still waiting in the broker, or delivered and not yet acknowledged (acks_late)."""
    waiting, unacked = client.llen("celery"), client.hlen("unacked")
    return int(cast(int, waiting)) + int(cast(int, unacked))


def _trace(directory: Path) -> list[dict[str, Any]]:
    events = []
    for path in sorted(directory.glob("trace-*.jsonl")):
        pid = int(path.stem.split("-")[1])
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                events.append({**json.loads(line), "pid": pid})
    return events


def _wait_for_dispatch(ctx: Context, directory: Path, timeout_s: float = 60.0) -> None:
    """Until the worker has run a dispatch pass that beat sent: both are up and talking through Redis."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name in ("worker", "beat"):
            process = ctx.procs.running[name]
            if process.poll() is not None:
                raise SystemExit(f"{name} exited with {process.returncode}:\n{ctx.procs.log_tail(name)}")
        if any(e.get("name") == DISPATCH for e in _trace(directory)):
            return
        time.sleep(0.5)
    raise SystemExit(
        f"no dispatch pass within {timeout_s:.0f} s:\n{ctx.procs.log_tail('worker')}\n{ctx.procs.log_tail('beat')}"
    )


def spread(ctx: Context, t0: datetime, count: int) -> dict[int, int]:
    """The first `count` checks' next_due_at evenly over one interval from t0: `count / interval` due runs per
    second (the others stay parked)."""
    from healing.checks.models import HealthCheck

    ids = ctx.check_ids[:count]
    step = timedelta(seconds=ctx.opts.interval / len(ids))
    checks = [HealthCheck(id=check_id, next_due_at=t0 + i * step) for i, check_id in enumerate(ids)]
    HealthCheck.objects.bulk_update(checks, ["next_due_at"], batch_size=500)
    return {c.id: micros(c.next_due_at) for c in checks if c.next_due_at is not None}


def park(ctx: Context) -> None:
    """No check due until the next phase spreads them again."""
    from healing.checks.models import HealthCheck

    HealthCheck.objects.update(next_due_at=datetime.now(UTC) + FAR_AWAY)


def run_phase(ctx: Context, pool: Pool, number: int) -> PhaseData:
    from django.db import connections

    from healing.checks.models import HealthCheck, HealthCheckResult

    opts = ctx.opts
    directory = ctx.trace_root / f"phase-{number}"
    directory.mkdir(parents=True, exist_ok=True)
    renew_redis(ctx.redis, empty=True)
    hits_before = target_hits(ctx)
    env = {**ctx.stack.env, "REBOUND_BENCH_TRACE_DIR": str(directory)}
    worker_args = [server.PYTHON, "-m", "celery", "-A", "bench.health_celery", "worker"]
    worker_args += ["--pool", pool.kind, "--concurrency", str(pool.concurrency), "-l", "WARNING"]
    worker_args += ["-n", f"bench-health-{number}@%h"]
    beat_args = [server.PYTHON, "-m", "celery", "-A", "config", "beat", "-l", "WARNING"]
    beat_args += [
        "-s",
        str(ctx.stack.workdir / f"beat-{number}"),
        "--pidfile",
        str(ctx.stack.workdir / f"beat-{number}.pid"),
    ]
    print(
        f"[{pool.label}] starting the worker ({pool.kind} pool, concurrency {pool.concurrency}) and beat …",
        flush=True,
    )
    ctx.procs.start("worker", worker_args, env)
    ctx.procs.start("beat", beat_args, env)
    _wait_for_dispatch(ctx, directory)
    wait_for_quiet(opts, f"[{pool.label}]")
    loop_pid = 0
    if pool.loop is not None:
        loop_args = [server.PYTHON, "-m", "bench.health_dispatch", "--period", str(pool.loop)]
        loop_pid = ctx.procs.start("dispatch_loop", loop_args, env).pid

    t0 = datetime.now(UTC) + timedelta(seconds=LEAD_S)
    count = pool.checks or len(ctx.check_ids)
    first_due = spread(ctx, t0, count)
    connections.close_all()  # the benchmark holds no connection while it measures
    start = t0.timestamp()
    w0 = start + opts.warmup
    w1 = w0 + opts.duration
    roles = {"worker": ctx.procs.running["worker"].pid, "beat": ctx.procs.running["beat"].pid}
    roles["target"] = ctx.procs.running["target"].pid
    if loop_pid:
        roles["dispatch_loop"] = loop_pid
    print(
        f"[{pool.label}] {count} checks due from {t0:%H:%M:%S}, {count / opts.interval:g}/s; warm-up {opts.warmup:g} s, "
        f"window {opts.duration:g} s",
        flush=True,
    )
    _sleep_until(w0)
    before = read_cpu(roles)
    while time.time() < w1:
        _sleep_until(min(w1, time.time() + 10))
        done = HealthCheckResult.objects.filter(due_at__gte=t0).count()
        connections.close_all()
        renew_redis(ctx.redis)
        print(f"  {time.time() - start:5.0f} s: {done:,} results", flush=True)
    after = read_cpu(roles)

    # Beat runs on for the tail, so that a run due just before the window's end is dispatched; then no more
    # dispatches, and the worker finishes what was sent (bounded: a probe ends within its timeout).
    _sleep_until(w1 + opts.tail)
    ctx.procs.stop("dispatch_loop")
    ctx.procs.stop("beat")
    beat_stopped = time.time()
    deadline = time.monotonic() + 2 * opts.timeout + 30
    last, steady_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = HealthCheckResult.objects.filter(due_at__gte=t0).count()
        if count != last:
            last, steady_since = count, time.monotonic()
        elif _queued(ctx.redis) == 0 and time.monotonic() - steady_since > 2:
            break
        time.sleep(0.5)
    queued = _queued(ctx.redis)
    ctx.procs.stop("worker")
    worker_log = ctx.procs.log_tail("worker", 15)

    rows = HealthCheckResult.objects.filter(
        due_at__gte=t0, source=HealthCheckResult.Source.SCHEDULED
    ).values_list("health_check_id", "due_at", "started_at", "created_at", "ok")
    results = [
        (check_id, micros(due), micros(started) if started else micros(created), micros(created), ok)
        for check_id, due, started, created, ok in rows
        if due is not None
    ]
    park(ctx)
    assert HealthCheck.objects.filter(next_due_at__lt=datetime.now(UTC)).count() == 0
    connections.close_all()
    hits_after = target_hits(ctx)
    hits = {
        path: n - hits_before.get(path, 0) for path, n in hits_after.items() if n != hits_before.get(path, 0)
    }
    return PhaseData(
        pool=pool,
        loop_pid=loop_pid,
        t0=start,
        w0=w0,
        w1=w1,
        first_due=first_due,
        results=results,
        events=_trace(directory),
        cpu_s=cpu_seconds(before, after),
        other_cpu_pct=cpu.other_share(before.machine, after.machine),
        hits=hits,
        queue_after_drain=queued,
        beat_stopped_at=beat_stopped,
        worker_log=worker_log,
    )


def measure(ctx: Context, pool: Pool, number: int) -> PhaseData:
    """A pool's measurement, again (at most --retries times) when other people took more than QUIET_PCT of the
    cores meanwhile: the quietest one is kept."""
    tries = [run_phase(ctx, pool, number * 10)]
    while tries[-1].other_cpu_pct > QUIET_PCT and len(tries) <= ctx.opts.retries:
        print(
            f"[{pool.label}] other people took {tries[-1].other_cpu_pct:.0f}% of the cores meanwhile: measuring again",
            flush=True,
        )
        tries.append(run_phase(ctx, pool, number * 10 + len(tries)))
    best = min(tries, key=lambda t: t.other_cpu_pct)
    best.attempts = len(tries)
    return best


# --- running ------------------------------------------------------------------------------------------------


def code_version() -> str:
    """Which Rebound was measured: the commit, whether the tree had changes, and the scheduler's own files."""
    import hashlib

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=server.ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    dirty = " with uncommitted changes" if git("status", "--porcelain") else ""
    files = ", ".join(
        f"`{name}` {hashlib.sha256((server.ROOT / name).read_bytes()).hexdigest()[:12]}"
        for name in ("healing/checks/services.py", "healing/checks/tasks.py")
        if (server.ROOT / name).exists()
    )
    return f"commit {git('rev-parse', '--short', 'HEAD') or '?'}{dirty}; sha256 of {files}"


def environment(ctx: Context) -> dict[str, str]:
    env = report.machine()
    env["redis_db"] = ctx.stack.redis_url.rsplit("/", 1)[1]
    env["postgresql"] = server.postgres_version(ctx.stack)
    info = cast(dict[str, Any], ctx.redis.info("server"))
    env["redis"] = str(info.get("redis_version", "?"))
    for package in ("celery", "django-celery-beat", "kombu", "httpx"):
        try:
            env[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            env[package] = "?"
    return env


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--render"]:
        # Tell a saved run again (bench/results/health-checks-*.json), e.g. after a change of the docs' wording.
        if len(args) < 2:
            raise SystemExit("usage: python -m bench.health_checks --render RESULTS.json [--write-docs]")
        outcome = Outcome.load(Path(args[1]))
        for block in outcome.blocks():
            print(f"\n{block}")
        if "--write-docs" in args[2:]:
            report.write_section("health-checks", outcome.section())
            print("wrote docs/benchmarks.md")
        return 0
    opts = parse_args(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # Any other benchmark shares the two cores: measured together, both would be spoiled.
    server.wait_for_other_benchmarks()
    with server.scratch_stack(
        prefix="rebound-bench-health-",
        pg_admin_url=opts.pg_admin_url,
        db_name=opts.db_name,
        workers=1,
        keep_workdir=opts.keep_workdir,
    ) as stack:
        redis_db, client = claim_redis(opts.redis_dbs)
        stack.redis_url = f"redis://127.0.0.1:6379/{redis_db}"
        print(f"Redis db {redis_db} claimed", flush=True)
        ctx = Context(opts, stack, Processes(stack.workdir), client, trace_root=stack.workdir / "trace")
        try:
            return _run(ctx)
        except KeyboardInterrupt:
            print(
                "interrupted: stopping the processes, dropping the database, emptying the Redis db",
                flush=True,
            )
            return 130
        finally:
            ctx.procs.stop_all()
            _drop(ctx)
            release_redis(client)
            client.close()


def _drop(ctx: Context) -> None:
    with contextlib.suppress(Exception):
        from django.db import connections

        connections.close_all()
    if ctx.opts.keep_db:
        print(f"database kept: {ctx.stack.db_name}")
        return
    import psycopg
    from psycopg import sql

    with contextlib.suppress(psycopg.Error), psycopg.connect(ctx.stack.pg_admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(ctx.stack.db_name))
        )


def _run(ctx: Context) -> int:
    started = datetime.now(UTC)
    code = code_version()  # before measuring: what the processes started from
    ctx.trace_root.mkdir(parents=True, exist_ok=True)
    start_target(ctx)
    prepare(ctx)
    commits = {"before": commit_latency(ctx)}
    baseline = run_baseline(ctx)
    # Round by round, every pool in each, so that a slow drift of the machine spreads over all of them.
    phases = []
    for round_ in range(1, ctx.opts.rounds + 1):
        if ctx.opts.rounds > 1:
            print(f"round {round_}/{ctx.opts.rounds}", flush=True)
        for n, pool in enumerate(ctx.opts.pools, start=1):
            data = measure(ctx, pool, round_ * 100 + n)
            data.round = round_
            phases.append(data)
    commits["after"] = commit_latency(ctx)
    outcome = Outcome(
        opts=asdict(ctx.opts),
        command=".venv/bin/python -m bench.health_checks " + shlex.join(sys.argv[1:]),
        started=started,
        environment={**environment(ctx), "code": code},
        baseline=baseline,
        commits=commits,
        phases=[analyse(ctx.opts, p) for p in phases],
    )
    return report.finish("health-checks", outcome, outcome.blocks(), write_docs=ctx.opts.write_docs)


# --- analysis -----------------------------------------------------------------------------------------------


def spread_of(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": report.percentile(values, 50),
        "p95": report.percentile(values, 95),
        "p99": report.percentile(values, 99),
        "max": max(values) if values else math.nan,
        "mean": statistics.fmean(values) if values else math.nan,
    }


def _due_key(args: list[Any]) -> tuple[int, int] | None:
    """(check id, due µs) from run_check's arguments (check_id, due_at_iso, source)."""
    try:
        return int(args[0]), micros(datetime.fromisoformat(str(args[1])))
    except (IndexError, TypeError, ValueError):
        return None


def analyse(opts: Options, p: PhaseData) -> dict[str, Any]:
    """Everything the report says about one phase, as plain numbers (saved as JSON too)."""
    w0, w1 = int(p.w0 * 1e6), int(p.w1 * 1e6)
    interval_us = round(opts.interval * 1e6)
    window_s = p.w1 - p.w0
    in_window = [r for r in p.results if w0 <= r[1] < w1]
    by_key: dict[tuple[int, int], list[tuple[int, int, int, int, bool]]] = defaultdict(list)
    for r in p.results:
        by_key[(r[0], r[1])].append(r)

    # The schedule: each check's due times are its first one plus whole intervals (next_due_at moves by
    # interval_s from the due time it claimed). Every such slot in the window must have exactly one result.
    expected: set[tuple[int, int]] = set()
    for check_id, first in p.first_due.items():
        step = max(0, math.ceil((w0 - first) / interval_us))
        while (due := first + step * interval_us) < w1:
            expected.add((check_id, due))
            step += 1
    got = {(r[0], r[1]) for r in in_window}
    missing = sorted(expected - got)
    # A missed run was either sent and never run (its message expired: it was still queued when the check's
    # next run came due), or never claimed by the end (the dispatcher was that far behind).
    sent_keys = {k for e in p.events if e.get("e") == "pub" and (k := _due_key(e["args"])) is not None}
    missing_sent = sum(1 for key in missing if key in sent_keys)
    off_grid = sorted(got - expected)
    late_s = [(r[2] - r[1]) / 1e6 for r in in_window]
    # A due run with no result counts as infinitely late: the percentiles cannot hide it.
    late_with_missing = late_s + [math.inf] * len(missing)

    # Exactly once: one claim per due run (one run_check message), and one probe per result.
    pubs = [e for e in p.events if e.get("e") == "pub"]
    claims = Counter(k for e in pubs if (k := _due_key(e["args"])) is not None)
    double_claims = sum(n - 1 for n in claims.values() if n > 1)
    probes = sum(n for path, n in p.hits.items() if path.startswith("/c/"))
    extra_probes = probes - len(p.results)

    # Where the lateness comes from, per run due in the window: the claim (its message sent, against the due
    # time: negative when the dispatcher claims ahead and sends it with an ETA), the wait in the broker and the
    # worker past the due time (or past the sending, when that was later), and the task itself (begins ->
    # started_at, the probe). Lateness = max(0, claim) + wait + task.
    sent = {k: e["t"] for e in pubs if (k := _due_key(e["args"])) is not None}
    tasks = [e for e in p.events if e.get("e") == "task"]
    begun: dict[tuple[int, int], float] = {}
    for e in tasks:
        if e["name"] == RUN_CHECK and e.get("args") and (k := _due_key(e["args"])) is not None:
            begun.setdefault(k, e["t"])
    parts: dict[str, list[float]] = {"claim": [], "queue": [], "task": []}
    for check_id, due, started, _, _ in in_window:
        key = (check_id, due)
        if key in sent and key in begun:
            parts["claim"].append(sent[key] - due / 1e6)
            parts["queue"].append(begun[key] - max(sent[key], due / 1e6))
            parts["task"].append(started / 1e6 - begun[key])

    # The dispatcher's passes in the window, and the tasks' own CPU.
    passes = sorted(
        (e for e in tasks if e["name"] == DISPATCH and p.w0 <= e["t"] < p.w1), key=lambda e: e["t"]
    )
    dispatchers = []
    for source, mine in (
        ("beat → worker", [e for e in passes if e["pid"] != p.loop_pid]),
        ("dispatcher loop", [e for e in passes if e["pid"] == p.loop_pid]),
    ):
        if mine:
            dispatchers.append(
                {
                    "source": source,
                    "passes": len(mine),
                    "period_s": spread_of([b["t"] - a["t"] for a, b in itertools.pairwise(mine)]),
                    "wall_s": spread_of([e["wall"] for e in mine]),
                    "cpu_ms": 1000 * statistics.fmean(e["cpu"] for e in mine),
                    "claimed": spread_of([float(e["ret"]) for e in mine if e.get("ret") is not None]),
                }
            )
    task_cpu: dict[str, float] = defaultdict(float)
    task_wall: dict[str, list[float]] = defaultdict(list)
    for e in tasks:
        if p.w0 <= e["t"] < p.w1:
            task_cpu[e["name"]] += e["cpu"]
            task_wall[e["name"]].append(e["wall"])
    checks_run = len(task_wall.get(RUN_CHECK, []))
    # The worker's dispatch tasks; a dispatcher loop's passes are in its own process's CPU.
    dispatcher_cpu = task_cpu.get(DISPATCH, 0.0) - sum(e["cpu"] for e in passes if e["pid"] == p.loop_pid)
    run_cpu = task_cpu.get(RUN_CHECK, 0.0)
    other_tasks_cpu = sum(v for k, v in task_cpu.items() if k not in (DISPATCH, RUN_CHECK))
    worker_cpu = p.cpu_s.get("worker", 0.0)
    started_in_window = sum(1 for r in p.results if w0 <= r[2] < w1)
    return {
        "pool": p.pool.label,
        "pool_kind": p.pool.kind,
        "loop": p.pool.loop,
        "concurrency": p.pool.concurrency,
        "window_s": window_s,
        "t0": p.t0,
        "due_in_window": len(expected),
        "results_in_window": len(in_window),
        "failed_in_window": sum(1 for r in in_window if not r[4]),
        "missing": len(missing),
        "missing_sent": missing_sent,
        "missing_unclaimed": len(missing) - missing_sent,
        "missing_examples": [[c, datetime.fromtimestamp(d / 1e6, UTC).isoformat()] for c, d in missing[:5]],
        "off_grid": len(off_grid),
        "duplicate_results": sum(len(v) - 1 for v in by_key.values() if len(v) > 1),
        "double_claims": double_claims,
        "probes": probes,
        "results_total": len(p.results),
        "extra_probes": extra_probes,
        "queue_after_drain": p.queue_after_drain,
        "runs_per_s": started_in_window / window_s,
        "offered_per_s": len(p.first_due) / opts.interval,
        "checks": len(p.first_due),
        "lateness_s": spread_of(late_with_missing),
        "lateness_observed_s": spread_of(late_s),
        "parts_s": {name: spread_of(values) for name, values in parts.items()},
        "parts_n": len(parts["claim"]),
        "dispatchers": dispatchers,
        "run_wall_s": spread_of(task_wall.get(RUN_CHECK, [])),
        "checks_run_in_window": checks_run,
        "cpu_s": {
            **p.cpu_s,
            "dispatcher": dispatcher_cpu,
            "scheduler": p.cpu_s.get("beat", 0.0) + dispatcher_cpu + p.cpu_s.get("dispatch_loop", 0.0),
            "run_check": run_cpu,
            "other_tasks": other_tasks_cpu,
            "celery": max(worker_cpu - dispatcher_cpu - run_cpu - other_tasks_cpu, 0.0),
        },
        "other_cpu_pct": p.other_cpu_pct,
        "attempts": p.attempts,
        "round": p.round,
        "worker_log": p.worker_log,
    }


if __name__ == "__main__":
    sys.exit(main())

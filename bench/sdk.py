"""SDK benchmarks (issues 4 and 17): what a guarded call costs on a closed breaker, its outcome's delivery
included, and how many outcomes per second one process delivers to the fleet's breakers without dropping one.

    .venv/bin/python -m bench.sdk [--rounds 3] [--seconds 1] [--rates 25000,50000,100000,200000]
                                  [--delivery-seconds 5] [--write-docs]

1. Guard cost, in one process, one call after another on a closed breaker: a plain call of a no-op (the floor),
   pybreaker in memory (the baseline: goal at most 2x its cost), pybreaker with CircuitRedisStorage (the peer
   that shares its state through Redis), and the SDK's guard as a decorator and as a `with` block, its live
   view connected to a production gunicorn: the bare decision, and the calls plus the flush that delivers their
   outcomes, in the same timed span. Each kind in a fresh process per round; medians of the rounds.
2. Delivery: the default client (its flusher thread sending while the calls go on) making calls at each of
   `--rates` per second, then as fast as one thread can: outcomes delivered, dropped (oldest first, counted) and
   the server's own count of them (its per-minute traffic counters in Redis), which must equal what the client
   says it delivered. Goal: every outcome delivered at 50,000 calls/s.
(How fast a trip reaches the SDKs is bench/propagation.py's.)
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from bench import cpu, report, sdk_loops, server
from bench.sdk_report import Findings, LoopRun

DB_NAME = "rebound_bench_sdk"
GUARD_SERVICE = "bench-sdk-guard"
# The order of one round: each SDK kind between the baselines it is compared with.
ORDER = ["plain", "pybreaker_memory", "sdk_decorator", "sdk_guard", "pybreaker_redis"]
SERVERS = ("redis-server",)


@dataclass(frozen=True)
class Options:
    rounds: int
    seconds: float
    warmup: float
    rates: tuple[int, ...]
    delivery_seconds: float
    workers: int
    threads: int
    write_docs: bool
    pg_admin_url: str
    db_name: str
    keep_workdir: bool


def parse_args(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.sdk", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of the guard loops; medians are reported"
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds of calls per loop")
    parser.add_argument("--warmup", type=float, default=1.0, help="untimed seconds before each loop")
    parser.add_argument(
        "--rates",
        default="25000,50000,100000,200000",
        help="calls per second of the paced delivery runs, comma-separated",
    )
    parser.add_argument(
        "--delivery-seconds", type=float, default=5.0, help="seconds of calls per delivery run"
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2, one per core)")
    parser.add_argument("--threads", type=int, default=32, help="threads per worker (long-polls hold one)")
    server.add_stack_options(parser, DB_NAME)
    a = parser.parse_args(argv)
    try:
        rates = tuple(sorted(int(r) for r in a.rates.split(",") if r.strip()))
    except ValueError:
        parser.error("--rates: whole numbers of calls per second, comma-separated")
    if min(a.rounds, a.workers, a.threads) < 1 or min(a.seconds, a.delivery_seconds) <= 0 or a.warmup < 0:
        parser.error("rounds, workers and threads must be at least 1; seconds above 0")
    if not rates or min(rates) < 1:
        parser.error("--rates: at least one rate, each at least 1")
    server.check_db_name(parser, a.db, DB_NAME)
    return Options(
        a.rounds,
        a.seconds,
        a.warmup,
        rates,
        a.delivery_seconds,
        a.workers,
        a.threads,
        a.write_docs,
        a.pg,
        a.db,
        a.keep_workdir,
    )


def prepare(stack: server.Stack, opts: Options) -> str:
    print(f"database {stack.db_name}: recreating and migrating …", flush=True)
    server.recreate_database(stack)
    stack.env = server.server_env(stack)
    stack.env["GUNICORN_THREADS"] = str(opts.threads)
    server.manage(stack, "migrate", "--noinput")
    # Registered beforehand with the defaults (count window of 20, 10 calls minimum, 50%, 5 consecutive), so
    # that every client's first snapshot holds them all; each delivery run has a service of its own, so that
    # the server's count of its outcomes is its alone.
    names = [GUARD_SERVICE] + [
        delivery_service(kind, rate, number)
        for number in range(1, opts.rounds + 1)
        for kind, rate in delivery_runs(opts)
    ]
    server.create_services(stack, names)
    redis.Redis.from_url(stack.redis_url).flushdb()  # db 13 is the benchmarks'
    return server.create_agent_key(stack, "bench-sdk-agent")


# --- 1. the guard's overhead -----------------------------------------------------------------------------


def delivery_runs(opts: Options) -> list[tuple[str, int]]:
    return [*(("paced", rate) for rate in opts.rates), ("sustained", 0)]


def delivery_service(kind: str, rate: int, number: int) -> str:
    return f"bench-sdk-{kind}-{rate}-r{number}" if rate else f"bench-sdk-{kind}-r{number}"


def server_count(stack: server.Stack, service: str) -> int:
    """The outcomes of `service` the server counted: its per-minute traffic counters in Redis (every outcome
    the server accepted, a run's successes each)."""
    client = redis.Redis.from_url(stack.redis_url)
    total = 0
    for key in client.scan_iter(f"rebound:traffic:{{{service}}}:*"):
        value: Any = client.hget(key, "c")
        total += int(value or 0)
    return total


def run_loop(
    stack: server.Stack,
    key: str,
    kind: str,
    opts: Options,
    tag: str,
    service: str = GUARD_SERVICE,
    rate: int = 0,
) -> LoopRun:
    seconds = opts.delivery_seconds if kind in sdk_loops.DELIVERY else opts.seconds
    command = [
        server.PYTHON,
        "-m",
        "bench.sdk_loops",
        kind,
        "--seconds",
        str(seconds),
        "--warmup",
        str(opts.warmup),
        "--url",
        stack.base_url,
        "--key",
        key,
        "--service",
        service,
        "--tag",
        tag,
        "--rate",
        str(rate or 1),
    ]
    before = cpu.sample(SERVERS)
    done = subprocess.run(
        command, cwd=server.ROOT, env=stack.env, capture_output=True, text=True, check=False
    )
    other = cpu.other_share(before, cpu.sample(SERVERS))
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(sdk_loops.MARKER)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(
            f"bench.sdk_loops {kind} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    raw = json.loads(line[len(sdk_loops.MARKER) :])
    counted = server_count(stack, service) if kind in sdk_loops.DELIVERY else -1
    return LoopRun.from_json(raw, other, counted)


def guard_rounds(stack: server.Stack, key: str, opts: Options, started: datetime) -> list[dict[str, LoopRun]]:
    rounds = []
    for number in range(1, opts.rounds + 1):
        print(f"round {number}/{opts.rounds}", flush=True)
        runs: dict[str, LoopRun] = {}
        tag = f"{started:%H%M%S}-{number}"
        for kind in ORDER:
            run = runs[kind] = run_loop(stack, key, kind, opts, tag)
            extra = (
                f", with delivery {run.us_per_call_delivered:.3f} µs/call ({run.sent:,} delivered)"
                if run.sent
                else ""
            )
            print(
                f"  {Findings.NAMES[kind][:58]:<58} {run.us_per_call:8.3f} µs/call{extra}"
                f"  (other: {run.other_cpu_pct:.0f}% CPU){'  ' + run.problem if run.problem else ''}",
                flush=True,
            )
        for kind, rate in delivery_runs(opts):
            service = delivery_service(kind, rate, number)
            run = runs[Findings.delivery_name(kind, rate)] = run_loop(
                stack, key, kind, opts, tag, service, rate
            )
            print(
                f"  {kind} {rate or 'unpaced':>7}: {run.per_s:>11,.0f} calls/s, {run.sent_in_loop / run.seconds:>9,.0f}"
                f" delivered/s in the loop, {run.dropped:,} dropped, server counted {run.server_counted:,} of "
                f"{run.delivered_total:,} delivered  (other: {run.other_cpu_pct:.0f}% CPU)"
                f"{'  ' + run.problem if run.problem else ''}",
                flush=True,
            )
        rounds.append(runs)
    return rounds


# --- main ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        import pybreaker  # noqa: F401
    except ImportError:
        print(
            "pybreaker is not installed: it is the baseline.  .venv/bin/pip install pybreaker",
            file=sys.stderr,
        )
        return 2
    server.wait_for_other_benchmarks()
    with server.scratch_stack(
        prefix="rebound-bench-sdk-",
        pg_admin_url=opts.pg_admin_url,
        db_name=opts.db_name,
        workers=opts.workers,
        keep_workdir=opts.keep_workdir,
    ) as stack:
        started = datetime.now(UTC)
        key = prepare(stack, opts)
        with server.gunicorn(stack):
            print(f"gunicorn on {stack.base_url}, {opts.workers} gthread workers x {opts.threads} threads")
            rounds = guard_rounds(stack, key, opts, started)
        findings = Findings(opts=opts, started=started, rounds=rounds, environment=_environment(stack))
    blocks = [findings.guard_table(), findings.delivery_table(), findings.verdict()]
    return report.finish(
        "sdk", findings, [*blocks, "Correctness:\n" + findings.correctness()], write_docs=opts.write_docs
    )


def _environment(stack: server.Stack) -> dict[str, str]:
    env = report.machine()
    env["postgresql"] = server.postgres_version(stack)
    info: Any = redis.Redis.from_url(stack.redis_url).info("server")
    env["redis"] = str(info.get("redis_version", "?"))
    for package in ("httpx", "pybreaker", "redis", "hiredis"):
        env[f"py_{package}"] = report._version(package)
    return env


if __name__ == "__main__":
    raise SystemExit(main())

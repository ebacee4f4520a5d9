"""SDK benchmarks (issue 4): the guard's overhead on a closed breaker, and how fast a trip reaches 20 clients.

    .venv/bin/python -m bench.sdk [--rounds 3] [--seconds 2] [--clients 20] [--trials 30] [--write-docs]

1. Guard overhead, in one process, one call after another on a closed breaker: a plain call of a no-op (the
   floor), pybreaker in memory (the baseline: goal at most 2x its cost), pybreaker with CircuitRedisStorage
   (the issue-3 peer: goal at least 5x its guarded calls per second), and the SDK's guard as a decorator and as
   a `with` block, its live view connected to a production gunicorn. Each kind in a fresh process per round;
   medians of the rounds. (bench/sdk_loops.py says exactly what is timed.)
2. Propagation: N SDK clients, each in its own process, connected to the same gunicorn; the breaker of a fresh
   service is tripped by failures reported through `POST /api/v1/outcomes`; each client prints the moment its
   view flipped. Latency from the transition's creation on the server (its `at`) and from the moment the
   tripping request returned, over every client and trial: p50, p99, max. Goal: p99 at most 1 s.
"""

from __future__ import annotations

import argparse
import json
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

import httpx
import redis

from bench import cpu, report, sdk_loops, server
from bench.sdk_report import Findings, LoopRun, Trial

DB_NAME = "rebound_bench_sdk"
GUARD_SERVICE = "bench-sdk-guard"
PROP_PREFIX = "bench-prop-"
# The order of one round: each SDK kind between the baselines it is compared with.
ORDER = ["plain", "pybreaker_memory", "sdk_decorator", "sdk_guard", "pybreaker_redis", "sustained"]
SERVERS = ("redis-server",)


@dataclass(frozen=True)
class Options:
    rounds: int
    seconds: float
    warmup: float
    clients: int
    trials: int
    workers: int
    threads: int
    write_docs: bool
    pg_admin_url: str
    db_name: str
    keep_workdir: bool


@dataclass
class Client:
    process: subprocess.Popen[str]
    ready: threading.Event = field(default_factory=threading.Event)


def parse_args(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.sdk", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of the guard loops; medians are reported"
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds of calls per loop")
    parser.add_argument("--warmup", type=float, default=1.0, help="untimed seconds before each loop")
    parser.add_argument("--clients", type=int, default=20, help="SDK client processes for the propagation")
    parser.add_argument("--trials", type=int, default=30, help="breakers tripped, one after another")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2, one per core)")
    parser.add_argument("--threads", type=int, default=32, help="threads per worker (long-polls hold one)")
    server.add_stack_options(parser, DB_NAME)
    a = parser.parse_args(argv)
    if min(a.rounds, a.clients, a.trials, a.workers, a.threads) < 1 or a.seconds <= 0 or a.warmup < 0:
        parser.error("rounds, clients, trials, workers and threads must be at least 1; seconds above 0")
    server.check_db_name(parser, a.db, DB_NAME)
    return Options(
        a.rounds,
        a.seconds,
        a.warmup,
        a.clients,
        a.trials,
        a.workers,
        a.threads,
        a.write_docs,
        a.pg,
        a.db,
        a.keep_workdir,
    )


CREATE_SERVICES = """
from recovery.models import Service
for name in {names!r}:
    Service.objects.get_or_create(name=name)
"""


def prepare(stack: server.Stack, opts: Options) -> str:
    print(f"database {stack.db_name}: recreating and migrating …", flush=True)
    server.recreate_database(stack)
    stack.env = server.server_env(stack)
    stack.env["GUNICORN_THREADS"] = str(opts.threads)
    server.manage(stack, "migrate", "--noinput")
    # Registered beforehand with the defaults (count window of 20, 10 calls minimum, 50%, 5 consecutive), so
    # that every client's first snapshot holds them all.
    names = [GUARD_SERVICE, *(f"{PROP_PREFIX}{n}" for n in range(1, opts.trials + 1))]
    server.manage(stack, "shell", "-c", CREATE_SERVICES.format(names=names))
    redis.Redis.from_url(stack.redis_url).flushdb()  # db 13 is the benchmarks'
    return server.create_agent_key(stack, "bench-sdk-agent")


# --- 1. the guard's overhead -----------------------------------------------------------------------------


def run_loop(stack: server.Stack, key: str, kind: str, opts: Options, tag: str) -> LoopRun:
    command = [
        server.PYTHON,
        "-m",
        "bench.sdk_loops",
        kind,
        "--seconds",
        str(opts.seconds),
        "--warmup",
        str(opts.warmup),
        "--url",
        stack.base_url,
        "--key",
        key,
        "--service",
        GUARD_SERVICE,
        "--tag",
        tag,
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
    return LoopRun.from_json(raw, other)


def guard_rounds(stack: server.Stack, key: str, opts: Options, started: datetime) -> list[dict[str, LoopRun]]:
    rounds = []
    for number in range(1, opts.rounds + 1):
        print(f"guard round {number}/{opts.rounds}", flush=True)
        runs: dict[str, LoopRun] = {}
        for kind in ORDER:
            run = runs[kind] = run_loop(stack, key, kind, opts, f"{started:%H%M%S}-{number}")
            extra = f", background {run.background_us_per_outcome:.2f} µs/outcome" if run.sent else ""
            print(
                f"  {Findings.NAMES[kind][:58]:<58} {run.us_per_call:8.3f} µs/call{extra}"
                f"  (other: {run.other_cpu_pct:.0f}% CPU){'  ' + run.problem if run.problem else ''}",
                flush=True,
            )
        rounds.append(runs)
    return rounds


# --- 2. propagation --------------------------------------------------------------------------------------


def start_clients(
    stack: server.Stack, key: str, count: int, flips: queue.Queue[tuple[str, ...]]
) -> list[Client]:
    clients = []
    for index in range(count):
        process = subprocess.Popen(
            [
                server.PYTHON,
                "-m",
                "bench.sdk_client",
                "--url",
                stack.base_url,
                "--key",
                key,
                "--index",
                str(index),
                "--prefix",
                PROP_PREFIX,
            ],
            cwd=server.ROOT,
            env=stack.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        client = Client(process)
        threading.Thread(target=_read, args=(client, flips), daemon=True).start()
        clients.append(client)
    deadline = time.monotonic() + 120
    for client in clients:
        if not client.ready.wait(max(0.0, deadline - time.monotonic())):
            raise RuntimeError("an SDK client did not connect within 120 s")
    return clients


def _read(client: Client, flips: queue.Queue[tuple[str, ...]]) -> None:
    stream: IO[str] | None = client.process.stdout
    assert stream is not None
    for line in stream:
        parts = line.split()
        if parts[:1] == ["READY"]:
            client.ready.set()
        elif parts[:1] == ["FLIP"]:
            flips.put(tuple(parts[1:]))


def stop_clients(clients: list[Client]) -> None:
    for client in clients:
        if client.process.stdin is not None:
            client.process.stdin.close()
    for client in clients:
        try:
            client.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            client.process.kill()


def trip(http: httpx.Client, name: str) -> tuple[float, float, int]:
    """Five failures in one request (the default trips on five consecutive): (the transition's `at` on the
    server, when the request returned, the transition's id)."""
    body = {"outcomes": [{"service": name, "operation": "run", "success": False} for _ in range(5)]}
    answer = http.post("/api/v1/outcomes", json=body)
    returned = time.time()
    answer.raise_for_status()
    transitions = [r["transition"] for r in answer.json()["results"] if r.get("transition")]
    if len(transitions) != 1 or transitions[0]["to_state"] != "open":
        raise RuntimeError(f"{name} did not trip exactly once: {transitions}")
    at = datetime.fromisoformat(transitions[0]["at"]).timestamp()
    return at, returned, int(transitions[0]["id"])


def propagation(stack: server.Stack, key: str, opts: Options) -> tuple[list[Trial], str]:
    flips: queue.Queue[tuple[str, ...]] = queue.Queue()
    print(f"propagation: starting {opts.clients} SDK client processes …", flush=True)
    clients = start_clients(stack, key, opts.clients, flips)
    trials: list[Trial] = []
    try:
        time.sleep(2)  # every client in its long-poll
        with httpx.Client(
            base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as http:
            for number in range(1, opts.trials + 1):
                name = f"{PROP_PREFIX}{number}"
                at, returned, event_id = trip(http, name)
                seen: dict[int, tuple[float, str, int]] = {}
                deadline = time.monotonic() + 10
                while len(seen) < opts.clients and time.monotonic() < deadline:
                    try:
                        index, service, when, source, seen_id = flips.get(timeout=0.1)
                    except queue.Empty:
                        continue
                    if service == name:
                        seen[int(index)] = (float(when), source, int(seen_id))
                trial = Trial(name, at, returned, event_id, seen, opts.clients)
                trials.append(trial)
                print(
                    f"  trial {number:>3}: {len(seen)}/{opts.clients} clients, from the transition: "
                    f"max {trial.max_from_at * 1000:.0f} ms",
                    flush=True,
                )
                time.sleep(random.uniform(0.3, 1.0))  # not in step with anything the clients do
    finally:
        stop_clients(clients)
    return trials, "processes"


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
            trials, how = propagation(stack, key, opts)
        findings = Findings(
            opts=opts,
            started=started,
            rounds=rounds,
            trials=trials,
            clients_as=how,
            environment=_environment(stack),
        )
    blocks = [findings.guard_table(), findings.propagation_table(), findings.verdict()]
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

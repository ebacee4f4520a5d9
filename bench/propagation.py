"""Propagation benchmark (issue 17, goal 5): how fast a breaker's trip reaches every SDK client's live view.

    .venv/bin/python -m bench.propagation [--clients 100] [--trips 20] [--compare 20] [--write-docs]

N SDK clients (`rebound_client.Client(url, key, on_change=...)`), each in a Python process of its own
(`bench/sdk_client.py`), are connected to one production gunicorn: each holds a long-poll on
`GET /api/v1/breakers/events`. The breaker of a fresh service is tripped by five failures reported in one
`POST /api/v1/outcomes`; each client prints the moment its view saw it open. Latency from the transition's
creation on the server (its `at`) and from the moment the tripping request returned, over every client and trip:
p50, p99, max. Goal: p99 at most 100 ms with 100 clients. `--compare 20` runs the same trips with 20 clients
afterwards, for the figure measured before (0 skips it).

Besides the latencies it reads /proc around the trips: the CPU the server (gunicorn's workers) and the clients
spent per trip and per client (the answer, the client applying it, its next long-poll), and what other people's
processes took of the cores ("other CPU", bench/cpu.py).
"""

from __future__ import annotations

import argparse
import math
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx
import redis

from bench import cpu, report, server
from bench.propagation_report import Findings, Run, Trial

DB_NAME = "rebound_bench_propagation"
PREFIX = "bench-prop-"
SERVERS = ("redis-server",)
SETTLE_S = 10.0  # the longest a trip may take to reach every client before it counts as missed
CLK_TCK = 100  # /proc's ticks per second (os.sysconf("SC_CLK_TCK") on Linux)


@dataclass(frozen=True)
class Options:
    clients: int
    trips: int
    compare: int
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
    parser = argparse.ArgumentParser(prog="python -m bench.propagation", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=100, help="SDK client processes (default 100)")
    parser.add_argument("--trips", type=int, default=20, help="breakers tripped, one after another")
    parser.add_argument("--compare", type=int, default=20, help="clients of a second, smaller run (0: none)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2, one per core)")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="threads per worker (default: the sizing rule of config/gunicorn.conf.py for the clients)",
    )
    server.add_stack_options(parser, DB_NAME)
    a = parser.parse_args(argv)
    if min(a.clients, a.trips, a.workers) < 1 or a.compare < 0 or a.threads < 0:
        parser.error("clients, trips and workers must be at least 1; compare and threads at least 0")
    server.check_db_name(parser, a.db, DB_NAME)
    return Options(
        a.clients, a.trips, a.compare, a.workers, a.threads, a.write_docs, a.pg, a.db, a.keep_workdir
    )


def threads_for(clients: int, workers: int) -> int:
    """Threads per worker for `clients` held long-polls, by the sizing rule of config/gunicorn.conf.py: a thread
    per held poll, with the polls shared unevenly (a client's keep-alive connection stays on the worker that
    accepted it, and the kernel does not deal them out in turn), plus room for the other requests."""
    return math.ceil(1.5 * clients / workers) + 8


def prepare(stack: server.Stack, opts: Options) -> str:
    print(f"database {stack.db_name}: recreating and migrating …", flush=True)
    server.recreate_database(stack)
    stack.env = server.server_env(stack)
    server.manage(stack, "migrate", "--noinput")
    # Registered beforehand with the defaults (five consecutive failures trip), so that every client's first
    # snapshot holds them all and a trip is the only thing that changes.
    runs = [opts.clients] + ([opts.compare] if opts.compare else [])
    names = [f"{PREFIX}{r}-{n}" for r in range(len(runs)) for n in range(1, opts.trips + 1)]
    server.create_services(stack, names)
    redis.Redis.from_url(stack.redis_url).flushdb()  # db 13 is the benchmarks'
    return server.create_agent_key(stack, "bench-propagation-agent")


# --- the clients -----------------------------------------------------------------------------------------


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
                PREFIX,
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
    deadline = time.monotonic() + 60 + count
    for client in clients:
        if not client.ready.wait(max(0.0, deadline - time.monotonic())):
            raise RuntimeError(f"an SDK client did not connect within {60 + count} s")
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
            client.process.wait(timeout=5)


# --- the trips -------------------------------------------------------------------------------------------


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


def collect(
    flips: queue.Queue[tuple[str, ...]], name: str, clients: int
) -> dict[int, tuple[float, str, int]]:
    """Each client's flip of `name`: index -> (when, source, event id); stops when all are in or at SETTLE_S."""
    seen: dict[int, tuple[float, str, int]] = {}
    deadline = time.monotonic() + SETTLE_S
    while len(seen) < clients and time.monotonic() < deadline:
        try:
            index, service, when, source, seen_id = flips.get(timeout=0.1)
        except queue.Empty:
            continue
        if service == name:
            seen[int(index)] = (float(when), source, int(seen_id))
    return seen


def ticks(pids: list[int]) -> int:
    """User + system ticks these processes have used so far (0 for one that is gone)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def run(stack: server.Stack, key: str, gunicorn_pid: int, opts: Options, clients: int, number: int) -> Run:
    flips: queue.Queue[tuple[str, ...]] = queue.Queue()
    print(f"run {number}: starting {clients} SDK client processes …", flush=True)
    started = start_clients(stack, key, clients, flips)
    trips: list[Trial] = []
    workers = children(gunicorn_pid)
    client_pids = [c.process.pid for c in started]
    try:
        time.sleep(3)  # every client in its long-poll, the start-up's CPU spent
        before = cpu.sample(SERVERS)
        server_before, clients_before = ticks(workers), ticks(client_pids)
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=stack.base_url, headers=headers, timeout=30) as http:
            for index in range(1, opts.trips + 1):
                name = f"{PREFIX}{number}-{index}"
                at, returned, event_id = trip(http, name)
                trial = Trial(name, at, returned, event_id, collect(flips, name, clients), clients)
                trips.append(trial)
                print(
                    f"  trip {index:>3}: {len(trial.seen)}/{clients} clients; from the transition: p50 "
                    f"{report.percentile(trial.from_at, 50) * 1000:.0f} ms, max {trial.max_from_at * 1000:.0f} ms",
                    flush=True,
                )
                time.sleep(random.uniform(0.3, 1.0))  # not in step with anything the clients do
        server_ticks, client_ticks = ticks(workers) - server_before, ticks(client_pids) - clients_before
        other = cpu.other_share(before, cpu.sample(SERVERS))
    finally:
        stop_clients(started)
    return Run(
        clients=clients,
        trials=trips,
        server_cpu_s=server_ticks / CLK_TCK,
        clients_cpu_s=client_ticks / CLK_TCK,
        other_cpu_pct=other,
    )


# --- main ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    server.wait_for_other_benchmarks()
    threads = opts.threads or threads_for(opts.clients, opts.workers)
    with server.scratch_stack(
        prefix="rebound-bench-propagation-",
        pg_admin_url=opts.pg_admin_url,
        db_name=opts.db_name,
        workers=opts.workers,
        keep_workdir=opts.keep_workdir,
    ) as stack:
        started = datetime.now(UTC)
        try:
            key = prepare(stack, opts)
            stack.env["GUNICORN_THREADS"] = str(threads)
            runs: list[Run] = []
            with server.gunicorn(stack) as process:
                print(f"gunicorn on {stack.base_url}, {opts.workers} gthread workers x {threads} threads")
                for number, clients in enumerate([opts.clients] + ([opts.compare] if opts.compare else [])):
                    runs.append(run(stack, key, process.pid, opts, clients, number))
            findings = Findings(
                opts=opts, threads=threads, started=started, runs=runs, environment=_environment(stack)
            )
        finally:
            server.drop_database(stack)  # also after a failure: nothing of the run is left behind
    return report.finish(
        "propagation",
        findings,
        [
            findings.table(),
            findings.cpu_table(),
            findings.verdict(),
            "Correctness:\n" + findings.correctness(),
        ],
        write_docs=opts.write_docs,
    )


def _environment(stack: server.Stack) -> dict[str, str]:
    env = report.machine()
    env["postgresql"] = server.postgres_version(stack)
    info: Any = redis.Redis.from_url(stack.redis_url).info("server")
    env["redis"] = str(info.get("redis_version", "?"))
    for package in ("httpx", "redis", "hiredis"):
        env[f"py_{package}"] = report._version(package)
    return env


if __name__ == "__main__":
    raise SystemExit(main())

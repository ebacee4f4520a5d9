"""The intake's sustained rate: errors per second that reach PostgreSQL while batches keep arriving.

A paced load generator (Python, several threads, each on its own schedule: an open loop, so a slow answer does
not lower the offered rate) posts batches of 100 errors to gunicorn at a fixed rate R, while Celery worker
processes run the drain task as production schedules it (the first report after a quiet half second sends
it, beat every 5 s). For each step the rows in PostgreSQL (the patterns' totals, equal to the rows) and the
backlog (errors queued in Redis and not yet written: the intake's pending counts) are read at the start and
the end of the measured window. R is sustained when the backlog grew by at most one second of load.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import redis

from bench import cpu, server

PENDING = "rebound:intake:pending"  # recovery/errors/intake.py: fingerprint -> errors queued, not yet written
STREAM = "rebound:intake"


@dataclass
class Step:
    rate: int  # offered errors/s
    seconds: float
    sent: int  # errors offered in the window
    accepted: int  # errors answered 201 in the window
    drained: int  # errors that reached PostgreSQL in the window
    backlog_start: int
    backlog_end: int
    statuses: Counter[int] = field(default_factory=Counter)
    late_s: float = 0.0  # how far behind its schedule the generator fell at most
    cpu_pct: dict[str, float] = field(default_factory=dict)  # percent of all cores, by process group

    def cpu_us(self, group: str, per: int) -> float:
        """CPU µs a process group spent per item (`per` items in the window)."""
        cores = len(os.sched_getaffinity(0))
        return self.cpu_pct.get(group, 0.0) / 100 * cores * self.seconds / per * 1e6 if per else 0.0

    @property
    def accepted_per_s(self) -> float:
        return self.accepted / self.seconds

    @property
    def drained_per_s(self) -> float:
        return self.drained / self.seconds

    @property
    def offered_per_s(self) -> float:
        return self.sent / self.seconds

    @property
    def sustained(self) -> bool:
        # The backlog may grow by one second of load at most, and the generator must have kept its pace.
        kept_pace = self.offered_per_s >= 0.97 * self.rate and set(self.statuses) <= {201}
        return kept_pace and self.backlog_end - self.backlog_start <= self.rate


def backlog(client: redis.Redis) -> int:
    values: Any = client.hvals(PENDING)
    return sum(int(v) for v in values)


def stored(stack: server.Stack) -> int:
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute("SELECT coalesce(sum(total_count), 0) FROM recovery_errorpattern").fetchone()
    return int(row[0]) if row else 0


@contextlib.contextmanager
def celery(stack: server.Stack, processes: int) -> Iterator[list[int]]:
    """N prefork worker processes and beat, as production runs them (Procfile, docker-compose)."""
    log = (stack.workdir / "celery.log").open("wb")
    commands = [
        [
            server.PYTHON,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-l",
            "WARNING",
            "--concurrency",
            str(processes),
        ],
        [
            server.PYTHON,
            "-m",
            "celery",
            "-A",
            "config",
            "beat",
            "-l",
            "WARNING",
            "--pidfile=",
            "--schedule",
            str(stack.workdir / "celerybeat-schedule"),
        ],
    ]
    started = [
        subprocess.Popen(
            c, cwd=server.ROOT, env=stack.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        for c in commands
    ]
    try:
        time.sleep(5)  # the workers fork and connect; beat loads its schedule
        yield [p.pid for p in started]
    finally:
        for process in started:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        log.close()


class Pacer:
    """Posts `body` (batch_size errors) at `rate` errors/s from `threads` threads, each every threads/rps s."""

    def __init__(self, stack: server.Stack, key: str, body: bytes, batch_size: int, threads: int) -> None:
        self.stack, self.key, self.body, self.batch_size, self.threads = stack, key, body, batch_size, threads
        self.lock = threading.Lock()
        self.statuses: Counter[int] = Counter()
        self.sent = 0
        self.late_s = 0.0
        self.accepted_total = 0

    def run(self, rate: int, seconds: float) -> None:
        interval = self.threads * self.batch_size / rate
        start = time.monotonic() + 0.05
        workers = [
            threading.Thread(
                target=self._loop, args=(start + i * interval / self.threads, interval, start + seconds)
            )
            for i in range(self.threads)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    def _loop(self, first: float, interval: float, end: float) -> None:
        due = first
        while due < end:
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            late = -pause if pause < 0 else 0.0
            with self.lock:
                self.sent += self.batch_size
                self.late_s = max(self.late_s, late)
            try:
                status = server.post_json(
                    self.stack.port, self.key, "/api/v1/errors", self.body, timeout_s=30
                )[0]
            except OSError:
                status = 0
            with self.lock:
                self.statuses[status] += 1
            due += interval

    def take(self) -> tuple[int, Counter[int], float]:
        with self.lock:
            taken = (self.sent, self.statuses, self.late_s)
            self.sent, self.statuses, self.late_s = 0, Counter(), 0.0
        return taken


def step(
    stack: server.Stack,
    client: redis.Redis,
    pacer: Pacer,
    rate: int,
    seconds: float,
    warmup_s: float,
    roots: dict[str, list[int]],
) -> Step:
    """Offer `rate` for warmup_s (not measured), then measure `seconds` of it."""
    pacer.run(rate, warmup_s)
    _, warm_statuses, _ = pacer.take()
    sampler = cpu.Sampler()
    start_rows, start_backlog, started = stored(stack), backlog(client), time.monotonic()
    pacer.run(rate, seconds)
    end_rows, end_backlog = stored(stack), backlog(client)
    shares = cpu.breakdown(*sampler.stop(), roots)
    elapsed = time.monotonic() - started
    sent, statuses, late = pacer.take()
    accepted = statuses[201] * pacer.batch_size
    pacer.accepted_total += accepted + warm_statuses[201] * pacer.batch_size
    bad = Counter({s: n for s, n in warm_statuses.items() if s != 201})
    drained = end_rows - start_rows
    return Step(
        rate, elapsed, sent, accepted, drained, start_backlog, end_backlog, statuses + bad, late, shares
    )


@dataclass
class Sustained:
    steps: list[Step]
    processes: int
    threads: int
    accepted: int  # every error answered 201 during the whole phase, warm-ups included
    stored: int  # rows added in the whole phase, once the backlog was written
    counted: int  # pattern totals added in the whole phase
    settled: bool

    @property
    def best(self) -> Step | None:
        sustained = [s for s in self.steps if s.sustained]
        return max(sustained, key=lambda s: s.drained_per_s) if sustained else None

    @property
    def exact(self) -> bool:
        return self.settled and self.stored == self.counted == self.accepted


def counts(stack: server.Stack) -> tuple[int, int]:
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM recovery_errorevent),"
            " (SELECT coalesce(sum(total_count), 0) FROM recovery_errorpattern)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def run(
    stack: server.Stack,
    key: str,
    body: bytes,
    *,
    batch_size: int,
    rates: list[int],
    seconds: float,
    warmup_s: float,
    processes: int,
    threads: int,
    gunicorn_pid: int,
) -> Sustained:
    """Step the offered rate up until one is not sustained; then write the rest and count exactly."""
    client = redis.Redis.from_url(stack.redis_url)
    rows0, totals0 = counts(stack)
    pacer = Pacer(stack, key, body, batch_size, threads)
    steps: list[Step] = []
    with celery(stack, processes) as celery_pids:
        roots = {"gunicorn": [gunicorn_pid], "celery": celery_pids}
        for rate in rates:
            settle(client)
            server.wait_for_quiet_postgres(stack.pg_admin_url)
            result = step(stack, client, pacer, rate, seconds, warmup_s, roots)
            steps.append(result)
            print(
                f"  offered {rate:>6,}/s: sent {result.offered_per_s:>8,.0f}/s, accepted {result.accepted_per_s:>8,.0f}/s,"
                f" reached PostgreSQL {result.drained_per_s:>8,.0f}/s, backlog {result.backlog_start:,} -> "
                f"{result.backlog_end:,}: {'sustained' if result.sustained else 'NOT sustained'}; CPU "
                + ", ".join(f"{k} {v:.0f}%" for k, v in result.cpu_pct.items()),
                flush=True,
            )
            if not result.sustained:
                break
        settled = settle(client)
    rows1, totals1 = counts(stack)
    return Sustained(
        steps, processes, threads, pacer.accepted_total, rows1 - rows0, totals1 - totals0, settled
    )


def settle(client: redis.Redis, timeout_s: float = 300.0) -> bool:
    """Wait until the workers have written the whole backlog."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        length: Any = client.xlen(STREAM)
        if backlog(client) == 0 and int(length) == 0:
            return True
        time.sleep(0.5)
    return False

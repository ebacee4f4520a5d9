"""Correctness checks for the intake benchmark: every error answered 201 is stored and counted exactly once.

Two checks, because wrk cannot give an exact count: when its time is up it drops the requests in flight,
which the server may still complete. So
- after each timed run, the rows stored must lie between the errors wrk saw answered and that plus what the
  open connections could still have had in flight, and the patterns' totals must equal the rows;
- then an exact pass with a Python client sends a fixed number of single errors and batches concurrently,
  checks every status, and requires the stored rows and the pattern totals to grow by exactly that number.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import psycopg

from bench.server import Stack, manage, post_json


@dataclass(frozen=True)
class Counts:
    events: int  # ErrorEvent rows
    pattern_total: int  # sum of ErrorPattern.total_count

    def __sub__(self, other: Counts) -> Counts:
        return Counts(self.events - other.events, self.pattern_total - other.pattern_total)


def counts(stack: Stack) -> Counts:
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM recovery_errorevent),"
            " (SELECT coalesce(sum(total_count), 0) FROM recovery_errorpattern)"
        ).fetchone()
    assert row is not None
    return Counts(int(row[0]), int(row[1]))


# (events written, seconds) of every drain of the buffered intake: the rate the writer sustains.
DRAINS: list[tuple[int, float]] = []


def drain(stack: Stack) -> None:
    """Write the buffered intake to PostgreSQL (what the Celery drain task does in production), timed."""
    out = manage(stack, "drain_intake")
    found = re.search(r"Wrote (\d+) error events in ([\d.]+) s", out)
    if found and int(found[1]):
        DRAINS.append((int(found[1]), float(found[2])))


def drain_rate() -> float:
    written = sum(n for n, _ in DRAINS)
    seconds = sum(s for _, s in DRAINS)
    return written / seconds if seconds else 0.0


def settled_counts(stack: Stack, interval_s: float = 0.3, timeout_s: float = 15.0) -> Counts:
    """Counts once the server has finished the requests wrk abandoned and the buffer is written: two equal
    readings in a row after a drain."""
    time.sleep(interval_s)
    drain(stack)
    previous = counts(stack)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(interval_s)
        current = counts(stack)
        if current == previous:
            return current
        previous = current
    return previous


@dataclass
class PhaseCheck:
    """The stored delta of one timed run against what wrk saw answered."""

    target: str
    answered_errors: int
    stored: Counts
    in_flight_allowance: int

    @property
    def ok(self) -> bool:
        low, high = self.answered_errors, self.answered_errors + self.in_flight_allowance
        return self.stored.events == self.stored.pattern_total and low <= self.stored.events <= high


@dataclass
class ExactCheck:
    sent_errors: int
    statuses: Counter[int] = field(default_factory=Counter)
    stored: Counts = field(default_factory=lambda: Counts(0, 0))

    @property
    def ok(self) -> bool:
        all_created = set(self.statuses) == {201}
        return all_created and self.stored.events == self.stored.pattern_total == self.sent_errors


def _post(port: int, key: str, body: bytes) -> int:
    return post_json(port, key, "/api/v1/errors", body, timeout_s=30)[0]


def exact_pass(
    stack: Stack, key: str, *, single: bytes, batch: bytes, batch_size: int, singles: int, batches: int
) -> ExactCheck:
    """Send a known number of errors concurrently (so upserts race on the same patterns) and count them."""
    before = settled_counts(stack)
    bodies = [single] * singles + [batch] * batches
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = Counter(pool.map(lambda body: _post(stack.port, key, body), bodies))
    check = ExactCheck(sent_errors=singles + batches * batch_size, statuses=statuses)
    check.stored = settled_counts(stack) - before
    return check

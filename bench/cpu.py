"""How much of the machine other people's processes took during a timed run.

The benchmark machine is shared (other sessions run test suites on it), and a test suite that starts in the
middle of one target's run skews that target and so the ratio. Each timed run is bracketed by two readings
of /proc; the CPU used by processes that are not the benchmark's is reported as "other", in percent of all
cores. The benchmark's own are this process and its descendants (gunicorn, its workers, Celery, wrk), the
redis-server (the benchmarks' Redis: db 13 of it) and the PostgreSQL backends serving a benchmark database
(named `rebound_bench…`); PostgreSQL's shared background processes (checkpointer, WAL writer, autovacuum) and
the kernel's threads are neither, while a backend serving anyone else's database is "other". Processes that
start and end between two readings are missed, so this is a lower bound.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")
# Every benchmark's database starts with this (bench/server.py refuses to drop any other).
BENCH_DATABASES = ("rebound_bench",)
# The benchmarks' Redis: whoever else it serves, while a benchmark runs it works mostly for it.
BENCH_SERVERS = ("redis-server",)


@dataclass(frozen=True)
class Sample:
    total: int  # all cores' ticks since boot, idle included
    ticks: dict[int, tuple[str, int]]  # pid -> (kind, user + system ticks)
    parents: dict[int, int] = field(default_factory=dict)  # pid -> parent pid
    names: dict[int, str] = field(default_factory=dict)  # pid -> command name


def _processes() -> dict[int, tuple[int, str, int]]:
    """pid -> (parent pid, command name, user + system ticks), for every process still readable."""
    found = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it ended while we looked
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(entry.name)] = (int(fields[1]), name, int(fields[11]) + int(fields[12]))
    return found


def _descendants(root: int, parents: dict[int, int]) -> set[int]:
    mine = {root}
    changed = True
    while changed:  # a few passes: the process tree here is three levels deep
        changed = False
        for pid, parent in parents.items():
            if parent in mine and pid not in mine:
                mine.add(pid)
                changed = True
    return mine


def _kind(pid: int, parent: int, name: str, mine: set[int], servers: tuple[str, ...] = ()) -> str:
    if pid in mine:
        return "bench"
    if name.startswith("postgres"):
        return _postgres_kind(pid)
    if name.startswith(BENCH_SERVERS + servers):
        return "server"
    if pid == 2 or parent == 2:
        return "kernel"
    return "other"


def _postgres_kind(pid: int) -> str:
    """A backend names its database in its title ("postgres: 15/main: user database host(port) state"); the
    shared background processes name only their role ("postgres: 15/main: checkpointer")."""
    try:
        title = (PROC / str(pid) / "cmdline").read_bytes().replace(b"\x00", b" ").decode(errors="replace")
    except OSError:
        return "postgres"
    words = title.split(": ", 2)[-1].split()
    if len(words) < 3 or ("(" not in words[2] and words[2] != "[local]"):
        return "postgres"  # checkpointer, walwriter, autovacuum launcher or worker, ...
    return "server" if words[1].startswith(BENCH_DATABASES) else "other"


def sample(servers: tuple[str, ...] = ()) -> Sample:
    """servers: command names (prefixes) of further shared servers the benchmark loads, whose CPU is then the
    benchmark's and not "other" (redis-server and the backends of the benchmark databases always are)."""
    processes = _processes()
    mine = _descendants(os.getpid(), {pid: p[0] for pid, p in processes.items()})
    ticks = {
        pid: (_kind(pid, parent, name, mine, servers), used)
        for pid, (parent, name, used) in processes.items()
    }
    with (PROC / "stat").open() as stat:
        total = sum(int(v) for v in stat.readline().split()[1:8])
    parents = {pid: p[0] for pid, p in processes.items()}
    return Sample(total, ticks, parents, {pid: p[1] for pid, p in processes.items()})


def other_share(before: Sample, after: Sample) -> float:
    """Percent of all cores' time used by other people's processes between two samples."""
    elapsed = after.total - before.total
    if elapsed <= 0:
        return 0.0
    used = 0
    for pid, (kind, ticks) in after.ticks.items():
        if kind == "other":
            used += ticks - before.ticks.get(pid, (kind, 0))[1]
    return round(100.0 * max(used, 0) / elapsed, 1)


def breakdown(before: Sample, after: Sample, roots: dict[str, list[int]]) -> dict[str, float]:
    """Where the cores went between two samples, in percent of all cores: each named group of process trees
    (e.g. {"gunicorn": [pid], "celery": [pid, pid]}), then "postgres" (the benchmark database's backends),
    "redis", "load generator" (this process), "postgres (shared)" (its background processes) and "other"."""
    elapsed = after.total - before.total
    if elapsed <= 0:
        return {}
    group_of: dict[int, str] = {}
    for group, pids in roots.items():
        for root in pids:
            for pid in _descendants(root, after.parents):
                group_of[pid] = group
    used: dict[str, int] = {}
    for pid, (kind, ticks) in after.ticks.items():
        spent = ticks - before.ticks.get(pid, (kind, 0))[1]
        if spent <= 0:
            continue
        name = after.names.get(pid, "")
        if pid in group_of:
            group = group_of[pid]
        elif pid == os.getpid():
            group = "load generator"
        elif kind == "server":
            group = "postgres" if name.startswith("postgres") else "redis"
        elif kind == "postgres":
            group = "postgres (shared)"
        elif kind in ("other", "kernel", "bench"):
            group = "other" if kind == "other" else f"{kind} (rest)"
        else:
            group = kind
        used[group] = used.get(group, 0) + spent
    return {group: round(100.0 * n / elapsed, 1) for group, n in sorted(used.items(), key=lambda i: -i[1])}


def latest(samples: list[Sample]) -> Sample:
    """The last of several samples, with every process seen in any of them at its last reading: a process that
    started and ended between the first and the last (a worker's database connection, reopened by a task) is
    then counted up to its last reading, not missed."""
    ticks: dict[int, tuple[str, int]] = {}
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for sample_ in samples:
        ticks.update(sample_.ticks)
        parents.update(sample_.parents)
        names.update(sample_.names)
    return Sample(samples[-1].total, ticks, parents, names)


class Sampler:
    """Samples every interval_s in a thread until stopped; `latest()` of them afterwards."""

    def __init__(self, interval_s: float = 1.0) -> None:
        import threading

        self.interval_s = interval_s
        self.samples = [sample()]
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(self.interval_s):
            self.samples.append(sample())

    def stop(self) -> tuple[Sample, Sample]:
        """(the first sample, the latest of all, taken now)."""
        self.done.set()
        self.thread.join()
        self.samples.append(sample())
        return self.samples[0], latest(self.samples)

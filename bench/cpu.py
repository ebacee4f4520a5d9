"""How much of the machine other people's processes took during a timed run.

The benchmark machine is shared (other sessions run test suites on it), and a test suite that starts in the
middle of one target's run skews that target and so the ratio. Each timed run is bracketed by two readings
of /proc; the CPU used by processes that are neither the benchmark's (this process and its descendants:
gunicorn, its workers, wrk), nor PostgreSQL's, nor the kernel's is reported as "other", in percent of all
cores. Processes that start and end between two readings are missed, so this is a lower bound.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class Sample:
    total: int  # all cores' ticks since boot, idle included
    ticks: dict[int, tuple[str, int]]  # pid -> (kind, user + system ticks)


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
        return "postgres"
    if servers and name.startswith(servers):
        return "server"
    if pid == 2 or parent == 2:
        return "kernel"
    return "other"


def sample(servers: tuple[str, ...] = ()) -> Sample:
    """servers: command names (prefixes) of further shared servers the benchmark loads, e.g. redis-server,
    whose CPU is then the benchmark's and not "other" (PostgreSQL is always counted so)."""
    processes = _processes()
    mine = _descendants(os.getpid(), {pid: p[0] for pid, p in processes.items()})
    ticks = {
        pid: (_kind(pid, parent, name, mine, servers), used)
        for pid, (parent, name, used) in processes.items()
    }
    with (PROC / "stat").open() as stat:
        total = sum(int(v) for v in stat.readline().split()[1:8])
    return Sample(total, ticks)


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

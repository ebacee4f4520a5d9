"""Writing benchmark results: a Markdown table, the machine's description, and docs/benchmarks.md.

docs/benchmarks.md holds one section per benchmark between `<!-- bench:NAME:start -->` and
`<!-- bench:NAME:end -->`. A benchmark rewrites only its own section, so the circuit-breaker and checkpoint
benchmarks can add theirs later without touching this one, and text outside the markers is kept.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
from collections.abc import Iterable
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from bench.loadgen import Measurement

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"

INTRO = """# Benchmarks

Every figure in this file is a ratio against a baseline measured in the same run, on the same machine, by
the same server and load generator: absolute requests per second say more about the machine than about
Rebound, and a ratio does not. The absolute numbers are shown for context only.

Benchmarks are never timed assertions in the test suite: timings on a shared two-core CI machine are noise,
and a test that fails on noise teaches people to ignore failures. They live under `bench/`, are run by hand,
and each one rewrites only its own section below (between its `bench:` markers).
"""


def machine() -> dict[str, str]:
    """What the figures were measured on; the caller adds the server-side versions it knows."""
    return {
        "cores": str(len(os.sched_getaffinity(0))),
        "cpu": _cpu_model(),
        "memory": _memory(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "django": _version("django"),
        "gunicorn": _version("gunicorn"),
        "psycopg": _version("psycopg"),
    }


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    return "?"


def percentile(values: list[float], pct: float) -> float:
    """Nearest rank: the smallest sample with at least `pct` percent of them at or below it (NaN for none)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def combine(rounds: list[Measurement]) -> dict[str, float]:
    """One target over several rounds: the median of each figure, and the totals of the counts."""
    return {
        "rps": median(m.rps for m in rounds),
        "errors_per_s": median(m.errors_per_s for m in rounds),
        "p50_ms": median(m.p50_ms for m in rounds),
        "p99_ms": median(m.p99_ms for m in rounds),
        "requests": sum(m.requests for m in rounds),
        "status_errors": sum(m.status_errors for m in rounds),
        "socket_errors": sum(m.socket_errors for m in rounds),
        "other_cpu_pct": max(m.other_cpu_pct for m in rounds),
    }


def table(rows: list[tuple[str, dict[str, float]]], unit: str = "errors/s") -> str:
    """unit: what `errors_per_s` counts (each request's items times requests/s), as the column's header."""
    lines = [
        f"| target | requests/s | {unit} | p50 ms | p99 ms | requests | non-2xx | socket errors | other CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, c in rows:
        errors = f"{c['errors_per_s']:,.0f}" if c["errors_per_s"] else "-"
        lines.append(
            f"| {name} | {c['rps']:,.0f} | {errors} | {c['p50_ms']:.1f} | {c['p99_ms']:.1f} "
            f"| {int(c['requests']):,} | {int(c['status_errors'])} | {int(c['socket_errors'])} "
            f"| {c['other_cpu_pct']:.0f}% |"
        )
    return "\n".join(lines)


RESULTS = Path(__file__).resolve().parent / "results"


def save_results(name: str, started: datetime, data: dict[str, Any]) -> Path:
    """A run's raw figures as JSON under bench/results/ (git ignores it), named for the bench and its start."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}-{started:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps({"started": started.isoformat(), **data}, indent=2))
    print(f"results: {path}")
    return path


def write_section(name: str, body: str, path: Path = DOCS) -> None:
    """Replace this benchmark's section in docs/benchmarks.md (or append it), keeping everything else."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else INTRO
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


class Findings(Protocol):
    """What each benchmark's results offer: whether its correctness checks passed, a JSON record, a docs section."""

    @property
    def correct(self) -> bool: ...

    def save(self) -> object: ...

    def section(self) -> str: ...


def finish(name: str, findings: Findings, blocks: list[str], *, write_docs: bool) -> int:
    """Print the blocks (tables, verdict, correctness), keep the results, write the docs section if asked; the
    exit code says whether the correctness checks passed."""
    for block in blocks:
        print()
        print(block)
    findings.save()
    if write_docs:
        write_section(name, findings.section())
        print(f"wrote {DOCS.relative_to(DOCS.parent.parent)}")
    return 0 if findings.correct else 1


def checklist(items: list[tuple[str, bool]]) -> str:
    """Correctness checks as the docs list them: one line each, ok or FAILED."""
    return "\n".join(f"- {text}: **{'ok' if ok else 'FAILED'}**." for text, ok in items)


def verdict(met: bool) -> str:
    """A goal's state as the docs write it."""
    return "met" if met else "NOT met"

"""The load generator: wrk, driven through bench/target.lua, one target at a time.

wrk is C and event-driven, so on a two-core machine it takes far less of the CPU away from the server than a
Python client would. It still shares the cores with gunicorn and PostgreSQL: the absolute numbers are this
machine's, only the ratios against a baseline measured in the same run mean anything.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "target.lua"
MARKER = "BENCH_JSON "

INSTALL_HINT = (
    "wrk is not installed. It is the benchmarks' load generator (C, event-driven: it leaves the cores to the "
    "server).\nInstall it with:  apt-get update && apt-get install -y wrk   (Debian/Ubuntu, as root)\n"
    "                or:  brew install wrk                               (macOS)"
)


@dataclass(frozen=True)
class Target:
    """One thing to load: a path, a method, an optional JSON body and whether to send the API key."""

    name: str
    method: str
    path: str
    body: bytes | None = None
    authenticated: bool = False
    # How many errors one successful request records (0 for the bare view): turns rps into errors/s.
    errors_per_request: int = 0


@dataclass(frozen=True)
class Measurement:
    """What wrk saw for one target over one timed run."""

    target: str
    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    status_errors: int  # responses with status >= 400
    socket_errors: int  # connect, read, write errors and timeouts
    errors_per_request: int
    # Percent of all cores other people's processes used meanwhile (bench/cpu.py); set by the caller.
    other_cpu_pct: float = 0.0

    @property
    def ok_requests(self) -> int:
        return self.requests - self.status_errors

    @property
    def rps(self) -> float:
        # Only answered requests count: a fast failure must not pass for throughput.
        return self.ok_requests / self.duration_s if self.duration_s else 0.0

    @property
    def errors_per_s(self) -> float:
        return self.rps * self.errors_per_request


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_version() -> str:
    # `wrk -v` prints a banner ("wrk 4.2.0 [epoll] Copyright ...") and exits non-zero: keep the name and version.
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    banner = (done.stdout or done.stderr).strip().splitlines()
    return banner[0].split(" [", 1)[0] if banner else "wrk"


def run(
    target: Target,
    *,
    base_url: str,
    key: str,
    body_file: Path | None,
    duration_s: int,
    connections: int,
    threads: int = 1,
) -> Measurement:
    """Run wrk against one target for duration_s seconds and parse the line target.lua prints."""
    env = {
        **os.environ,
        "BENCH_METHOD": target.method,
        "BENCH_BODY": str(body_file) if body_file else "",
        "BENCH_KEY": key if target.authenticated else "",
    }
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--timeout",
        "10s",  # a slow batch under load is a slow answer, not a failure
        "-s",
        str(SCRIPT),
        base_url + target.path,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(MARKER)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}) on {target.name}:\n{done.stdout}\n{done.stderr}")
    return _parse(target, json.loads(line[len(MARKER) :]))


def _parse(target: Target, raw: dict[str, float]) -> Measurement:
    def ms(key: str) -> float:
        return round(raw[key] / 1000.0, 2)

    return Measurement(
        target=target.name,
        requests=int(raw["requests"]),
        duration_s=raw["duration_us"] / 1_000_000,
        p50_ms=ms("p50_us"),
        p90_ms=ms("p90_us"),
        p99_ms=ms("p99_us"),
        max_ms=ms("max_us"),
        mean_ms=ms("mean_us"),
        status_errors=int(raw["status_errors"]),
        socket_errors=int(raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"]),
        errors_per_request=target.errors_per_request,
    )


def warm_then_timed(
    target: Target,
    *,
    base_url: str,
    key: str,
    body_file: Path | None,
    connections: int,
    warmup_s: int,
    duration_s: int,
    servers: tuple[str, ...] = (),
) -> tuple[Measurement | None, Measurement]:
    """A warm-up run, then the timed run with the CPU other processes took meanwhile: (warm-up, timed).

    The warm-up fills the key and rule caches, the databases' buffers and the connections, and lets the
    previous target's abandoned requests finish before the clock starts."""
    from bench import cpu

    def load(seconds: int) -> Measurement:
        return run(
            target,
            base_url=base_url,
            key=key,
            body_file=body_file,
            duration_s=seconds,
            connections=connections,
        )

    warm = load(warmup_s) if warmup_s else None
    before = cpu.sample(servers)
    timed = load(duration_s)
    return warm, replace(timed, other_cpu_pct=cpu.other_share(before, cpu.sample(servers)))

"""redis-benchmark, driven for the breaker benchmark: EVALSHA of a loaded script, one client, with or without
pipelining, so that a C client's round trips give the floor the Python store is compared with."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import redis

BASELINE_SCRIPT = Path(__file__).resolve().parent / "breaker_baseline.lua"
# The same for a batch: one call carrying a batch of outcomes, as RedisStore.record_many sends it.
BATCH_BASELINE_SCRIPT = Path(__file__).resolve().parent / "breaker_baseline_batch.lua"

INSTALL_HINT = (
    "redis-benchmark is not installed. It runs the baseline script from C.\n"
    "Install it with:  apt-get update && apt-get install -y redis-tools   (Debian/Ubuntu, as root)"
)


@dataclass(frozen=True)
class Run:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    seconds: float


def path() -> str | None:
    return shutil.which("redis-benchmark")


def version() -> str:
    done = subprocess.run(["redis-benchmark", "--version"], capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).strip() or "redis-benchmark"


def load(client: redis.Redis, script: str) -> str:
    """SCRIPT LOAD: redis-benchmark can then run it by its SHA, as redis-py's Script objects do."""
    return str(client.script_load(script))


def run(
    redis_url: str, sha: str, keys: list[str], args: list[str], *, requests: int, pipeline: int = 1
) -> Run:
    """`redis-benchmark -c 1 -P <pipeline> -n <requests> EVALSHA <sha> <numkeys> <keys> <args>`."""
    url = urlsplit(redis_url)
    db = (url.path or "/0").lstrip("/") or "0"
    command = [
        "redis-benchmark",
        "-h",
        url.hostname or "127.0.0.1",
        "-p",
        str(url.port or 6379),
        "--dbnum",
        db,
        "-c",
        "1",  # one client: a single process's loop of round trips
        "-P",
        str(pipeline),
        "-n",
        str(requests),
        "--csv",
        "EVALSHA",
        sha,
        str(len(keys)),
        *keys,
        *args,
    ]
    if url.password:
        command[1:1] = ["-a", url.password]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    if done.returncode != 0 or not rows:
        raise RuntimeError(f"redis-benchmark failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    row = rows[-1]
    rps = float(row["rps"])
    return Run(
        requests=requests,
        rps=rps,
        p50_ms=float(row["p50_latency_ms"]),
        p99_ms=float(row["p99_latency_ms"]),
        seconds=requests / rps if rps else elapsed,
    )

"""In-process loops of the SDK benchmark: a plain call, pybreaker (in memory and with CircuitRedisStorage), and
the SDK's guard with its live view connected to a real gunicorn. One kind per fresh process.

    python -m bench.sdk_loops KIND --seconds S --warmup S --url URL --key KEY --service NAME --tag TAG

bench/sdk.py runs each as a child with the server's environment (Redis db 13), reads the one JSON line it
prints, and measures around it how much CPU other people's processes took. Every kind makes the same no-op call in chunks of calls made back to back from one thread, each chunk
timed on its own; only the chunks count. Between two chunks the SDK kinds wait (untimed) until the client has
sent every queued outcome: the figure is what a guarded call costs its caller while the fleet keeps up with
its outcomes, not a loop that fills the bounded buffer faster than any server could empty it (`sustained`
measures that, apart). The sending happens there, in the loop's thread, so that a chunk's time is the callers'
cost alone; its CPU time, and the background threads' (the live view; the flusher for `sustained`), read from
/proc, are reported per outcome sent.

Kinds:
  plain             noop(): the floor
  pybreaker_memory  pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30).call(noop)
  pybreaker_redis   the same with state_storage=CircuitRedisStorage(STATE_CLOSED, redis, namespace=<run>)
  sdk_decorator     @client.with_circuit_breaker(service) on noop, then called
  sdk_guard         with client.guard(service): noop()
  sustained         sdk_decorator in one continuous loop, no pauses: calls/s, outcomes sent/s, dropped
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MARKER = "BENCH_LOOP "
KINDS = ("plain", "pybreaker_memory", "pybreaker_redis", "sdk_decorator", "sdk_guard", "sustained")
CHUNK = 5_000  # calls timed together (the clock's cost spread over them)
REDIS_CHUNK = 200  # pybreaker with Redis is ~100x slower: smaller chunks, the same number of clock reads


def noop() -> None:
    """The guarded call: nothing, so that only the guard's cost is measured."""


def thread_cpu_s(native_id: int) -> float:
    """A thread's user + system CPU seconds, from /proc (0 when it has gone)."""
    try:
        stat = Path(f"/proc/self/task/{native_id}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Loop:
    """One kind: `chunk()` makes `size` calls; `settle()` runs between chunks, untimed."""

    def __init__(self, kind: str, args: argparse.Namespace) -> None:
        self.kind = kind
        self.size = CHUNK
        self.client: Any = None
        self.flush_cpu = 0.0
        self.check: Callable[[], str] = lambda: ""
        self.chunk = self._build(kind, args)

    def _build(self, kind: str, args: argparse.Namespace) -> Callable[[], None]:
        size = self.size
        if kind == "plain":

            def plain() -> None:
                for _ in range(size):
                    noop()

            return plain
        if kind.startswith("pybreaker"):
            return self._pybreaker(kind, args)
        return self._sdk(kind, args)

    def _pybreaker(self, kind: str, args: argparse.Namespace) -> Callable[[], None]:
        import pybreaker

        storage = None
        if kind == "pybreaker_redis":
            import redis

            client = redis.Redis.from_url(os.environ["REDIS_URL"])
            storage = pybreaker.CircuitRedisStorage(
                pybreaker.STATE_CLOSED, client, namespace=f"rebound-bench:sdk:pybreaker:{args.tag}"
            )
            self.size = REDIS_CHUNK
        breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30, state_storage=storage)
        call, size = breaker.call, self.size

        def chunk() -> None:
            for _ in range(size):
                call(noop)

        self.check = lambda: "" if breaker.current_state == pybreaker.STATE_CLOSED else "pybreaker not closed"
        return chunk

    def _sdk(self, kind: str, args: argparse.Namespace) -> Callable[[], None]:
        from rebound_client import Client

        if kind == "sustained":
            client = Client(args.url, args.key)  # the defaults: the flusher thread sends as the calls go on
        else:
            # The flusher sends between chunks, in this thread (settle(), untimed, its CPU counted apart): the
            # chunk's time is the callers' cost alone, not smeared with the sending's, which is reported per
            # outcome next to it. The calls do exactly the same work either way.
            client = Client(args.url, args.key, flush_at=CHUNK * 2, flush_interval_s=3600)
        self.client = client
        if not client.connected:
            raise SystemExit(f"the SDK could not load the fleet's breakers from {args.url}")
        service, size = args.service, self.size
        if kind == "sdk_guard":
            guard = client.guard

            def with_guard() -> None:
                for _ in range(size):
                    with guard(service):
                        noop()

            chunk = with_guard
        else:
            guarded = client.with_circuit_breaker(service)(noop)

            def decorated() -> None:
                for _ in range(size):
                    guarded()

            chunk = decorated
        chunk()
        client.flush()
        if client.state(service) != "closed" or service not in client._fast:
            raise SystemExit(f"{service} is not closed in the SDK's view: {client.state(service)}")

        def check() -> str:
            problems = []
            if client.state(service) != "closed":
                problems.append(f"the breaker ended {client.state(service)}")
            if not client.connected:
                problems.append("the live view was not connected at the end")
            return "; ".join(problems)

        self.check = check
        return chunk

    def settle(self) -> None:
        """The paced SDK kinds: send every queued outcome now (untimed; its CPU is counted in `flush_cpu`)."""
        if self.client is None or self.kind == "sustained":
            return
        started = time.thread_time()
        if not self.client.flush(timeout_s=30):
            raise SystemExit("the outcomes could not be sent")
        self.flush_cpu += time.thread_time() - started

    def background_threads(self) -> list[int]:
        if self.client is None:
            return []
        return [t.native_id for t in self.client._threads if t.native_id is not None]


def measure(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    loop = Loop(kind, args)
    end = time.monotonic() + args.warmup
    while time.monotonic() < end:
        loop.chunk()
        loop.settle()
    background = loop.background_threads()
    stats_before = loop.client.stats() if loop.client is not None else {}
    bg_before = sum(thread_cpu_s(t) for t in background)
    loop.flush_cpu = 0.0
    calls, timed, caller_cpu = 0, 0.0, 0.0
    perf_counter, thread_time = time.perf_counter, time.thread_time
    wall_started = time.monotonic()
    while timed < args.seconds and time.monotonic() - wall_started < args.seconds * 30:
        cpu_started, started = thread_time(), perf_counter()
        loop.chunk()
        timed += perf_counter() - started
        caller_cpu += thread_time() - cpu_started
        calls += loop.size
        loop.settle()
    result: dict[str, Any] = {
        "kind": kind,
        "calls": calls,
        "seconds": timed,
        "caller_cpu_seconds": caller_cpu,
        "wall_seconds": time.monotonic() - wall_started,
        "problem": loop.check(),
    }
    if loop.client is not None:
        if kind == "sustained":
            result["sent_in_loop"] = loop.client.stats()["sent"] - stats_before["sent"]
        loop.client.flush(timeout_s=60)
        stats = loop.client.stats()
        threads_cpu = sum(thread_cpu_s(t) for t in background) - bg_before
        result["background_cpu_seconds"] = threads_cpu + loop.flush_cpu
        result["sent"] = stats["sent"] - stats_before["sent"]
        result["dropped"] = stats["dropped"] - stats_before["dropped"]
        result["threads"] = threading.active_count()
        loop.client.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sdk_loops")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds of calls")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--url", default="")
    parser.add_argument("--key", default="")
    parser.add_argument("--service", default="bench-sdk-guard")
    parser.add_argument("--tag", default=str(os.getpid()))
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    print(MARKER + json.dumps(measure(args.kind, args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

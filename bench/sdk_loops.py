"""In-process loops of the SDK benchmark: a plain call, pybreaker (in memory and with CircuitRedisStorage), and
the SDK's guard with its live view connected to a real gunicorn. One kind per fresh process.

    python -m bench.sdk_loops KIND --seconds S --warmup S --url URL --key KEY --service NAME --tag TAG [--rate R]

bench/sdk.py runs each as a child with the server's environment (Redis db 13), reads the one JSON line it
prints, and measures around it how much CPU other people's processes took. Every kind makes the same no-op call.

The timed kinds make their calls in chunks of calls back to back from one thread. For the SDK two spans are
timed per chunk: the calls alone (the bare decision: a dict lookup, the call, a deque append) and the calls
plus `client.flush()`, which encodes their outcomes and sends them to the server and waits for its answer (the
guarded call's whole price, its delivery included, in the caller's own thread). The thread's CPU time is taken
over both spans too, and the background threads' (the live view's long-poll) from /proc.

The delivery kinds run the default client (its flusher thread sending as the calls go on), for `--seconds`:
`paced` makes calls at `--rate` per second (in 5 ms slots), `sustained` as fast as it can; both report what
was delivered (accepted by the server), dropped (oldest first, by the full buffer) and left queued, and the
most the buffer held.

Kinds:
  plain             noop(): the floor
  pybreaker_memory  pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30).call(noop)
  pybreaker_redis   the same with state_storage=CircuitRedisStorage(STATE_CLOSED, redis, namespace=<run>)
  sdk_decorator     @client.with_circuit_breaker(service) on noop, then called
  sdk_guard         with client.guard(service): noop()
  paced             sdk_decorator at --rate calls/s with the default client
  sustained         sdk_decorator in one continuous loop, no pauses, with the default client
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
KINDS = ("plain", "pybreaker_memory", "pybreaker_redis", "sdk_decorator", "sdk_guard", "paced", "sustained")
DELIVERY = ("paced", "sustained")  # the default client, its flusher thread sending
SLOT_S = 0.005  # a paced loop's slot: its calls back to back, then a sleep until the next
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

        if kind in DELIVERY:
            client = Client(args.url, args.key)  # the defaults: the flusher thread sends as the calls go on
        else:
            # The outcomes are sent by flush() after each chunk, in this thread (settle(), timed as the delivery
            # span): no flusher thread competes with the calls, so each span is measured on its own. The calls
            # do exactly the same work with any setting.
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
        """The chunked SDK kinds: send every queued outcome now, in this thread (the delivery span)."""
        if self.client is None or self.kind in DELIVERY:
            return
        if not self.client.flush(timeout_s=30):
            raise SystemExit("the outcomes could not be sent")

    def background_threads(self) -> list[int]:
        if self.client is None:
            return []
        return [t.native_id for t in self.client._threads if t.native_id is not None]


def measure(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    if kind in DELIVERY:
        return deliver(kind, args)
    loop = Loop(kind, args)
    end = time.monotonic() + args.warmup
    while time.monotonic() < end:
        loop.chunk()
        loop.settle()
    background = loop.background_threads()
    stats_before = loop.client.stats() if loop.client is not None else {}
    bg_before = sum(thread_cpu_s(t) for t in background)
    calls, timed, caller_cpu, delivered_s, delivered_cpu = 0, 0.0, 0.0, 0.0, 0.0
    perf_counter, thread_time = time.perf_counter, time.thread_time
    wall_started = time.monotonic()
    while timed < args.seconds and time.monotonic() - wall_started < args.seconds * 30:
        cpu_started, started = thread_time(), perf_counter()
        loop.chunk()
        called, called_cpu = perf_counter(), thread_time()
        loop.settle()
        timed += called - started
        caller_cpu += called_cpu - cpu_started
        delivered_s += perf_counter() - started
        delivered_cpu += thread_time() - cpu_started
        calls += loop.size
    result: dict[str, Any] = {
        "kind": kind,
        "calls": calls,
        "seconds": timed,
        "caller_cpu_seconds": caller_cpu,
        "wall_seconds": time.monotonic() - wall_started,
        "problem": loop.check(),
    }
    if loop.client is not None:
        stats = loop.client.stats()
        result["delivered_seconds"] = delivered_s
        result["delivered_cpu_seconds"] = delivered_cpu
        result["background_cpu_seconds"] = sum(thread_cpu_s(t) for t in background) - bg_before
        result["sent"] = stats["delivered"] - stats_before["delivered"]
        result["dropped"] = stats["dropped"] - stats_before["dropped"]
        result["delivered_total"] = stats["delivered"]
        result["threads"] = threading.active_count()
        loop.client.close()
    return result


def deliver(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """The default client, its flusher thread sending while the calls go on: paced at `args.rate` calls/s, or
    as fast as one thread calls (`sustained`). What was delivered, dropped, and left queued when the calls
    stopped; every outcome is then flushed, so that the server's count can be checked against the client's."""
    loop = Loop(kind, args)
    client = loop.client
    guarded = client.with_circuit_breaker(args.service)(noop)
    per_slot = max(1, round(args.rate * SLOT_S)) if kind == "paced" else CHUNK
    # The warm-up is paced (at the run's rate, or at 20,000/s before the unpaced run): it must drop nothing.
    warm = per_slot if kind == "paced" else 100
    end = time.monotonic() + args.warmup
    while time.monotonic() < end:
        for _ in range(warm):
            guarded()
        time.sleep(SLOT_S)
    client.flush(timeout_s=60)
    before = client.stats()
    calls, most_queued, late_slots = 0, 0, 0
    buffer = client._core.buffer
    started = time.perf_counter()
    next_slot = started
    while True:
        now = time.perf_counter()
        if now - started >= args.seconds:
            break
        for _ in range(per_slot):
            guarded()
        calls += per_slot
        most_queued = max(most_queued, len(buffer))
        if kind == "paced":
            next_slot += SLOT_S
            wait = next_slot - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            else:
                late_slots += 1
    seconds = time.perf_counter() - started
    stopped = client.stats()
    flushed = client.flush(timeout_s=60)
    after = client.stats()
    result = {
        "kind": kind,
        "rate": args.rate if kind == "paced" else 0,
        "calls": calls,
        "seconds": seconds,
        "caller_cpu_seconds": 0.0,
        "wall_seconds": seconds,
        "problem": loop.check() + ("" if flushed else "; the outcomes could not all be sent after the loop"),
        "sent_in_loop": stopped["delivered"] - before["delivered"],
        "queued_at_stop": stopped["buffered"],
        "most_queued": most_queued,
        "late_slots": late_slots,
        "sent": after["delivered"] - before["delivered"],
        "dropped": after["dropped"] - before["dropped"],
        "dropped_total": after["dropped"],
        "dropped_reported": after["dropped_reported"],
        "delivered_total": after["delivered"],
        "compact": client._encoder.compact,  # False: the server refused runs, single outcomes were sent
        "threads": threading.active_count(),
    }
    client.close()
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
    parser.add_argument("--rate", type=float, default=50_000.0, help="paced: calls per second")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    print(MARKER + json.dumps(measure(args.kind, args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

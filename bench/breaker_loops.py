"""In-process loops of the breaker benchmark: Rebound's Redis store, bare redis-py and pybreaker, one process.

    python -m bench.breaker_loops KIND --seconds S --warmup S --tag TAG

bench/breaker_services.py runs each loop as a child with the server's environment (production settings, Redis db 13),
a fresh interpreter per loop and round, and reads the one JSON line it prints. Each loop makes its calls one
after another from one thread, the way one agent process would; the child times itself and reads, around the
timed part only, its own CPU time and the CPU other people's processes took (bench/cpu.py).

Kinds (every one on a closed breaker, which the loop checks it stayed in):
  permit            RedisStore.permit(service, config, uuid4().hex): one Lua round trip per decision
  record            RedisStore.record_many of 100 outcomes (2% failures): one script call carrying the 100 (bench/breaker_baseline_batch.lua is its baseline)
  evalsha           redis-py's evalsha of Rebound's permit script, without RedisStore (where the time goes)
  guarded           a guarded call as the SDK makes it: a permit, the no-op call, its outcome queued; the queue
                    flushed with record_many every 100 calls
  pybreaker_redis   pybreaker.CircuitBreaker(state_storage=CircuitRedisStorage(...)).call(no-op)
  pybreaker_memory  the same with pybreaker's default in-memory storage (no Redis: context only)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench import cpu

MARKER = "BENCH_LOOP "
KINDS = ("permit", "record", "evalsha", "guarded", "pybreaker_redis", "pybreaker_memory")
BATCH = 100  # outcomes per record_many pipeline, and guarded calls per flush
CHUNK = 100  # operations between two looks at the clock
SERVERS = ("redis-server",)  # the Redis these loops load is the benchmark's, not "other" CPU


def noop() -> None:
    """The guarded call: nothing, so that only the breaker's cost is measured."""


def build(kind: str, tag: str) -> tuple[Callable[[], int], Callable[[], str]]:
    """(one chunk of operations, returning how many it made; a check that returns '' when all was well)."""
    import django

    django.setup()
    from recovery.breakers import logic as breaker_logic
    from recovery.breakers import registry as breaker_registry
    from recovery.breakers import store as breaker_store
    from recovery.breakers.lua import PERMIT
    from recovery.breakers.models import Service
    from recovery.breakers.store import RedisStore

    # The store the API uses, with its client (same pool, timeouts and health checks): REDIS_URL is set.
    store = breaker_store.current_store()
    if not isinstance(store, RedisStore):
        raise SystemExit(f"the breaker store is {type(store).__name__}, not RedisStore: is REDIS_URL set?")
    client = store.client
    service = Service(name=f"bench-loop-{kind.replace('_', '-')}-{tag}")  # unsaved: the store needs its name
    cfg = breaker_registry.config_of(service)  # the defaults: count window of 20, 10 calls minimum, 50%
    denied = [0]

    if kind == "permit":
        # The first permit builds the breaker's state (a missing state is rebuilt from its history, not taken
        # for closed): outside the timed loop.
        store.permit(service, cfg, "warm-up")

        def chunk() -> int:
            for _ in range(CHUNK):
                if not store.permit(service, cfg, uuid.uuid4().hex).allowed:
                    denied[0] += 1
            return CHUNK

    elif kind == "record":
        items = [(service, cfg, breaker_logic.Outcome(failure=i % 50 == 25)) for i in range(BATCH)]

        def chunk() -> int:
            results = store.record_many(items)
            denied[0] += sum(1 for r in results if r.state != breaker_logic.CLOSED)
            return BATCH

    elif kind == "evalsha":
        sha: Any = client.script_load(PERMIT)  # a str: this client is synchronous
        keys = store.keys(service)
        args: list[Any] = store._args(cfg)  # numbers too, which redis's stubs of evalsha do not allow
        store.permit(service, cfg, "warm-up")  # builds the state the raw script then finds (else: "rebuild")

        def chunk() -> int:
            for _ in range(CHUNK):
                reply: Any = client.evalsha(sha, len(keys), *keys, *args, uuid.uuid4().hex)
                if not int(reply[1]):
                    denied[0] += 1
            return CHUNK

    elif kind == "guarded":
        pending: list[tuple[Any, breaker_logic.Config, breaker_logic.Outcome]] = []

        def chunk() -> int:
            for _ in range(BATCH):
                permit = store.permit(service, cfg, uuid.uuid4().hex)
                if not permit.allowed:
                    denied[0] += 1
                    continue
                noop()
                pending.append(
                    (service, cfg, breaker_logic.Outcome(failure=False, permit_id=permit.permit_id))
                )
            store.record_many(pending)
            pending.clear()
            return BATCH

    elif kind in ("pybreaker_redis", "pybreaker_memory"):
        import pybreaker

        storage = None
        if kind == "pybreaker_redis":
            # Its own namespace per run, so that no earlier run's state is read.
            storage = pybreaker.CircuitRedisStorage(
                pybreaker.STATE_CLOSED, client, namespace=f"rebound-bench:pybreaker:{tag}"
            )
        breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30, state_storage=storage)

        def chunk() -> int:
            for _ in range(CHUNK):
                breaker.call(noop)
            return CHUNK

        def pybreaker_check() -> str:
            state = breaker.current_state
            return "" if state == pybreaker.STATE_CLOSED else f"pybreaker ended {state}"

        return chunk, pybreaker_check
    else:
        raise SystemExit(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")

    def check() -> str:
        if denied[0]:
            return f"{denied[0]} decisions were not a closed breaker's allow"
        peek = store.peek(service, cfg)
        return "" if peek.state == breaker_logic.CLOSED else f"the breaker ended {peek.state}"

    return chunk, check


def run_for(chunk: Callable[[], int], seconds: float) -> int:
    done = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        done += chunk()
    return done


def measure(kind: str, seconds: float, warmup: float, tag: str) -> dict[str, Any]:
    chunk, check = build(kind, tag)
    run_for(chunk, warmup)  # connections, script cache, Redis's keys, the interpreter's caches
    before, cpu_before = cpu.sample(SERVERS), time.process_time()
    started = time.perf_counter()
    ops = run_for(chunk, seconds)
    elapsed = time.perf_counter() - started
    cpu_used, after = time.process_time() - cpu_before, cpu.sample(SERVERS)
    return {
        "kind": kind,
        "ops": ops,
        "seconds": elapsed,
        "cpu_seconds": cpu_used,
        "other_cpu_pct": cpu.other_share(before, after),
        "problem": check(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.breaker_loops")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--tag", default=str(os.getpid()))
    a = parser.parse_args(sys.argv[1:] if argv is None else argv)
    result = measure(a.kind, a.seconds, a.warmup, a.tag)
    print(MARKER + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The Celery app of the health-check benchmark's worker: Rebound's own (config.celery), plus a trace of its tasks.

    celery -A bench.health_celery worker ...

The app, its settings and its tasks are Rebound's, unchanged; this module only connects three signal handlers.
Each worker process keeps, in memory, per task run: its name, its arguments (run_check's only), when it
began (wall clock, the same clock as `started_at`), its wall and CPU seconds (the CPU of the thread that ran it,
so that a threads pool's tasks are told apart), and its return value when it is a number; and, per run_check
message the dispatcher publishes, the moment it was sent. A thread appends them to
`$REBOUND_BENCH_TRACE_DIR/trace-<pid>.jsonl` every half second. With it the benchmark splits a run's lateness
into the dispatcher's delay, the wait in the broker and the worker, and the task's own start, and the worker's
CPU into the dispatcher's, the checks' and Celery's own. Its cost is a few microseconds per task.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from celery.signals import before_task_publish, task_postrun, task_prerun, worker_process_shutdown

from config.celery import app

__all__ = ["app"]

RUN_CHECK = "healing.checks.tasks.run_check"
TRACE_DIR = Path(os.environ.get("REBOUND_BENCH_TRACE_DIR", "."))

_events: list[dict[str, Any]] = []
_begun: dict[str, tuple[float, float, float]] = {}  # task id -> (wall clock, perf counter, thread CPU)
_lock = threading.Lock()
_writer_pid = 0


def _flush() -> None:
    with _lock:
        batch = _events[:]
        del _events[:]
    if batch:
        with (TRACE_DIR / f"trace-{os.getpid()}.jsonl").open("a") as out:
            out.write("".join(json.dumps(event) + "\n" for event in batch))


def _writer() -> None:
    while True:
        time.sleep(0.5)
        _flush()


def _record(event: dict[str, Any]) -> None:
    global _writer_pid
    if _writer_pid != os.getpid():
        # The first event in this process (a prefork child does not inherit its parent's thread): start one.
        _writer_pid = os.getpid()
        threading.Thread(target=_writer, name="bench-trace", daemon=True).start()
    with _lock:
        _events.append(event)


def record_task(name: str, began: float, wall: float, cpu: float, ret: int | None) -> None:
    """A task-like run outside a worker (bench/health_dispatch.py's passes), traced as the worker's are."""
    _record({"e": "task", "name": name, "t": began, "wall": wall, "cpu": cpu, "args": None, "ret": ret})


def flush() -> None:
    _flush()


@before_task_publish.connect
def _published(sender: str | None = None, body: Any = None, **_: object) -> None:
    if sender == RUN_CHECK and isinstance(body, list | tuple) and body:
        _record({"e": "pub", "t": time.time(), "args": list(body[0])})


@task_prerun.connect
def _began(task_id: str = "", **_: object) -> None:
    _begun[task_id] = (time.time(), time.perf_counter(), time.thread_time())


@task_postrun.connect
def _ended(task_id: str = "", task: Any = None, args: Any = None, retval: Any = None, **_: object) -> None:
    begun = _begun.pop(task_id, None)
    if begun is None:
        return
    wall_clock, counter, thread_cpu = begun
    name = getattr(task, "name", "?")
    _record(
        {
            "e": "task",
            "name": name,
            "t": wall_clock,
            "wall": time.perf_counter() - counter,
            "cpu": time.thread_time() - thread_cpu,
            "args": list(args) if name == RUN_CHECK and args is not None else None,
            "ret": retval if isinstance(retval, int | float) and not isinstance(retval, bool) else None,
        }
    )


@worker_process_shutdown.connect
def _process_ends(**_: object) -> None:
    _flush()


atexit.register(_flush)

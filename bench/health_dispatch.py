"""The health checks' dispatcher in a loop of its own, for the benchmark's comparison with beat's one second.

    python -m bench.health_dispatch --period 0.25     # with the benchmark's environment (DATABASE_URL, ...)

Calls Rebound's own `healing.checks.services.dispatch_due()` (what `dispatch_due_checks` runs) every `--period`
seconds, on a fixed schedule (a late pass is not made up with a burst), until SIGTERM. Production does not run
this: beat sends `dispatch_due_checks` every second. The benchmark runs it beside beat (two dispatchers
racing for the same claims, which the compare-and-set must keep to one run per due time) to show what a
shorter period does to the lateness. Each pass is traced like the worker's tasks (bench/health_celery.py).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

DISPATCH = "healing.checks.tasks.dispatch_due_checks"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.health_dispatch", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--period", type=float, default=0.25, help="seconds between passes (default 0.25)")
    args = parser.parse_args(argv)
    if not 0.01 <= args.period <= 60:
        parser.error("--period 0.01..60 s")
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))

    import django

    django.setup()
    # Rebound's Celery app (the runs are sent with it) and the trace.
    from bench import health_celery
    from healing.checks import services

    due = time.monotonic()
    while not stopping:
        began, counter, cpu = time.time(), time.perf_counter(), time.thread_time()
        sent = services.dispatch_due()
        health_celery.record_task(
            DISPATCH, began, time.perf_counter() - counter, time.thread_time() - cpu, sent
        )
        due = max(due + args.period, time.monotonic())
        time.sleep(max(0.0, due - time.monotonic()))
    health_celery.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

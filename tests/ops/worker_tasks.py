"""Tasks only the process tests load into a real worker (`celery -A config worker -I tests.ops.worker_tasks`).

`nap` takes a while, so that a test can restart the broker while a message is in flight (unacknowledged, with
acks_late), and leaves marks a test can wait for in the file named by REBOUND_TEST_MARKS.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from celery import shared_task


def _mark(line: str) -> None:
    path = os.environ.get("REBOUND_TEST_MARKS")
    if path:
        with Path(path).open("a") as marks:
            marks.write(line + "\n")


@shared_task(name="tests.ops.nap")
def nap(seconds: float, mark: str) -> None:
    """Write `start <mark>`, sleep, write `done <mark> <pid of the worker's main process>`."""
    _mark(f"start {mark}")
    time.sleep(seconds)
    _mark(f"done {mark} {os.getppid()}")

#!/usr/bin/env python3
"""The embedded mode's process manager (`make run`): web, worker and beat from a Procfile, in one terminal.

It replaces honcho, which did two things wrong for Rebound (issue 11, items 21 and 29):
- Ctrl-C: honcho sent SIGTERM and then SIGKILL after 5 s, so a Celery worker finishing a task was killed
  mid-task, and it exited 130/143, which `make` reports as an error. Here a stop request (Ctrl-C, SIGTERM)
  sends each process's main pid one SIGTERM (Celery's warm shutdown, gunicorn's graceful stop, beat's exit)
  and waits up to --stop-timeout for all of them; then exits 0. A second Ctrl-C kills what is left.
- A process that dies stopped everything. Here it is started again, after a growing pause (1 s doubling up to
  30 s, back to 1 s once it has stayed up 30 s), so a crash costs seconds; only a process that cannot start
  at all (five quick exits in a row: a bad setting, a busy port) stops the whole set, with its exit code.

Each process runs in a session of its own, so that the terminal's Ctrl-C reaches this manager only (gunicorn
takes SIGINT as "quit now", and Celery's pool processes would see it too); a process's leftovers (the pool of a
worker killed with -9) are killed with its process group before it is started again. Standard library only:
it runs from a fresh virtual environment. Usage: `procman.py [-f Procfile] [--stop-timeout SECONDS]`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 30.0  # a process up this long is healthy again: its next crash waits FIRST_BACKOFF_S
QUICK_EXITS_LIMIT = 5  # exits in a row, each before STABLE_AFTER_S: it cannot start, stop everything
TICK_S = 0.1
_print_lock = threading.Lock()


def say(name: str, text: str, width: int = 6) -> None:
    with _print_lock:
        sys.stdout.write(f"{time.strftime('%H:%M:%S')} {name:<{width}} | {text.rstrip()}\n")
        sys.stdout.flush()


@dataclass
class Child:
    """One Procfile line and the process that runs it now (None while it waits to be started again)."""

    name: str
    command: str
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    quick_exits: int = 0
    backoff_s: float = FIRST_BACKOFF_S
    restart_at: float | None = None

    def start(self, width: int) -> None:
        args = shlex.split(os.path.expandvars(self.command))
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.started_at, self.restart_at = time.monotonic(), None
        assert self.process.stdout is not None
        threading.Thread(target=_pump, args=(self.name, self.process.stdout, width), daemon=True).start()
        say("system", f"{self.name} started (pid {self.process.pid})")

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signum)

    def kill_group(self) -> None:
        """SIGKILL the process and whatever it started (its group: it leads its own session)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)


def _pump(name: str, stream: IO[bytes], width: int) -> None:
    for raw in iter(stream.readline, b""):
        say(name, raw.decode(errors="replace"), width)
    stream.close()


def read_procfile(path: Path) -> list[Child]:
    children = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, command = line.partition(":")
        if not command.strip():
            raise SystemExit(f"{path}: not `name: command`: {line!r}")
        children.append(Child(name.strip(), command.strip()))
    return children


class Manager:
    def __init__(
        self, children: list[Child], stop_timeout_s: float, first_backoff_s: float = FIRST_BACKOFF_S
    ) -> None:
        self.children = children
        self.stop_timeout_s = stop_timeout_s
        self.first_backoff_s = first_backoff_s
        for child in children:
            child.backoff_s = first_backoff_s
        self.width = max(len("system"), *(len(c.name) for c in children))
        self.stop_requests = 0

    def request_stop(self, signum: int, _frame: object) -> None:
        self.stop_requests += 1

    def run(self) -> int:
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)
        for child in self.children:
            child.start(self.width)
        while not self.stop_requests:
            failed = self._reap_and_restart()
            if failed is not None:
                code = failed.process.returncode if failed.process is not None else None
                say(
                    "system",
                    f"{failed.name} cannot start ({QUICK_EXITS_LIMIT} quick exits, last {code}): stopping",
                )
                self._stop()
                return code if code and code > 0 else 1
            time.sleep(TICK_S)
        return self._stop()

    def _reap_and_restart(self) -> Child | None:
        """Start again what died, after its pause; the child that cannot start at all, if one."""
        now = time.monotonic()
        for child in self.children:
            process = child.process
            if process is not None and process.poll() is not None:
                lasted = now - child.started_at
                child.kill_group()  # what it leaves behind would hold its port, or its tasks
                if lasted >= STABLE_AFTER_S:
                    child.quick_exits, child.backoff_s = 0, self.first_backoff_s
                child.quick_exits += 1
                if child.quick_exits >= QUICK_EXITS_LIMIT:
                    return child
                child.restart_at = now + child.backoff_s
                say(
                    "system",
                    f"{child.name} exited with {process.returncode}: restarting in {child.backoff_s:g} s",
                )
                child.backoff_s = min(child.backoff_s * 2, MAX_BACKOFF_S)
                child.process = None
            elif process is None and child.restart_at is not None and now >= child.restart_at:
                child.start(self.width)
        return None

    def _stop(self) -> int:
        """One SIGTERM each, then wait; a second stop request or the timeout kills what is left."""
        running = [c for c in self.children if c.process is not None and c.process.poll() is None]
        names = ", ".join(c.name for c in running)
        say(
            "system",
            f"stopping {names}: SIGTERM, then up to {self.stop_timeout_s:g} s (Ctrl-C again to kill)",
        )
        requests = self.stop_requests
        for child in running:
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        while any(c.process.poll() is None for c in running if c.process is not None):
            if self.stop_requests > requests or time.monotonic() >= deadline:
                left = [c for c in running if c.process is not None and c.process.poll() is None]
                say(
                    "system",
                    "killing " + ", ".join(f"{c.name} (pid {c.process.pid})" for c in left if c.process),
                )
                for child in left:
                    child.kill_group()
                return 1
            time.sleep(TICK_S)
        codes = {c.name: c.process.returncode for c in running if c.process is not None}
        say("system", "stopped: " + ", ".join(f"{name} ({code})" for name, code in codes.items()))
        clean = all(code in (0, -signal.SIGTERM) for code in codes.values())
        return 0 if clean else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-f", "--procfile", type=Path, default=Path("Procfile"))
    parser.add_argument("--stop-timeout", type=float, default=300.0, help="seconds to wait after SIGTERM")
    parser.add_argument(
        "--first-backoff", type=float, default=FIRST_BACKOFF_S, help="the first restart's pause"
    )
    options = parser.parse_args()
    return Manager(read_procfile(options.procfile), options.stop_timeout, options.first_backoff).run()


if __name__ == "__main__":
    sys.exit(main())

"""Prometheus in several processes and containers.

With PROMETHEUS_MULTIPROC_DIR set, every process writes its samples to files named by a process id and
/metrics adds them up. Containers number their processes from 1, so a gunicorn worker and a Celery process
sharing the folder could both be pid 7: the files are named by host name and pid instead.
"""

from __future__ import annotations

import os
import socket

_HOST = socket.gethostname()


def process_id(pid: int | None = None) -> str:
    # Called on every metric change: the host name is read once per process.
    return f"{_HOST}_{pid if pid is not None else os.getpid()}"


def use_multiprocess_dir(path: str) -> None:
    # Must run before any metric is created: prometheus_client reads ValueClass when a metric is made.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", path)
    from prometheus_client import values

    values.ValueClass = values.MultiProcessValue(process_id)

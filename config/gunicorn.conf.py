"""gunicorn settings shared by production, docker-compose and the benchmarks."""

import gc
import os
from types import ModuleType
from typing import Protocol

from config import gunicorn_errors
from config.env import load
from config.metrics import process_id

# Validate the environment in the master: a worker that exits on a bad variable would be respawned forever.
load()
# Requests gunicorn refuses itself (a request line over 4094 bytes, a bad header) are answered in JSON too.
gunicorn_errors.install()

multiprocess: ModuleType | None = None
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # Imported here, in the master before it forks: importing it inside the child_exit signal handler can
    # interrupt another import of the same package half-way.
    import prometheus_client.multiprocess

    multiprocess = prometheus_client.multiprocess


bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "3"))
# Threads by default: every SDK client holds a long-poll on /api/v1/breakers/events for up to 25 s, and with
# one thread per worker a handful of agents would take every worker. GUNICORN_THREADS=1 selects sync workers.
# The sizing rule: a thread per held poll, i.e. per SDK client this web container serves, spread unevenly over
# the workers (a client's keep-alive connection stays on the worker that accepted it, and the kernel does not deal
# connections out in turn), plus room for the other requests: GUNICORN_THREADS >= 1.5 x clients / workers + 8.
# A poll beyond the threads waits in the worker's queue and hears of a trip only once a thread frees. A held poll
# costs its thread's stack and nothing more: it waits on its process's one Redis subscription
# (recovery/breakers/waits.py) and gives its database connection back while it waits. Threads that serve other
# requests keep theirs for DATABASE_CONN_MAX_AGE, so PostgreSQL's max_connections bounds the threads that may be
# busy at once, not the held polls. The default, 16, serves 16 clients with 3 workers (100 clients on 2 workers: 83).
threads = int(os.environ.get("GUNICORN_THREADS", "16"))
worker_class = "gthread" if threads > 1 else "sync"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
keepalive = 5
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
max_requests_jitter = max_requests // 10


class _Worker(Protocol):
    pid: int


def child_exit(server: object, worker: _Worker) -> None:
    # A dead worker's live gauges must leave the multiprocess metrics, or /metrics reports ghosts.
    if multiprocess is not None:
        multiprocess.mark_process_dead(process_id(worker.pid))


def post_fork(server: object, worker: object) -> None:
    # Traces (docs/tracing.md), in each worker: the span exporter's thread would not survive the fork, and the
    # worker loads the application (config/wsgi.py) only after this, so Django's middleware is instrumented.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from core.infra import tracing

    tracing.configure("web")


def post_worker_init(worker: object) -> None:
    # The loaded application (Django, DRF, the URLconf, pydantic's validators: some hundred thousand objects)
    # lives as long as the worker. Frozen, the collector stops walking it on every full collection, which took
    # 95-100 ms at a time in the checkpoint benchmark and was most of its p99 (docs/benchmarks.md).
    gc.freeze()

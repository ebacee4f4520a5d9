"""The health checks' Prometheus metrics. Safe under several gunicorn workers and Celery processes when
PROMETHEUS_MULTIPROC_DIR is set, like recovery/metrics.py (the gauge keeps the most recent value written by any
process)."""

from __future__ import annotations

from prometheus_client import Gauge, Histogram

# The numeric encoding of health_check_up (docs/health-checks.md): unknown is -1, so that "no verdict yet" is
# never read as down (0) or up (1).
UP_VALUES = {"healthy": 1, "unhealthy": 0, "unknown": -1}

health_check_up = Gauge(
    "health_check_up",
    "A health check's state: 1 healthy, 0 unhealthy, -1 unknown (not enough results yet).",
    ["check", "service"],
    multiprocess_mode="mostrecent",
)
health_check_duration_seconds = Histogram(
    "health_check_duration_seconds",
    "How long a health check's probe took (http, tcp, celery; pings and heartbeat silence are not probes).",
    ["check"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
# Rebound's own liveness (issue 18): beat sends dispatch_due_checks every second and only a worker runs it, so a
# stale value means beat is silent, no worker consumes, or the queue is backed up past the task's expiry (10 s).
# The newest any process wrote ("max": a dead worker's last value stays, and only grows older).
health_check_dispatch_timestamp_seconds = Gauge(
    "health_check_dispatch_timestamp_seconds",
    "Unix time a worker last ran beat's dispatch_due_checks (sent every second): stale means beat or the workers "
    "are silent.",
    multiprocess_mode="max",
)

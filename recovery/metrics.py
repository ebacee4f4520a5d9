"""Rebound's own Prometheus metrics. Safe under several gunicorn workers and Celery processes when
PROMETHEUS_MULTIPROC_DIR is set (see README, Operations)."""

from prometheus_client import Counter

errors_total = Counter(
    "errors_total", "Errors reported by agents, by class and severity.", ["error_class", "severity"]
)

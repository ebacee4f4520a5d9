"""The healing runs' Prometheus metrics (named like recovery/metrics.py, without a prefix)."""

from prometheus_client import Counter, Histogram

healing_runs_total = Counter(
    "healing_runs_total",
    "Healing runs that reached a final state, by action and result (succeeded, failed, rejected, expired, "
    "cancelled, skipped).",
    ["action", "result"],
)
healing_approval_wait_seconds = Histogram(
    "healing_approval_wait_seconds",
    "How long runs that waited for approval waited, from the request to the approval that let them start.",
    buckets=(1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 21600, 86400),
)

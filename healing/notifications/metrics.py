"""The notifications' Prometheus metrics (named like recovery/metrics.py, without a prefix)."""

from prometheus_client import Counter

# What became of each delivery (one escalation's notice to one channel): sent, failed (every attempt failed,
# or one that could not go better), or silenced (a silence was in force: recorded, not sent). A delivery is
# counted once, when it ends; its retries are not.
SENT, FAILED, SILENCED = "sent", "failed", "silenced"

notifications_total = Counter(
    "notifications_total",
    "Escalation notifications by how their delivery ended: sent, failed (after its retries) or silenced.",
    ["result"],
)

"""The remediation rules' own Prometheus metrics (names without a prefix, like recovery/metrics.py)."""

from prometheus_client import Counter

remediation_firings_total = Counter(
    "remediation_firings_total",
    "Firings of remediation rules, by rule and outcome (created, joined, skipped, refused, invalid, "
    "not_requested, error).",
    ["rule", "outcome"],
)

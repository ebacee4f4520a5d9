"""The breakers' own metrics beside recovery/metrics.py's: what the SDKs tell about outcomes that never came."""

from prometheus_client import Counter

# Fed by the `dropped` count an SDK sends with its next batch: outcomes its bounded buffer let go (oldest first)
# while it could not send them as fast as its calls made them. Nonzero means the breakers saw a sample.
sdk_outcomes_dropped_total = Counter(
    "sdk_outcomes_dropped_total",
    "Outcomes SDK clients dropped from their full buffers, as they reported with their next batch.",
)

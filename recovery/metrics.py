"""Rebound's own Prometheus metrics. Safe under several gunicorn workers and Celery processes when
PROMETHEUS_MULTIPROC_DIR is set (see README, Operations)."""

from prometheus_client import Counter, Gauge

errors_total = Counter(
    "errors_total", "Errors reported by agents, by class and severity.", ["error_class", "severity"]
)

# The numeric encoding of circuit_breaker_state (documented in the README).
BREAKER_STATE_VALUES = {
    "closed": 0,
    "half_open": 1,
    "open": 2,
    "forced_open": 3,
    "forced_closed": 4,
    "disabled": 5,
}
circuit_breaker_state = Gauge(
    "circuit_breaker_state",
    "Breaker state per service: 0 closed, 1 half_open, 2 open, 3 forced_open, 4 forced_closed, 5 disabled.",
    ["service"],
    multiprocess_mode="mostrecent",
)
breaker_transitions_total = Counter(
    "breaker_transitions_total", "Breaker state changes.", ["service", "from_state", "to_state"]
)
breaker_permits_total = Counter("breaker_permits_total", "Permit decisions.", ["service", "allowed"])
breaker_store_errors_total = Counter(
    "breaker_store_errors_total",
    "Decisions taken without the breaker store (Redis unreachable), by criticality and the fail mode used.",
    ["criticality", "decision"],
)
intake_dead_letters_total = Counter(
    "intake_dead_letters_total",
    "Buffered error reports that could not be written and were set aside in rebound:intake:dead.",
)

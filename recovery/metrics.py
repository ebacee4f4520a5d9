"""Rebound's own Prometheus metrics. Safe under several gunicorn workers and Celery processes when
PROMETHEUS_MULTIPROC_DIR is set (see README, Operations)."""

from prometheus_client import Counter, Gauge, Histogram

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

# --- recovery decisions (issue 4) ---------------------------------------------------------------------------
retries_total = Counter(
    "retries_total",
    "Retries: planner decisions (outcome=planned, or refused by the budget) and server-side attempts "
    "(outcome=success or failure), by service (a registered name: an operation is the agent's free text).",
    ["service", "outcome"],
)
fallback_invocations_total = Counter(
    "fallback_invocations_total",
    "Fallbacks used, by service and option kind ('exhausted': none left).",
    ["service", "kind"],
)
recovery_plans_total = Counter("recovery_plans_total", "Recovery plans answered, by action.", ["action"])
degradation_events_total = Counter(
    "degradation_events_total",
    "Changes of a degradation level, by new level and source.",
    ["level", "source"],
)
# The numeric encoding of degradation_level (documented in docs/recovery.md).
DEGRADATION_LEVEL_VALUES = {"normal": 0, "degraded": 1, "minimal": 2, "emergency": 3}
degradation_level = Gauge(
    "degradation_level",
    "Degradation level in force: 0 normal, 1 degraded, 2 minimal, 3 emergency; scope '*' is the fleet.",
    ["scope"],
    multiprocess_mode="mostrecent",
)
recovery_success_rate = Gauge(
    "recovery_success_rate",
    "Share of the last hour's recovery plans that succeeded, of those that succeeded or failed; 1 when there "
    "are none (see recovery_plan_results).",
    ["action"],
    multiprocess_mode="mostrecent",
)
recovery_plan_results = Gauge(
    "recovery_plan_results",
    "The last hour's recovery plans by action and result (pending, succeeded, failed, unknown): what "
    "recovery_success_rate stands on.",
    ["action", "result"],
    multiprocess_mode="mostrecent",
)

# --- state recovery (issue 5) -------------------------------------------------------------------------------
checkpoints_written_total = Counter("checkpoints_written_total", "Task checkpoints saved.")
checkpoint_bytes = Histogram(
    "checkpoint_bytes",
    "Size of saved checkpoints' canonical JSON, before compression.",
    buckets=(1_000, 10_000, 100_000, 1_000_000, 10_000_000),
)
transactions_total = Counter(
    "transactions_total",
    "Transactions ended, by outcome (committed, rolled_back, rollback_failed).",
    ["outcome"],
)
compensations_total = Counter(
    "compensations_total", "Compensation attempts, by outcome (success, failure).", ["outcome"]
)

# --- error learning (issue 16) ------------------------------------------------------------------------------
learning_results_total = Counter(
    "learning_results_total",
    "Results folded into the learning's effectiveness figures, by source (plan, retry_job, healing_run) and "
    "outcome (succeeded, failed, unknown).",
    ["source", "outcome"],
)

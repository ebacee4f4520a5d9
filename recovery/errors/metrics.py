"""The error intake's own Prometheus metrics (the count of dead-lettered entries, `intake_dead_letters_total`,
is in recovery/metrics.py with the others). Safe under several gunicorn workers and Celery processes when
PROMETHEUS_MULTIPROC_DIR is set: gauges keep the most recent value any process set."""

from prometheus_client import Gauge

intake_dead_letter_entries = Gauge(
    "intake_dead_letter_entries",
    "Entries now in the intake's dead-letter stream (rebound:intake:dead): reports the database refused for "
    "their content, kept for `manage.py intake_dead_letters`. Set by each drain and by the command.",
    multiprocess_mode="mostrecent",
)
intake_redis_persists_writes = Gauge(
    "intake_redis_persists_writes",
    "1 when the Redis that holds the intake's buffer persists writes (AOF on), 0 when it does not (the intake "
    "then writes in the request unless INTAKE_REQUIRE_DURABLE_REDIS is false).",
    multiprocess_mode="mostrecent",
)
intake_buffer_entries = Gauge(
    "intake_buffer_entries",
    "Entries in the intake's stream (rebound:intake) not yet written to PostgreSQL, as the last drain left it: "
    "near 0 while the drain keeps up. Set by each drain.",
    multiprocess_mode="mostrecent",
)

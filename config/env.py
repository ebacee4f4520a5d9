"""The one place the environment is read and validated.

Everything Rebound can be told from outside lives in `Env`. A bad value stops start-up with a message that
names the variable, and production refuses to run on embedded defaults (no default secret, no SQLite).
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BASE_DIR = Path(__file__).resolve().parent.parent

# Only ever used in the embedded mode; production must set its own SECRET_KEY.
EMBEDDED_SECRET_KEY = "embedded-insecure-key-never-used-in-production-0123456789abcdef"


class Env(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore")

    REBOUND_MODE: Literal["embedded", "production"] = "embedded"
    DEBUG: bool = False
    SECRET_KEY: str = ""
    ALLOWED_HOSTS: str = "localhost,127.0.0.1,[::1]"
    CSRF_TRUSTED_ORIGINS: str = ""
    SECURE_COOKIES: bool = True
    DATA_DIR: Path = BASE_DIR / "var"

    DATABASE_URL: str = ""
    DATABASE_CONN_MAX_AGE: int = Field(default=60, ge=0)
    REDIS_URL: str = ""
    CELERY_BROKER_URL: str = ""

    # How long a verified API key is trusted without a database look-up: also the longest a revoked key can
    # still work in another process.
    API_KEY_CACHE_SECONDS: float = Field(default=5.0, ge=0, le=30)
    # How long a process keeps its copy of the classification rules before reading them again.
    RULES_CACHE_SECONDS: float = Field(default=5.0, ge=0, le=300)
    API_MAX_BODY_BYTES: int = Field(default=1_048_576, ge=1024)
    # JSON nested deeper than this is refused with 400 before it is parsed (Python's parser would recurse).
    API_MAX_JSON_DEPTH: int = Field(default=400, ge=8, le=900)
    # When the database cannot be reached, a key verified before keeps working from the last good copy for
    # this long (the buffered intake exists to ride out a database restart); 0 turns this off.
    API_KEY_STALE_GRACE_SECONDS: float = Field(default=300.0, ge=0, le=86_400)
    # The longest wait Rebound stores or hands out: a `Retry-After` or `retry_after` above it is cut to it
    # (and the answer says so). A breaker open until the year 33715 is a bug, not a policy.
    MAX_RETRY_AFTER_S: float = Field(default=86_400.0, ge=1, le=30 * 86_400)
    # How long an `Idempotency-Key` on POST /errors or /outcomes is remembered: a repeat within it counts once.
    IDEMPOTENCY_KEY_TTL_SECONDS: int = Field(default=86_400, ge=60, le=7 * 86_400)
    ERRORS_BATCH_MAX: int = Field(default=1000, ge=1, le=100_000)
    ERROR_EVENT_RETENTION_DAYS: int = Field(default=14, ge=1)

    # Breakers: a service first seen in a permit or outcome is registered with the default settings unless this
    # is off (then it is a 404 until an operator registers it).
    AUTO_REGISTER_SERVICES: bool = True
    BREAKER_CONFIG_CACHE_SECONDS: float = Field(default=2.0, ge=0, le=60)
    # A half-open trial permit whose outcome never comes back frees its slot after this long.
    BREAKER_TRIAL_PERMIT_TTL_SECONDS: float = Field(default=30.0, gt=0, le=3600)
    # When Redis is unreachable: "open" lets calls through, "closed" refuses them; per service criticality.
    BREAKER_FAIL_MODE_ESSENTIAL: Literal["open", "closed"] = "open"
    BREAKER_FAIL_MODE_NON_CRITICAL: Literal["open", "closed"] = "closed"
    BREAKER_EVENTS_MAX_WAIT_SECONDS: float = Field(default=25.0, ge=0, le=120)
    BREAKER_STREAM_MAX_SECONDS: float = Field(default=300.0, gt=0, le=3600)
    OUTCOMES_BATCH_MAX: int = Field(default=5000, ge=1, le=100_000)
    # The result cache behind "cache" fallbacks: how long an agent's last good result is kept, and the largest
    # result (as JSON) an outcome may carry.
    RESULT_CACHE_TTL_SECONDS: int = Field(default=86_400, ge=1, le=30 * 86_400)
    RESULT_CACHE_MAX_BYTES: int = Field(default=65_536, ge=256, le=1_048_576)

    # Error intake: "buffered" queues reports in Redis and a worker writes them to PostgreSQL; "sync" writes in
    # the request; "auto" buffers when Redis and PostgreSQL are both configured.
    INTAKE_MODE: Literal["auto", "buffered", "sync"] = "auto"
    # "Accepted" must mean kept: when the Redis that holds the buffer does not persist writes (no AOF), the
    # intake says so loudly and writes reports in the request instead, unless this is turned off.
    INTAKE_REQUIRE_DURABLE_REDIS: bool = True
    # The dead-letter stream (entries the database refused for their content) keeps at most this many.
    INTAKE_DEAD_LETTER_MAX: int = Field(default=100_000, ge=100, le=10_000_000)

    # Degradation: an automatic level falls only once the lower level the rules ask for has held this long
    # (hysteresis: a breaker that flaps must not make the fleet's level flap).
    DEGRADATION_RECOVERY_SECONDS: float = Field(default=60.0, ge=0, le=3600)

    # Outbound calls (server-side retries, later compensations, health checks, healing): the hosts Rebound may
    # call, comma-separated (`api.example.com`, `*.internal.example`, `127.0.0.1:8080`); empty: none at all.
    OUTBOUND_ALLOWED_HOSTS: str = ""
    # At most 200 s: a call must end well within the retry task's soft time limit (240 s).
    OUTBOUND_MAX_TIMEOUT_SECONDS: float = Field(default=30.0, gt=0, le=200)
    OUTBOUND_MAX_RESPONSE_BYTES: int = Field(default=1_048_576, ge=1024, le=100 * 1_048_576)
    # Celery tasks agents may hand to Rebound, comma-separated, beside the built-in demo tasks.
    REGISTERED_TASKS: str = ""
    # A pending retry attempt this late is enqueued again (a lost message, a dead worker).
    RETRY_REQUEUE_AFTER_SECONDS: float = Field(default=30.0, ge=1, le=3600)
    # A running retry attempt this old is taken for lost with its worker (more than the retry task's hard time
    # limit, so no live attempt is): retried with the same idempotency key when that is safe, else escalated.
    RETRY_ATTEMPT_LEASE_SECONDS: float = Field(default=300.0, ge=1, le=86_400)
    # The longest a retry job may run, whatever its policy's deadline (waits for an open breaker included).
    RETRY_JOB_MAX_SECONDS: float = Field(default=86_400.0, ge=1, le=30 * 86_400)

    # Checkpoints (docs/checkpoints.md): the largest state (canonical JSON, before compression); how many
    # checkpoints a succeeded task keeps; how long a failed or abandoned task keeps all of them; the age past
    # which any checkpoint goes (but a running task's newest); how long a running task may stay quiet.
    CHECKPOINT_MAX_BYTES: int = Field(default=4 * 1_048_576, ge=1024, le=64 * 1_048_576)
    CHECKPOINT_KEEP_AFTER_SUCCESS: int = Field(default=1, ge=0, le=1000)
    CHECKPOINT_KEEP_FAILED_DAYS: float = Field(default=7.0, ge=0, le=3650)
    CHECKPOINT_MAX_AGE_DAYS: float = Field(default=30.0, gt=0, le=3650)
    TASK_STALE_SECONDS: float = Field(default=900.0, ge=10, le=30 * 86_400)

    # Transactions (docs/sagas.md): the longest deadline a transaction may be given; how long a compensation
    # attempt may be under way before a rollback takes it for lost (its worker died) and sends it again with the
    # same idempotency key (more than the rollback task's 300 s hard time limit: no live attempt is taken for
    # lost); how long a rolling-back transaction may go without progress before beat drives it again.
    SAGA_MAX_DEADLINE_SECONDS: float = Field(default=7 * 86_400.0, ge=1, le=365 * 86_400)
    SAGA_ATTEMPT_LEASE_SECONDS: float = Field(default=330.0, ge=1, le=86_400)
    SAGA_STALE_SECONDS: float = Field(default=120.0, ge=1, le=86_400)

    # Health checks (docs/health-checks.md): how long their results are kept, and how many due checks one pass
    # of the dispatcher claims (it runs every second; the rest wait for the next pass).
    HEALTH_RESULT_RETENTION_DAYS: float = Field(default=7.0, gt=0, le=3650)
    HEALTH_DISPATCH_BATCH: int = Field(default=1000, ge=1, le=100_000)
    # Healing runs (docs/healing.md): how long a run waits for its approvals before it expires; how long past its
    # action's timeout a running run may go before the reaper takes its worker for dead and marks it failed;
    # how many failed verifications of one action and target within an hour stop it being automatic.
    HEALING_APPROVAL_TIMEOUT_SECONDS: float = Field(default=3600.0, ge=10, le=7 * 86_400)
    HEALING_REAPER_GRACE_SECONDS: float = Field(default=60.0, ge=1, le=86_400)
    HEALING_HOLD_AFTER_FAILED_VERIFICATIONS: int = Field(default=3, ge=1, le=100)
    # Escalations (docs/escalations.md): a repeat this soon after its escalation was resolved reopens it rather
    # than raising a new one. Notifications: how many attempts a delivery gets, the first retry's delay (doubled
    # at each further one, capped at an hour), and how long one attempt may take.
    ESCALATION_REOPEN_WINDOW_SECONDS: float = Field(default=3600.0, ge=0, le=30 * 86_400)
    NOTIFICATION_MAX_ATTEMPTS: int = Field(default=5, ge=1, le=50)
    NOTIFICATION_RETRY_BASE_SECONDS: float = Field(default=10.0, ge=0.1, le=3600)
    NOTIFICATION_TIMEOUT_SECONDS: float = Field(default=10.0, ge=1, le=120)

    # Error learning (docs/learning.md): how fast an old result stops counting (its weight halves every
    # half-life); how many (weighted) results an action needs before the planner trusts its figure; how long a
    # process keeps the figures it read.
    LEARNING_HALF_LIFE_DAYS: float = Field(default=7.0, gt=0, le=365)
    LEARNING_MIN_TRIES: float = Field(default=10.0, ge=1, le=100_000)
    LEARNING_CACHE_SECONDS: float = Field(default=5.0, ge=0, le=300)

    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    LOG_FORMAT: Literal["json", "text"] = "json"
    PROMETHEUS_MULTIPROC_DIR: str = ""

    # The MCP server (mcp_server/, `manage.py mcp`). Over stdio it acts with the key in REBOUND_API_KEY; over
    # streamable HTTP it listens on MCP_HOST:MCP_PORT (endpoint /mcp) and takes each request's bearer key.
    REBOUND_API_KEY: str = ""
    MCP_HOST: str = "127.0.0.1"
    MCP_PORT: int = Field(default=8001, ge=1, le=65_535)
    # The URL agents reach the endpoint at (behind a proxy, or a container's name); announced in the protected
    # resource metadata. Blank: http://MCP_HOST:MCP_PORT/mcp.
    MCP_PUBLIC_URL: str = ""

    # OpenTelemetry traces (docs/tracing.md): off while the endpoint is blank. The OTLP/HTTP collector's base URL
    # (http://collector:4318; spans go to its /v1/traces), and the service name the spans carry. The exporter
    # reads its other OTEL_EXPORTER_OTLP_* variables (headers, timeout, compression) itself.
    OTEL_EXPORTER_OTLP_ENDPOINT: str = ""
    OTEL_SERVICE_NAME: str = Field(default="rebound", min_length=1)

    @model_validator(mode="after")
    def _production_needs_real_values(self) -> Env:
        if self.REBOUND_MODE != "production":
            return self
        problems = []
        if len(self.SECRET_KEY) < 32 or self.SECRET_KEY == EMBEDDED_SECRET_KEY:
            problems.append("SECRET_KEY: required in production, at least 32 characters")
        if not self.DATABASE_URL.startswith(("postgres://", "postgresql://")):
            problems.append("DATABASE_URL: required in production, a postgres:// URL")
        if not self.REDIS_URL.startswith(("redis://", "rediss://")):
            problems.append("REDIS_URL: required in production, a redis:// URL")
        if not self.allowed_hosts:
            problems.append("ALLOWED_HOSTS: required in production, a comma-separated list")
        if self.DEBUG:
            problems.append("DEBUG: must be false in production")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def embedded(self) -> bool:
        return self.REBOUND_MODE == "embedded"

    @property
    def allowed_hosts(self) -> list[str]:
        return [h.strip() for h in self.ALLOWED_HOSTS.split(",") if h.strip()]

    @property
    def csrf_trusted_origins(self) -> list[str]:
        return [h.strip() for h in self.CSRF_TRUSTED_ORIGINS.split(",") if h.strip()]

    @property
    def secret_key(self) -> str:
        return self.SECRET_KEY or EMBEDDED_SECRET_KEY

    @property
    def database_url(self) -> str:
        return self.DATABASE_URL or f"sqlite:///{self.DATA_DIR / 'rebound.sqlite3'}"

    @property
    def outbound_allowed_hosts(self) -> list[str]:
        return [h.strip().lower() for h in self.OUTBOUND_ALLOWED_HOSTS.split(",") if h.strip()]

    @property
    def registered_tasks(self) -> list[str]:
        return [t.strip() for t in self.REGISTERED_TASKS.split(",") if t.strip()]

    @property
    def broker_url(self) -> str:
        # The embedded broker is kombu's filesystem transport: a folder, no server.
        return self.CELERY_BROKER_URL or self.REDIS_URL or "filesystem://localhost//"


def describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        name = ".".join(str(p) for p in item["loc"]) or "environment"
        lines.append(f"  {name}: {item['msg']}")
    return "Rebound cannot start, the environment is invalid:\n" + "\n".join(lines)


@lru_cache(maxsize=1)
def load() -> Env:
    try:
        return Env()
    except ValidationError as error:
        # Exit with the variable's name rather than a traceback: this is an operator's mistake, not a bug.
        sys.stderr.write(describe(error) + "\n")
        raise SystemExit(2) from None

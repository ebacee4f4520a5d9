"""Django settings, all derived from the validated environment in config/env.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import dj_database_url

from config.env import BASE_DIR, load
from config.metrics import use_multiprocess_dir

ENV = load()
DATA_DIR = ENV.DATA_DIR
DATA_DIR.mkdir(parents=True, exist_ok=True)

if ENV.PROMETHEUS_MULTIPROC_DIR:
    # Before django_prometheus is loaded, so that every gunicorn worker and Celery process writes to the
    # shared folder that /metrics adds up.
    use_multiprocess_dir(ENV.PROMETHEUS_MULTIPROC_DIR)

SECRET_KEY = ENV.secret_key
DEBUG = ENV.DEBUG
ALLOWED_HOSTS = ENV.allowed_hosts
CSRF_TRUSTED_ORIGINS = ENV.csrf_trusted_origins
REBOUND_MODE = ENV.REBOUND_MODE

INSTALLED_APPS = [
    "core.apps.ReboundAdminConfig",  # django.contrib.admin, with Rebound's site (core/admin_site.py)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_prometheus",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "django_htmx",
    # The floors, lowest first: core, then recovery, then healing (docs/architecture.md).
    "core",
    "recovery",
    "healing",
    "console",
    "mcp_server",
    "drill",
]

MIDDLEWARE = [
    # First: the agents' two busiest calls, in their plain case, skip the rest of this list and DRF's dispatch
    # (and count the same metrics); every other request passes with one comparison (core/api/hotlane.py).
    "core.api.hotlane.HotLaneMiddleware",
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "core.infra.middleware.RequestIdMiddleware",
    "core.infra.middleware.ApiEdgeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "config.urls"
# The console signs in through the admin's login page and lands on the fleet.
LOGIN_URL = "admin:login"
LOGIN_REDIRECT_URL = "console:fleet"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "console.access.context",
            ],
        },
    },
]

_db = dj_database_url.parse(ENV.database_url, conn_max_age=ENV.DATABASE_CONN_MAX_AGE)
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and a busy timeout let the web, worker and beat processes of the embedded mode share one file.
    _db["CONN_MAX_AGE"] = 0
    _db["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif _db["ENGINE"] == "django.db.backends.postgresql":
    _db["ENGINE"] = "django_prometheus.db.backends.postgresql"
    _db["CONN_HEALTH_CHECKS"] = True
    # An unreachable database host must not hold a request (or the intake's drain) for minutes: fail in 3 s,
    # answer 503 with Retry-After, and let the caller come back.
    _db.setdefault("OPTIONS", {}).setdefault("connect_timeout", 3)
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
# whitenoise serves the admin's static files from gunicorn; in the embedded mode straight from the apps, so
# that no collectstatic step is needed.
WHITENOISE_USE_FINDERS = ENV.embedded

# Bodies over the limit get a 413 from ApiEdgeMiddleware before anything is parsed.
API_MAX_BODY_BYTES = ENV.API_MAX_BODY_BYTES
DATA_UPLOAD_MAX_MEMORY_SIZE = ENV.API_MAX_BODY_BYTES
# A checkpoint's body carries a state of up to CHECKPOINT_MAX_BYTES as canonical JSON; the same state as a
# client sends it may be up to twice that (escaped non-ASCII, spaces), plus the envelope (progress, step, ...).
CHECKPOINT_MAX_BODY_BYTES = 2 * ENV.CHECKPOINT_MAX_BYTES + 65_536

if REBOUND_MODE == "production":
    # Behind TLS the cookies must be secure; SECURE_COOKIES=false is for trying docker-compose on plain http.
    SESSION_COOKIE_SECURE = ENV.SECURE_COOKIES
    CSRF_COOKIE_SECURE = ENV.SECURE_COOKIES
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "core.access.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["core.access.permissions.IsAuthenticatedPrincipal"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": ["core.api.parsers.StrictJSONParser"],
    "DEFAULT_PAGINATION_CLASS": "core.api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "core.api.exceptions.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Rebound API",
    "DESCRIPTION": (
        "The resilience control plane for fleets of AI agents. Agents authenticate with "
        "`Authorization: Bearer <key>`; operators with their admin session."
    ),
    "VERSION": "1.0.0",
    "OAS_VERSION": "3.1.0",
    # The Swagger UI's files ship in a package: /api/docs/ works with no route to a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "ErrorKindEnum": "recovery.errors.taxonomy.ErrorKind",
        "ServiceKindEnum": "recovery.breakers.models.Service.Kind",
    },
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    # Every operation documents the errors every API view can answer (core/api/openapi_hooks.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "core.api.openapi_hooks.document_errors",
    ],
}

# --- Celery -------------------------------------------------------------------------------------------
CELERY_BROKER_URL = ENV.broker_url
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = DATA_DIR / "broker"
    for sub in ("out", "processed", "control"):
        (_broker_dir / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "processed_folder": str(_broker_dir / "processed"),
        # Broadcast (control) messages: kombu's default is ./control, in whatever directory the process started.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The healing action restart_worker_pool broadcasts pool_restart, which workers refuse unless this is on.
CELERY_WORKER_POOL_RESTARTS = True
# django-celery-beat's scheduler, sending each entry only when its tick is claimed in the database, so that two
# beat processes at once never send the same tick twice (core/schedule/, docs/operations.md).
CELERY_BEAT_SCHEDULER = "core.schedule.beat:ClaimingScheduler"
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULE = {
    # Transactions: open ones past their deadline are rolled back; stalled rollbacks are driven again.
    "rollback-overdue-transactions": {
        "task": "recovery.saga_tasks.rollback_overdue_transactions",
        "schedule": timedelta(seconds=15),
    },
    "resume-stuck-rollbacks": {
        "task": "recovery.saga_tasks.resume_stuck_rollbacks",
        "schedule": timedelta(seconds=60),
    },
    # Degradation levels from the breakers and errors, and the expiry of operators' forced levels.
    "evaluate-degradation": {
        "task": "recovery.degradation_tasks.evaluate_degradation",
        "schedule": timedelta(seconds=10),
    },
    "prune-error-events": {
        "task": "recovery.tasks.prune_error_events",
        "schedule": timedelta(hours=1),
    },
    "drain-error-intake": {
        "task": "recovery.tasks.drain_error_intake",
        "schedule": timedelta(seconds=5),
    },
    "expire-breaker-overrides": {
        "task": "recovery.tasks.expire_breaker_overrides",
        "schedule": timedelta(seconds=30),
    },
    # recovery_success_rate over the last hour, also refreshed when plan results arrive.
    "refresh-recovery-success-rate": {
        "task": "recovery.tasks.refresh_recovery_success_rate",
        "schedule": timedelta(seconds=30),
    },
    "requeue-overdue-retries": {
        "task": "recovery.retry_tasks.requeue_overdue_retries",
        "schedule": timedelta(seconds=30),
    },
    # Checkpoints: retention in bounded batches, and running tasks that went quiet marked stale.
    "enforce-checkpoint-retention": {
        "task": "recovery.checkpoint_tasks.enforce_checkpoint_retention",
        "schedule": timedelta(minutes=10),
    },
    "mark-stale-tasks": {
        "task": "recovery.checkpoint_tasks.mark_stale_tasks",
        "schedule": timedelta(seconds=60),
    },
    # Health checks: claim the due ones every second (each due run exactly once), and purge old results.
    "dispatch-health-checks": {
        "task": "healing.checks.tasks.dispatch_due_checks",
        "schedule": timedelta(seconds=1),
    },
    "purge-health-check-results": {
        "task": "healing.checks.tasks.purge_check_results",
        "schedule": timedelta(hours=1),
    },
    # Healing runs: expire unanswered approvals, settle verifications, reap runs whose worker died.
    "maintain-healing-runs": {
        "task": "healing.actions.tasks.maintain_runs",
        "schedule": timedelta(seconds=5),
    },
    # Escalations: snoozed ones wake, unacknowledged ones climb the policy's steps; the time-based triggers
    # (breakers open too long) and the auto-resolves that need a look at the clock (rates back under).
    "apply-escalation-policy": {
        "task": "healing.escalations.tasks.apply_escalation_policy",
        "schedule": timedelta(seconds=30),
    },
    "sweep-escalation-triggers": {
        "task": "healing.escalations.tasks.sweep_triggers",
        "schedule": timedelta(seconds=30),
    },
    # Notifications: deliveries whose retry is due, or whose task was lost, go to a new task.
    "retry-due-notifications": {
        "task": "healing.notifications.tasks.retry_due_deliveries",
        "schedule": timedelta(seconds=10),
    },
    # Remediation rules over the events they have not seen yet (also enqueued when an event happens).
    "evaluate-remediation-rules": {
        "task": "healing.remediation.tasks.evaluate_rules",
        "schedule": timedelta(seconds=15),
    },
}

# --- Caches and Redis ---------------------------------------------------------------------------------
REDIS_URL = ENV.REDIS_URL
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Rebound ------------------------------------------------------------------------------------------
REBOUND: dict[str, Any] = {
    "REBOUND_API_KEY": ENV.REBOUND_API_KEY,
    "MCP_HOST": ENV.MCP_HOST,
    "MCP_PORT": ENV.MCP_PORT,
    "MCP_PUBLIC_URL": ENV.MCP_PUBLIC_URL,
    "OTEL_EXPORTER_OTLP_ENDPOINT": ENV.OTEL_EXPORTER_OTLP_ENDPOINT,
    "OTEL_SERVICE_NAME": ENV.OTEL_SERVICE_NAME,
    "HEALTH_RESULT_RETENTION_DAYS": ENV.HEALTH_RESULT_RETENTION_DAYS,
    "HEALTH_DISPATCH_BATCH": ENV.HEALTH_DISPATCH_BATCH,
    "HEALING_APPROVAL_TIMEOUT_SECONDS": ENV.HEALING_APPROVAL_TIMEOUT_SECONDS,
    "HEALING_REAPER_GRACE_SECONDS": ENV.HEALING_REAPER_GRACE_SECONDS,
    "HEALING_HOLD_AFTER_FAILED_VERIFICATIONS": ENV.HEALING_HOLD_AFTER_FAILED_VERIFICATIONS,
    "ESCALATION_REOPEN_WINDOW_SECONDS": ENV.ESCALATION_REOPEN_WINDOW_SECONDS,
    "NOTIFICATION_MAX_ATTEMPTS": ENV.NOTIFICATION_MAX_ATTEMPTS,
    "NOTIFICATION_RETRY_BASE_SECONDS": ENV.NOTIFICATION_RETRY_BASE_SECONDS,
    "NOTIFICATION_TIMEOUT_SECONDS": ENV.NOTIFICATION_TIMEOUT_SECONDS,
    "API_KEY_CACHE_SECONDS": ENV.API_KEY_CACHE_SECONDS,
    "RULES_CACHE_SECONDS": ENV.RULES_CACHE_SECONDS,
    "ERRORS_BATCH_MAX": ENV.ERRORS_BATCH_MAX,
    "API_MAX_JSON_DEPTH": ENV.API_MAX_JSON_DEPTH,
    "API_KEY_STALE_GRACE_SECONDS": ENV.API_KEY_STALE_GRACE_SECONDS,
    "MAX_RETRY_AFTER_S": ENV.MAX_RETRY_AFTER_S,
    "IDEMPOTENCY_KEY_TTL_SECONDS": ENV.IDEMPOTENCY_KEY_TTL_SECONDS,
    "INTAKE_REQUIRE_DURABLE_REDIS": ENV.INTAKE_REQUIRE_DURABLE_REDIS,
    "INTAKE_DEAD_LETTER_MAX": ENV.INTAKE_DEAD_LETTER_MAX,
    "RETRY_ATTEMPT_LEASE_SECONDS": ENV.RETRY_ATTEMPT_LEASE_SECONDS,
    "ERROR_EVENT_RETENTION_DAYS": ENV.ERROR_EVENT_RETENTION_DAYS,
    "AUTO_REGISTER_SERVICES": ENV.AUTO_REGISTER_SERVICES,
    "BREAKER_CONFIG_CACHE_SECONDS": ENV.BREAKER_CONFIG_CACHE_SECONDS,
    "BREAKER_TRIAL_PERMIT_TTL_SECONDS": ENV.BREAKER_TRIAL_PERMIT_TTL_SECONDS,
    "BREAKER_FAIL_MODE_ESSENTIAL": ENV.BREAKER_FAIL_MODE_ESSENTIAL,
    "BREAKER_FAIL_MODE_NON_CRITICAL": ENV.BREAKER_FAIL_MODE_NON_CRITICAL,
    "BREAKER_EVENTS_MAX_WAIT_SECONDS": ENV.BREAKER_EVENTS_MAX_WAIT_SECONDS,
    "OUTCOMES_BATCH_MAX": ENV.OUTCOMES_BATCH_MAX,
    "INTAKE_MODE": ENV.INTAKE_MODE,
    "RESULT_CACHE_TTL_SECONDS": ENV.RESULT_CACHE_TTL_SECONDS,
    "RESULT_CACHE_MAX_BYTES": ENV.RESULT_CACHE_MAX_BYTES,
    "DEGRADATION_RECOVERY_SECONDS": ENV.DEGRADATION_RECOVERY_SECONDS,
    "BREAKER_STREAM_MAX_SECONDS": ENV.BREAKER_STREAM_MAX_SECONDS,
    "OUTBOUND_ALLOWED_HOSTS": ENV.outbound_allowed_hosts,
    "OUTBOUND_MAX_TIMEOUT_SECONDS": ENV.OUTBOUND_MAX_TIMEOUT_SECONDS,
    "OUTBOUND_MAX_RESPONSE_BYTES": ENV.OUTBOUND_MAX_RESPONSE_BYTES,
    "REGISTERED_TASKS": ENV.registered_tasks,
    "RETRY_REQUEUE_AFTER_SECONDS": ENV.RETRY_REQUEUE_AFTER_SECONDS,
    "RETRY_JOB_MAX_SECONDS": ENV.RETRY_JOB_MAX_SECONDS,
    "CHECKPOINT_MAX_BYTES": ENV.CHECKPOINT_MAX_BYTES,
    "CHECKPOINT_KEEP_AFTER_SUCCESS": ENV.CHECKPOINT_KEEP_AFTER_SUCCESS,
    "CHECKPOINT_KEEP_FAILED_DAYS": ENV.CHECKPOINT_KEEP_FAILED_DAYS,
    "CHECKPOINT_MAX_AGE_DAYS": ENV.CHECKPOINT_MAX_AGE_DAYS,
    "TASK_STALE_SECONDS": ENV.TASK_STALE_SECONDS,
    "SAGA_MAX_DEADLINE_SECONDS": ENV.SAGA_MAX_DEADLINE_SECONDS,
    "SAGA_ATTEMPT_LEASE_SECONDS": ENV.SAGA_ATTEMPT_LEASE_SECONDS,
    "SAGA_STALE_SECONDS": ENV.SAGA_STALE_SECONDS,
    "LEARNING_HALF_LIFE_DAYS": ENV.LEARNING_HALF_LIFE_DAYS,
    "LEARNING_MIN_TRIES": ENV.LEARNING_MIN_TRIES,
    "LEARNING_CACHE_SECONDS": ENV.LEARNING_CACHE_SECONDS,
}

# --- Logging: JSON lines with the request id, in web and Celery processes alike --------------------------
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "core.infra.request_ids.RequestIdFilter"}},
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["request_id"],
            "formatter": ENV.LOG_FORMAT,
        }
    },
    "root": {"handlers": ["console"], "level": ENV.LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "celery": {"level": ENV.LOG_LEVEL},
    },
}

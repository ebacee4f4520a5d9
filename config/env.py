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

    # Error intake: "buffered" queues reports in Redis and a worker writes them to PostgreSQL; "sync" writes in
    # the request; "auto" buffers when Redis and PostgreSQL are both configured.
    INTAKE_MODE: Literal["auto", "buffered", "sync"] = "auto"

    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    LOG_FORMAT: Literal["json", "text"] = "json"
    PROMETHEUS_MULTIPROC_DIR: str = ""

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

"""Test settings: the real PostgreSQL and Redis when they answer, SQLite otherwise.

CI sets REBOUND_REQUIRE_SERVICES=1, which turns an unreachable PostgreSQL or Redis into an error instead of
skipped tests, so that a green CI run always means the whole suite ran against the real servers.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import dj_database_url

from config.settings.base import *  # noqa: F403
from config.settings.base import DATA_DIR

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/rebound")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE_SERVICES = os.environ.get("REBOUND_REQUIRE_SERVICES", "") in ("1", "true", "yes")


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 0), timeout=1):
            return True
    except OSError:
        return False


POSTGRES_AVAILABLE = _reachable(TEST_DATABASE_URL)
REDIS_AVAILABLE = _reachable(TEST_REDIS_URL)
if REQUIRE_SERVICES and not (POSTGRES_AVAILABLE and REDIS_AVAILABLE):
    raise RuntimeError(
        f"REBOUND_REQUIRE_SERVICES is set but PostgreSQL ({TEST_DATABASE_URL}: {POSTGRES_AVAILABLE}) "
        f"or Redis ({TEST_REDIS_URL}: {REDIS_AVAILABLE}) is not reachable"
    )

if POSTGRES_AVAILABLE:
    _db = dj_database_url.parse(TEST_DATABASE_URL)
    _db["ENGINE"] = "django_prometheus.db.backends.postgresql"
else:
    _db = dj_database_url.parse(f"sqlite:///{DATA_DIR / 'test.sqlite3'}")
DATABASES = {"default": _db}
REDIS_URL = TEST_REDIS_URL if REDIS_AVAILABLE else ""
if REDIS_AVAILABLE:
    # Tasks the suite enqueues go where the real worker processes of the suite listen.
    CELERY_BROKER_URL = TEST_REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}

# Synchronous intake unless a test asks for the buffer: most tests read rows right after writing them.
REBOUND = {**REBOUND, "INTAKE_MODE": "sync"}  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CELERY_TASK_ALWAYS_EAGER = False
LOGGING["root"]["level"] = "WARNING"  # type: ignore[index]  # noqa: F405

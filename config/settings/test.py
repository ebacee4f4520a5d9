"""Test settings: the real PostgreSQL and Redis when they answer, SQLite otherwise.

CI sets REBOUND_REQUIRE_SERVICES=1, which turns an unreachable PostgreSQL or Redis into an error instead of
skipped tests, so that a green CI run always means the whole suite ran against the real servers.

Each run has its own PostgreSQL database and its own Redis database, so that two runs at once on the same
servers never drop or flush each other's data:

- PostgreSQL: the test database is `test_<name of TEST_DATABASE_URL>_<run id>` (pytest-django creates it and
  drops it at the end of the run unless --reuse-db). The run id is REBOUND_TEST_RUN_ID when set (set it to
  reuse a database with --reuse-db), else `p<pid>`.
- Redis: a test run (pytest sets PYTEST_VERSION) claims one database atomically (a Lua script: SET NX of a
  claim key, with a TTL that every test's flush renews), first the one of TEST_REDIS_URL, else the first free one of REBOUND_TEST_REDIS_DBS
  (default 15 down to 8; "free" means unclaimed and either empty or marked as a test database by an earlier
  run). tests/conftest.py flushes it keeping the claim, and releases it at the end of the run.

Both choices go into the environment (REBOUND_TEST_RUN_ID, REBOUND_TEST_REDIS_DB), so that a child process
that loads these settings again uses the same database instead of claiming another one. The worker and
gunicorn processes the tests start get DATABASE_URL and REDIS_URL of this run (tests/support/processes.py).
"""

from __future__ import annotations

import os
import socket
import time
from urllib.parse import urlparse, urlunparse

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


RUN_ID = os.environ.setdefault("REBOUND_TEST_RUN_ID", f"p{os.getpid()}")
# Under `pytest -n` (make test-fast) each xdist worker is a run of its own on Redis: it claims its own db,
# while pytest-django already gives it its own PostgreSQL database (the name ends in _gw0, _gw1, ...).
CLAIM_ID = (
    f"{RUN_ID}-{os.environ['PYTEST_XDIST_WORKER']}" if os.environ.get("PYTEST_XDIST_WORKER") else RUN_ID
)

# The Redis claim: a key in the claimed database itself, kept by every flush of the suite (flush_test_redis).
REDIS_CLAIM_KEY = "rebound:test-run:claim"
REDIS_MARKER_KEY = "rebound:test-run:db"  # "a test run used this database": flushing it loses nothing
REDIS_CLAIM_TTL = 600  # renewed by every test's flush; a killed run's claim lapses after 10 minutes
_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
if ARGV[3] == '1' and not holder and redis.call('DBSIZE') > 0 and redis.call('EXISTS', KEYS[2]) == 0 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
redis.call('SET', KEYS[2], '1')
return 1
"""
# Flush the claimed database but keep the claim (renewed) and the marker, in one atomic step.
FLUSH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] and redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.error_reply('this Redis database is claimed by another test run')
end
redis.call('FLUSHDB')
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
redis.call('SET', KEYS[2], '1')
return 1
"""


def _with_db(url: str, db: int) -> str:
    return urlunparse(urlparse(url)._replace(path=f"/{db}"))


def _claim_redis_db(url: str) -> str:
    """TEST_REDIS_URL with the database this run claimed (see the module's docstring)."""
    import redis

    inherited = os.environ.get("REBOUND_TEST_REDIS_DB")
    if inherited and os.environ.get("REBOUND_TEST_REDIS_OWNER") == CLAIM_ID:
        return _with_db(url, int(inherited))
    if not os.environ.get("PYTEST_VERSION"):
        # Not a test run (a management command or a tool importing these settings): no claim, which only a
        # test run releases; the database of TEST_REDIS_URL as it is.
        return url
    configured = int((urlparse(url).path or "/0").strip("/") or 0)
    pool = [
        int(db) for db in os.environ.get("REBOUND_TEST_REDIS_DBS", "15,14,13,12,11,10,9,8").split(",") if db
    ]
    candidates = [configured] + [db for db in pool if db != configured]
    deadline = time.monotonic() + 60
    while True:
        for db in candidates:
            client = redis.Redis.from_url(_with_db(url, db))
            try:
                claimed = client.eval(
                    _CLAIM,
                    2,
                    REDIS_CLAIM_KEY,
                    REDIS_MARKER_KEY,
                    CLAIM_ID,
                    str(REDIS_CLAIM_TTL),
                    "0" if db == configured else "1",
                )
            except redis.ResponseError:  # a database number the server does not have
                continue
            finally:
                client.close()
            if claimed:
                os.environ["REBOUND_TEST_REDIS_DB"] = str(db)
                os.environ["REBOUND_TEST_REDIS_OWNER"] = CLAIM_ID
                return _with_db(url, db)
        if time.monotonic() > deadline:
            raise RuntimeError(f"no free Redis database for the tests among {candidates} (all claimed)")
        time.sleep(1)


POSTGRES_AVAILABLE = _reachable(TEST_DATABASE_URL)
REDIS_AVAILABLE = _reachable(TEST_REDIS_URL)
if REDIS_AVAILABLE:
    TEST_REDIS_URL = _claim_redis_db(TEST_REDIS_URL)
if REQUIRE_SERVICES and not (POSTGRES_AVAILABLE and REDIS_AVAILABLE):
    raise RuntimeError(
        f"REBOUND_REQUIRE_SERVICES is set but PostgreSQL ({TEST_DATABASE_URL}: {POSTGRES_AVAILABLE}) "
        f"or Redis ({TEST_REDIS_URL}: {REDIS_AVAILABLE}) is not reachable"
    )

if POSTGRES_AVAILABLE:
    _db = dj_database_url.parse(TEST_DATABASE_URL)
    _db["ENGINE"] = "django_prometheus.db.backends.postgresql"
    _db["TEST"] = {"NAME": f"test_{_db['NAME']}_{RUN_ID}"[:63]}
    # A throwaway database: commits of this process (the migrations, transactional tests) need not wait for
    # the disk. Only this process's sessions; the worker and gunicorn processes keep the server's default.
    _db.setdefault("OPTIONS", {})["options"] = "-c synchronous_commit=off"
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
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
# The machine's Redis keeps nothing on disk; the suite's buffered-intake tests run on it all the same. The tests
# of the durability check turn this back on.
REBOUND["INTAKE_REQUIRE_DURABLE_REDIS"] = False

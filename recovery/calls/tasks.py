"""Registered tasks that are always there: for trying server-side retries (the demo) and for the test suite.

`flaky` fails a chosen number of times, then succeeds. Its count lives where every process of the deployment
sees it, under a key the caller chooses: in Redis, or without Redis (the embedded mode) in a file under
DATA_DIR, locked while it is counted. Never in a per-process cache: the web process, each worker process and a
test would each count their own calls and disagree (the embedded mode's worker runs two processes).
"""

from __future__ import annotations

import fcntl
import hashlib
import time
from pathlib import Path
from typing import Any

from celery import shared_task
from django.conf import settings

from core.infra import redisconn

FLAKY_KEY_PREFIX = "rebound:demo:flaky:"
FLAKY_TTL_S = 3600  # a count no call touched for this long starts again from zero, in Redis as in a file
DEMO_FOLDER = "demo"  # under DATA_DIR
# The errors `flaky` can raise, by the name the caller gives: each classifies differently.
ERRORS: dict[str, type[Exception]] = {
    "ConnectionError": ConnectionError,
    "TimeoutError": TimeoutError,
    "ValueError": ValueError,
    "PermissionError": PermissionError,
    "RuntimeError": RuntimeError,
}


@shared_task(name="recovery.demo_tasks.echo", idempotent=True)  # no side effect: safe to run twice
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Answers its arguments."""
    return {"args": list(args), "kwargs": kwargs}


def _count(key: str) -> int:
    full = FLAKY_KEY_PREFIX + key
    if settings.REDIS_URL:
        client = redisconn.client()
        pipe = client.pipeline()
        pipe.incr(full)
        pipe.expire(full, FLAKY_TTL_S)
        return int(pipe.execute()[0])
    return _count_in_file(_count_file(key))


def _count_file(key: str) -> Path:
    # Hashed: the key is the caller's text, of any length and any characters.
    return Path(settings.DATA_DIR) / DEMO_FOLDER / f"flaky-{hashlib.sha256(key.encode()).hexdigest()}"


def _read(text: str) -> int:
    """The count a file holds ("<count> <unix time of the last call>"), 0 once it is over an hour old."""
    parts = text.split()
    if len(parts) != 2:
        return 0
    count, at = int(parts[0]), float(parts[1])
    return count if time.time() - at <= FLAKY_TTL_S else 0


def _count_in_file(path: Path) -> int:
    """Add one to the count in this file, under an exclusive lock: processes that count at once each get
    their own number."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+", encoding="ascii") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        handle.seek(0)
        count = _read(handle.read()) + 1
        handle.seek(0)
        handle.truncate()
        handle.write(f"{count} {time.time()}")
    return count


@shared_task(name="recovery.demo_tasks.flaky")
def flaky(key: str, failures: int = 1, error: str = "ConnectionError", value: Any = None) -> dict[str, Any]:
    """Raise `error` on the first `failures` calls with this key, then answer `{"call": n, "value": value}`."""
    if error not in ERRORS:
        raise ValueError(f"error must be one of {', '.join(ERRORS)}")
    call = _count(str(key))
    if call <= int(failures):
        raise ERRORS[error](f"flaky {key!r}: failing call {call} of {failures}")
    return {"call": call, "value": value}


def flaky_calls(key: str) -> int:
    """How many times `flaky` ran with this key (within the last hour of calls)."""
    full = FLAKY_KEY_PREFIX + key
    if settings.REDIS_URL:
        stored: Any = redisconn.client().get(full)
        return int(stored or 0)
    path = _count_file(key)
    if not path.exists():
        return 0
    with path.open(encoding="ascii") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)
        return _read(handle.read())

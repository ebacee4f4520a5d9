"""Registered tasks that are always there: for trying server-side retries (the demo) and for the test suite.

`flaky` fails a chosen number of times, then succeeds. Its count lives in Redis (in the Django cache without
Redis, as in the embedded mode) under a key the caller chooses, so every attempt, in whichever worker process,
sees the same count.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings
from django.core.cache import cache

from core.infra import redisconn

FLAKY_KEY_PREFIX = "rebound:demo:flaky:"
FLAKY_TTL_S = 3600
# The errors `flaky` can raise, by the name the caller gives: each classifies differently.
ERRORS: dict[str, type[Exception]] = {
    "ConnectionError": ConnectionError,
    "TimeoutError": TimeoutError,
    "ValueError": ValueError,
    "PermissionError": PermissionError,
    "RuntimeError": RuntimeError,
}


@shared_task(name="recovery.demo_tasks.echo")
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
    cache.add(full, 0, FLAKY_TTL_S)
    return int(cache.incr(full))


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
    """How many times `flaky` ran with this key."""
    full = FLAKY_KEY_PREFIX + key
    if settings.REDIS_URL:
        stored: Any = redisconn.client().get(full)
        return int(stored or 0)
    return int(cache.get(full) or 0)

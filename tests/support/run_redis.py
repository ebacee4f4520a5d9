"""This run's Redis database (claimed in config/settings/test.py): flushed before each test keeping the claim,
released at the end of the run, so that two runs at once never flush each other's data."""

from __future__ import annotations

import functools

import redis
from django.conf import settings
from redis.commands.core import Script

_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('FLUSHDB')
redis.call('SET', KEYS[2], '1')
return 1
"""


@functools.cache
def _client() -> redis.Redis:
    # One client (and so one kept connection) for the whole run: every test flushes, and a new connection per
    # test was most of the flush's cost.
    return redis.Redis.from_url(settings.TEST_REDIS_URL)


@functools.cache
def _flush_script() -> Script:
    # Sent once, then called by its SHA (EVALSHA; loaded again by redis-py if the server forgot it).
    return _client().register_script(settings.FLUSH)


def flush() -> None:
    """Empty this run's database, keeping (and renewing) the run's claim on it."""
    _flush_script()(
        keys=[settings.REDIS_CLAIM_KEY, settings.REDIS_MARKER_KEY],
        args=[settings.CLAIM_ID, settings.REDIS_CLAIM_TTL],
    )


def release() -> None:
    """Empty this run's database and give it back (if the claim is still this run's)."""
    client = _client()
    client.eval(_RELEASE, 2, settings.REDIS_CLAIM_KEY, settings.REDIS_MARKER_KEY, settings.CLAIM_ID)
    client.close()

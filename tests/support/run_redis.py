"""This run's Redis database (claimed in config/settings/test.py): flushed before each test keeping the claim,
released at the end of the run, so that two runs at once never flush each other's data."""

from __future__ import annotations

import redis
from django.conf import settings

_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('FLUSHDB')
redis.call('SET', KEYS[2], '1')
return 1
"""


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.TEST_REDIS_URL)


def flush() -> None:
    """Empty this run's database, keeping (and renewing) the run's claim on it."""
    with _client() as client:
        client.eval(
            settings.FLUSH,
            2,
            settings.REDIS_CLAIM_KEY,
            settings.REDIS_MARKER_KEY,
            settings.CLAIM_ID,
            settings.REDIS_CLAIM_TTL,
        )


def release() -> None:
    """Empty this run's database and give it back (if the claim is still this run's)."""
    with _client() as client:
        client.eval(_RELEASE, 2, settings.REDIS_CLAIM_KEY, settings.REDIS_MARKER_KEY, settings.CLAIM_ID)

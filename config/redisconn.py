"""The Redis client every part of Rebound uses: one connection pool per process."""

from __future__ import annotations

from functools import lru_cache

import redis
from django.conf import settings


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    # Short timeouts: when Redis is gone the API must still answer quickly (with the documented fallbacks).
    return redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=30)


def client() -> redis.Redis:
    return _client(settings.REDIS_URL)

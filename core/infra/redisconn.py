"""The Redis client every part of Rebound uses: one connection pool per process."""

from __future__ import annotations

import hashlib
import os
import threading
from functools import lru_cache
from typing import Any

import redis
from django.conf import settings


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    # Short timeouts: when Redis is gone the API must still answer quickly (with the documented fallbacks).
    return redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=30)


def client() -> redis.Redis:
    return _client(settings.REDIS_URL)


class Scripts:
    """EVALSHA on a connection each thread keeps for itself.

    On the hot path (a permit, an error report) redis-py's pool checkout, retry wrapper and reply callbacks cost
    as much client CPU as Redis spends running the script; a held connection and the bare send and read halve
    that. A lost connection is reopened once, and a script Redis has forgotten (a restart) is loaded again.
    """

    def __init__(self, redis_client: redis.Redis) -> None:
        self.client = redis_client
        self.local = threading.local()
        self.shas: dict[str, str] = {}

    def run(self, source: str, keys: list[str], args: list[Any]) -> Any:
        sha = self.shas.get(source) or self.shas.setdefault(source, hashlib.sha1(source.encode()).hexdigest())
        for attempt in range(3):
            connection = self._connection()
            try:
                connection.send_command("EVALSHA", sha, len(keys), *keys, *args)
                return connection.read_response()
            except redis.exceptions.NoScriptError:
                self.client.script_load(source)
            except (redis.ConnectionError, redis.TimeoutError):
                connection.disconnect()
                self.local.connection = None
                if attempt == 2:
                    raise
        raise redis.ConnectionError("the script could not be run")

    def _connection(self) -> Any:
        connection = getattr(self.local, "connection", None)
        if connection is None or getattr(self.local, "pid", None) != os.getpid():
            # A fresh connection after a fork: a socket shared with the parent would mix replies.
            connection = self.client.connection_pool.make_connection()
            self.local.connection, self.local.pid = connection, os.getpid()
        return connection


@lru_cache(maxsize=4)
def _scripts(url: str) -> Scripts:
    return Scripts(_client(url))


def scripts() -> Scripts:
    return _scripts(settings.REDIS_URL)

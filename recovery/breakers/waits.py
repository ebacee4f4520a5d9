"""Waiting for breaker transitions: the table is the record (ordered by id, nothing lost), Redis pub/sub only
wakes the waiter early; without Redis the waiter polls the table."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator

import redis
from django.conf import settings
from redis.client import PubSub

from core.infra import redisconn
from recovery.breakers import selectors
from recovery.breakers.models import BreakerTransition
from recovery.breakers.schemas import TransitionOut
from recovery.breakers.services import CHANNEL

POLL_SECONDS = 0.25


class _Waker:
    """Something to block on until a transition may have been written."""

    def __init__(self) -> None:
        self.pubsub: PubSub | None = None
        if settings.REDIS_URL:
            try:
                self.pubsub = redisconn.client().pubsub(ignore_subscribe_messages=True)
                self.pubsub.subscribe(CHANNEL)
            except redis.RedisError:
                self.pubsub = None

    def wait(self, seconds: float) -> None:
        if self.pubsub is None:
            time.sleep(min(seconds, POLL_SECONDS))
            return
        try:
            self.pubsub.get_message(timeout=max(0.0, seconds))
        except redis.RedisError:
            self.pubsub = None
            time.sleep(min(seconds, POLL_SECONDS))

    def close(self) -> None:
        if self.pubsub is not None:
            with contextlib.suppress(redis.RedisError):
                self.pubsub.close()


def wait_for(after_id: int, wait_seconds: float) -> list[BreakerTransition]:
    """Transitions after `after_id`; if none yet, wait up to `wait_seconds` for the first."""
    rows = selectors.transitions_after(after_id)
    if rows or wait_seconds <= 0:
        return rows
    deadline = time.monotonic() + wait_seconds
    waker = _Waker()  # subscribed before the next read, so a transition in between still wakes us
    try:
        while True:
            rows = selectors.transitions_after(after_id)
            remaining = deadline - time.monotonic()
            if rows or remaining <= 0:
                return rows
            waker.wait(min(remaining, 1.0))
    finally:
        waker.close()


def stream(after_id: int, max_seconds: float, heartbeat_seconds: float = 15.0) -> Iterator[tuple[int, str]]:
    """(id, json) for every transition after `after_id` as it happens, for `max_seconds`; (0, '') as a
    heartbeat. The client reconnects with the last id it saw."""
    deadline = time.monotonic() + max_seconds
    waker = _Waker()
    last = after_id
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            rows = selectors.transitions_after(last)
            for row in rows:
                last = row.pk
                yield row.pk, json.dumps(TransitionOut.of(row).model_dump(), default=str)
            if rows:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= heartbeat_seconds:
                quiet_since = time.monotonic()
                yield 0, ""
            waker.wait(min(1.0, max(0.0, deadline - time.monotonic())))
    finally:
        waker.close()

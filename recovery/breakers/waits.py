"""Waiting for breaker transitions: the table is the record (ordered by id, nothing lost), Redis pub/sub only
brings them early; without Redis the waiter polls the table.

One subscription per process (`Fanout`, a daemon thread) hears every published transition, reads the table once
for the whole process, and wakes the threads waiting in long-polls and streams. Every SDK client of the fleet
holds a long-poll, and when a breaker trips they are all woken at once: a table read per waiter would be a
hundred identical queries at the worst moment. A woken long-poll answers from the rows the subscriber read when
they follow its cursor without a gap (ids after+1, after+2, ...); anything else (a cursor behind what this
process read, a gap in the ids, a subscription lost and taken again) reads the table itself. A long-poll whose
cursor is at the newest id the subscriber read waits without reading the table, and reads it once before it
answers empty, so a transition whose message was lost is still found by the end of the wait.

The messages are only wake-ups, never the answer: Redis pub/sub channels are the whole server's, not one
database's, so another Rebound on the same Redis (a test run, a benchmark) is heard too, and costs a read that
finds nothing.

A waiting thread gives its database connection back before it blocks: every SDK client holds a long-poll, and a
connection per held poll would take PostgreSQL's connection limit with a hundred agents.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.db import connection

from core.infra import caches, redisconn
from recovery.breakers import selectors
from recovery.breakers.schemas import TransitionOut
from recovery.breakers.services import CHANNEL

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25  # how often a waiter reads the table while there is no subscription
HEARD = 1000  # the transitions a process keeps from the messages it heard: more than any burst of trips
RETRY_SECONDS = 1.0  # the wait before subscribing again after Redis failed
LIMIT = 500  # the most transitions one answer carries (as selectors.transitions_after)

Event = dict[str, Any]


@dataclass(frozen=True)
class Mark:
    """What a waiter saw of the subscription: its counter (to wait for the next change), which subscription
    (a new one after each loss), whether it is subscribed, and the newest id it heard since (None: none yet)."""

    seq: int
    epoch: int
    live: bool
    newest: int | None


class Fanout:
    """One Redis subscription for a whole process, fanning its messages out to the waiting threads.

    It keeps the rows it read, which cover the ids in (floor, newest]: from the table's last id when the
    subscription was confirmed, every read since started at or below the previous one's end. A waiter whose
    cursor is in that range has its answer here, exactly as a table read at the subscriber's last read would
    give it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heard: dict[int, Event] = {}  # the rows read, by id
        self._ids: list[int] = []  # their ids, in order
        self._seq = 0
        self._epoch = 0
        self._live = False
        self._floor = 0
        self._newest: int | None = None  # None: not subscribed
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rebound-breaker-fanout", daemon=True)
        self._thread.start()

    # --- the waiters' side -----------------------------------------------------------------------------------

    def mark(self) -> Mark:
        with self._cond:
            return Mark(self._seq, self._epoch, self._live, self._newest)

    def wait(self, seq: int, timeout: float) -> Mark:
        """Block until something changed since `seq` (a read, the subscription lost or taken) or `timeout`."""
        with self._cond:
            self._cond.wait_for(lambda: self._seq != seq, timeout=max(0.0, timeout))
            return Mark(self._seq, self._epoch, self._live, self._newest)

    def following(self, after: int) -> list[Event] | None:
        """The rows after `after` (at most LIMIT), possibly none; None when this process's rows do not cover
        `after` (not subscribed, or a cursor behind them): the table must say."""
        with self._cond:
            if self._newest is None or after < self._floor:
                return None
            start = bisect.bisect_right(self._ids, after)
            return [self._heard[i] for i in self._ids[start : start + LIMIT]]

    def stop(self) -> None:
        self._stopped.set()

    # --- the subscriber thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopped.is_set():
            pubsub = None
            try:
                pubsub = redisconn.client().pubsub()
                pubsub.subscribe(CHANNEL)
                self._listen(pubsub)
            except Exception as error:  # Redis or the database: wait, then subscribe again; waiters poll
                log.info("breaker transitions: subscription lost (%s); polling the table meanwhile", error)
            finally:
                self._set_live(None)
                if pubsub is not None:
                    with contextlib.suppress(redis.RedisError, OSError):
                        pubsub.close()
                _release_connection()
            self._stopped.wait(RETRY_SECONDS)

    def _listen(self, pubsub: Any) -> None:
        while not self._stopped.is_set():
            message = pubsub.get_message(timeout=1.0)
            if message is None:
                _release_connection()  # quiet for a second: no connection held for nothing
                continue
            if message.get("type") == "subscribe":
                # In force once Redis confirms it: every commit from now on reaches us, and the table holds
                # every one before.
                self._set_live(selectors.last_transition_id())
                continue
            ids = [_id_of(message)]
            while (more := pubsub.get_message(timeout=0)) is not None:  # a burst: one read for all of it
                ids.append(_id_of(more))
            self._read(ids)

    def _read(self, ids: list[int | None]) -> None:
        """Read the table after what this process read already (from the lowest id just announced if that is
        lower, in case it committed after a later one), and wake the waiters."""
        with self._cond:
            floor, newest = self._floor, self._newest or 0
        lowest = min((i for i in ids if i is not None), default=newest + 1)
        rows = _table(max(floor, min(newest, lowest - 1)))
        with self._cond:
            for event in rows:
                if event["id"] not in self._heard:
                    bisect.insort(self._ids, event["id"])
                self._heard[event["id"]] = event  # the table's latest word
            if len(self._ids) > HEARD:
                # Forget the oldest: the rows cover less, and a cursor below them reads the table.
                forgotten, self._ids = (
                    self._ids[: len(self._ids) - HEARD],
                    self._ids[len(self._ids) - HEARD :],
                )
                for i in forgotten:
                    del self._heard[i]
                self._floor = max(self._floor, forgotten[-1])
            if rows:
                self._newest = max(newest, rows[-1]["id"])
            self._seq += 1
            self._cond.notify_all()

    def _set_live(self, last_id: int | None) -> None:
        """Subscribed (with the table's last id then) or not (None). Either way nothing read before counts:
        what was published while unsubscribed was not heard."""
        with self._cond:
            if last_id is None and not self._live:
                return
            self._live = last_id is not None
            self._newest = last_id
            self._floor = last_id or 0
            self._heard.clear()
            self._ids.clear()
            self._seq += 1
            self._epoch += 1
            self._cond.notify_all()


def _id_of(message: dict[str, Any]) -> int | None:
    """The transition id a message announces, if it can be read (a foreign message may say anything)."""
    if message.get("type") != "message":
        return None
    try:
        event = json.loads(message.get("data") or b"")
    except (ValueError, TypeError):
        return None
    value = event.get("id") if isinstance(event, dict) else None
    return value if isinstance(value, int) else None


_fanout: Fanout | None = None
_fanout_pid = 0
_fanout_lock = threading.Lock()


def fanout() -> Fanout | None:
    """This process's subscription (started at the first wait: threads do not survive gunicorn's fork); None
    without Redis."""
    global _fanout, _fanout_pid
    if not settings.REDIS_URL:
        return None
    with _fanout_lock:
        if _fanout is None or _fanout_pid != os.getpid():
            _fanout, _fanout_pid = Fanout(), os.getpid()
        return _fanout


def forget() -> None:
    """Stop this process's subscription (tests switch Redis databases); the next wait starts another."""
    global _fanout
    with _fanout_lock:
        if _fanout is not None:
            _fanout.stop()
        _fanout = None


caches.register(forget)


def _release_connection() -> None:
    """Give the database connection back before blocking (see the module's docstring)."""
    if not connection.in_atomic_block:
        connection.close()


def _table(after: int) -> list[Event]:
    return [TransitionOut.of(row).model_dump() for row in selectors.transitions_after(after, LIMIT)]


def events(after: int, wait_seconds: float) -> dict[str, Any]:
    """The long-poll's answer: transitions after `after` (`events`, in id order) and the next cursor
    (`last_id`); if there are none yet, waits up to `wait_seconds` for the first."""
    found = _events(after, wait_seconds)
    return {"events": found, "last_id": found[-1]["id"] if found else after}


def _events(after: int, wait_seconds: float) -> list[Event]:
    fan = fanout() if wait_seconds > 0 else None
    if fan is None:
        return _polled(after, wait_seconds)
    deadline = time.monotonic() + wait_seconds
    mark = fan.mark()  # taken before anything is read, so a read in between still wakes us
    found = fan.following(after) if mark.live else None
    if found is None:
        found = _table(after)  # not covered by this process's rows: the table says
    if found:
        return found
    _release_connection()
    while (remaining := deadline - time.monotonic()) > 0:
        changed = fan.wait(mark.seq, remaining if mark.live else min(remaining, POLL_SECONDS))
        found = fan.following(after) if changed.live and changed.epoch == mark.epoch else None
        if found is None:
            found = _table(after)  # a new subscription, or none: the table says
            _release_connection()
        if found:
            return found
        mark = changed
    return _table(after)  # a transition whose announcement was lost is found here at the latest


def _polled(after: int, wait_seconds: float) -> list[Event]:
    """Without Redis (the embedded mode): read the table every POLL_SECONDS until something is there."""
    deadline = time.monotonic() + wait_seconds
    while True:
        found = _table(after)
        remaining = deadline - time.monotonic()
        if found or remaining <= 0:
            return found
        time.sleep(min(remaining, POLL_SECONDS))


def stream(after_id: int, max_seconds: float, heartbeat_seconds: float = 15.0) -> Iterator[tuple[int, str]]:
    """(id, json) for every transition after `after_id` as it happens, for `max_seconds`; (0, '') as a
    heartbeat. The client reconnects with the last id it saw."""
    deadline = time.monotonic() + max_seconds
    last = after_id
    quiet_since = time.monotonic()
    while (remaining := deadline - time.monotonic()) > 0:
        found = _events(last, min(remaining, heartbeat_seconds - (time.monotonic() - quiet_since)))
        for event in found:
            last = event["id"]
            yield last, json.dumps(event, default=str)
        if found:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= heartbeat_seconds:
            quiet_since = time.monotonic()
            yield 0, ""

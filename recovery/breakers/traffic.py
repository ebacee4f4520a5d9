"""Calls and failures per service and minute, counted from every batch of outcomes (record_outcomes): what a
service's error rate over a window is read from (the escalation trigger error_rate), and its recent history
(`series`, for sparklines). A failure is an outcome that did not succeed, whatever its error's class.

Two stores behind one interface, chosen as the retry budget's are (recovery/decisions/budget.py):
* `RedisTraffic` (production): one hash per service and minute, `rebound:traffic:{<service>}:<minute>` with
  fields `c` (calls) and `f` (failures), expiring after two hours; a batch is one pipeline (one round trip).
* `CacheTraffic` (embedded mode, no Redis): the same counters in Django's cache, so per process with the
  local-memory cache of that mode.

Counting is best effort: a store that cannot be reached loses the batch's counts (logged), never the outcomes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

import redis
from django.conf import settings
from django.core.cache import BaseCache, cache

from core.infra import redisconn

log = logging.getLogger(__name__)
Clock = Callable[[], float]
TTL_S = 2 * 3600  # the longest window anything reads, and a margin


def key(name: str, minute: int) -> str:
    # Hash-tagged by service: a cluster keeps a service's minutes on one node.
    return f"rebound:traffic:{{{name}}}:{minute}"


class TrafficStore(Protocol):
    clock: Clock

    def add(self, counts: dict[str, tuple[int, int]], minute: int) -> None: ...

    def read(self, name: str, minutes: list[int]) -> list[tuple[int, int]]: ...

    def read_many(self, names: list[str], minutes: list[int]) -> dict[str, list[tuple[int, int]]]: ...


# The minutes of one service in one call: KEYS[1] is its first minute's key, ARGV[1] that minute and ARGV[2] how
# many minutes; the script names the others the same way (one hash tag: one slot, one node of a cluster). It
# answers calls and failures per minute, flat. One call per service in one pipeline is one round trip for the
# whole fleet, where an HMGET per service and minute would be 60 commands per service to build, send and parse.
# Numbers, not the hashes' strings: the client gets integers and parses nothing (30,000 of them for 500 services).
READ_MINUTES = """
local prefix = string.sub(KEYS[1], 1, #KEYS[1] - #ARGV[1])
local first, count = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i = 0, count - 1 do
  local v = redis.call('HMGET', prefix .. (first + i), 'c', 'f')
  out[2 * i + 1] = tonumber(v[1]) or 0
  out[2 * i + 2] = tonumber(v[2]) or 0
end
return out
"""


class RedisTraffic:
    def __init__(self, client: Any = None, clock: Clock = time.time) -> None:
        self.client = client
        self.clock = clock
        # Minutes that are over, as read_many last read them, by service: a minute two minutes old no longer
        # changes (one minute of slack for a writer whose clock is behind), so the fleet page, polled every few
        # seconds, reads each service's 60 minutes from Redis once per process and then only its newest two.
        self._settled: dict[str, dict[int, tuple[int, int]]] = {}
        self._settled_lock = threading.Lock()

    def _client(self) -> redis.Redis:
        return self.client if self.client is not None else redisconn.client()

    def add(self, counts: dict[str, tuple[int, int]], minute: int) -> None:
        pipe = self._client().pipeline(transaction=False)
        for name, (calls, failures) in counts.items():
            bucket = key(name, minute)
            pipe.hincrby(bucket, "c", calls)
            if failures:
                pipe.hincrby(bucket, "f", failures)
            pipe.expire(bucket, TTL_S)
        pipe.execute()

    def read(self, name: str, minutes: list[int]) -> list[tuple[int, int]]:
        pipe = self._client().pipeline(transaction=False)
        for minute in minutes:
            pipe.hmget(key(name, minute), ["c", "f"])
        return [(int(c or 0), int(f or 0)) for c, f in pipe.execute()]

    def read_many(self, names: list[str], minutes: list[int]) -> dict[str, list[tuple[int, int]]]:
        """Every service's minutes (consecutive) in one round trip: one script call per service, in one pipeline,
        each reading only the minutes not already settled (self._settled)."""
        if not names or not minutes:
            return {name: [] for name in names}
        first, count = minutes[0], len(minutes)
        if minutes != list(range(first, first + count)):
            raise ValueError("read_many reads consecutive minutes")
        end = first + count
        with self._settled_lock:
            starts = {name: self._first_unsettled(name, first, end) for name in names}
        client = self._client()
        script = client.register_script(READ_MINUTES)
        pipe = client.pipeline(transaction=False)
        for name in names:
            start = starts[name]
            script(keys=[key(name, start)], args=[start, end - start], client=pipe)
        replies = pipe.execute()
        settled_before = _minute(self.clock()) - 1
        found: dict[str, list[tuple[int, int]]] = {}
        with self._settled_lock:
            for name, flat in zip(names, replies, strict=True):
                fresh, start = _pairs(flat), starts[name]
                known = self._settled.setdefault(name, {})
                for minute in range(start, min(end, settled_before)):
                    known[minute] = fresh[minute - start]
                found[name] = [known[m] for m in range(first, start)] + fresh
                if len(known) > 2 * count:  # forget what no window of this length reaches any more
                    for minute in [m for m in known if m < first]:
                        del known[minute]
        return found

    def _first_unsettled(self, name: str, first: int, end: int) -> int:
        known = self._settled.get(name, {})
        start = first
        while start < end and start in known:
            start += 1
        return start


class CacheTraffic:
    """The counters in Django's cache (per process in the embedded mode's local memory)."""

    def __init__(self, backend: BaseCache | None = None, clock: Clock = time.time) -> None:
        self.cache = backend if backend is not None else cache
        self.clock = clock
        self.lock = threading.Lock()

    def _incr(self, name: str, n: int) -> None:
        for _ in range(3):
            self.cache.add(name, 0, timeout=TTL_S)
            try:
                self.cache.incr(name, n)
                return
            except ValueError:
                continue  # expired between add and incr: add again

    def add(self, counts: dict[str, tuple[int, int]], minute: int) -> None:
        with self.lock:
            for name, (calls, failures) in counts.items():
                self._incr(f"{key(name, minute)}:c", calls)
                if failures:
                    self._incr(f"{key(name, minute)}:f", failures)

    def read(self, name: str, minutes: list[int]) -> list[tuple[int, int]]:
        values = self.cache.get_many([f"{key(name, m)}:{field}" for m in minutes for field in ("c", "f")])
        return [
            (int(values.get(f"{key(name, m)}:c", 0)), int(values.get(f"{key(name, m)}:f", 0)))
            for m in minutes
        ]

    def read_many(self, names: list[str], minutes: list[int]) -> dict[str, list[tuple[int, int]]]:
        """Every service's minutes in one get_many."""
        values = self.cache.get_many(
            [f"{key(name, m)}:{field}" for name in names for m in minutes for field in ("c", "f")]
        )
        return {
            name: [
                (int(values.get(f"{key(name, m)}:c", 0)), int(values.get(f"{key(name, m)}:f", 0)))
                for m in minutes
            ]
            for name in names
        }


def _pairs(flat: list[Any]) -> list[tuple[int, int]]:
    # The script answers integers: pair them without converting each.
    return list(zip(flat[0::2], flat[1::2], strict=True))


# --- The interface -----------------------------------------------------------------------------------------

_store_lock = threading.Lock()
_store: TrafficStore | None = None


def store() -> TrafficStore:
    global _store
    if _store is None:
        with _store_lock:
            if _store is None:
                _store = RedisTraffic() if settings.REDIS_URL else CacheTraffic()
    return _store


def use_store(new: TrafficStore | None) -> None:
    """Swap the store (tests: an injected clock; None: back to the one the settings say)."""
    global _store
    with _store_lock:
        _store = new


def _minute(at: float) -> int:
    return int(at // 60)


def _now(now: datetime | None) -> float:
    return now.timestamp() if now is not None else store().clock()


def count(outcomes: Iterable[tuple[str, bool]]) -> None:
    """Count a batch of outcomes, (service, failed) each, into the current minute: one round trip. Never
    raises for the store: the outcomes were counted by the breakers whatever happens here."""
    count_runs((name, failed, 1) for name, failed in outcomes)


def count_runs(runs: Iterable[tuple[str, bool, int]]) -> None:
    """`count` of runs, (service, failed, how many) each: a run of 10,000 successes costs what one does."""
    calls: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for name, failed, n in runs:
        calls[name] += n
        if failed:
            failures[name] += n
    if not calls:
        return
    try:
        current = store()
        current.add({name: (n, failures[name]) for name, n in calls.items()}, _minute(current.clock()))
    except Exception as error:  # unreachable, or anything else: counting is best effort
        log.warning("traffic store unreachable, %d outcomes not counted: %s", calls.total(), error)


def window(name: str, seconds: int, *, now: datetime | None = None) -> tuple[int, int]:
    """(calls, failures) of the service over the last `seconds`, in the whole minutes that cover them."""
    at = _now(now)
    minutes = list(range(_minute(at - seconds), _minute(at) + 1))
    rows = store().read(name, minutes)
    return sum(c for c, _ in rows), sum(f for _, f in rows)


def series(name: str, minutes: int, *, now: datetime | None = None) -> list[tuple[datetime, int, int]]:
    """The service's last `minutes` minutes (this one included), oldest first: (minute's start, calls,
    failures)."""
    last = _minute(_now(now))
    span = list(range(last - minutes + 1, last + 1))
    rows = store().read(name, span)
    return [(datetime.fromtimestamp(m * 60, tz=UTC), c, f) for m, (c, f) in zip(span, rows, strict=True)]


def counts_many(
    names: list[str], minutes: int, *, now: datetime | None = None
) -> dict[str, list[tuple[int, int]]]:
    """Many services' last `minutes` minutes (this one included), oldest first, as (calls, failures) per minute,
    in one round trip to the store: the console's fleet page. Raises what the store raises (the caller decides)."""
    last = _minute(_now(now))
    return store().read_many(list(names), list(range(last - minutes + 1, last + 1)))

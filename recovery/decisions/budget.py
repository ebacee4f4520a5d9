"""The retry budget (as Envoy has): per service, retries may be at most `retry_budget_percent` of the calls of
the last `retry_budget_window_s` seconds, with a floor of `retry_budget_min_retries` so that a quiet service can
still retry. Beyond it the planner stops retrying and falls back or fails fast, so that a fleet's retries cannot
turn a provider's bad minute into an outage.

Calls are counted from every outcome reported and every plan request (a failed call); a retry is spent when the
planner answers `retry` (and when a server-side retry runs an attempt). Both are counted in per-second buckets.

Two stores behind one interface:
* `RedisBudget` (production): one hash per service and second, `rebound:budget:{<service>}:<sec>` with fields
  `c` (calls) and `r` (retries), expiring once it is out of every window. A check sums the window's buckets and
  spends in the same Lua script, on Redis's clock: atomic for the whole fleet.
* `CacheBudget` (embedded mode, no Redis): the same buckets in Django's cache. The embedded cache is local memory,
  so each process (each gunicorn worker, each Celery worker process) keeps its own budget: the fleet may retry
  up to that many times the limit. Honest, documented, and only the demo mode.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings
from django.core.cache import BaseCache, cache

from core.infra import redisconn
from recovery.breakers.models import Service
from recovery.decisions.planner import BudgetInput

Clock = Callable[[], float]


# A check's answer is what the planner reads: allowed, retries in the window (with this one, when it was spent),
# calls in the window, the limit max(min_retries, percent% of calls), and the window.
BudgetCheck = BudgetInput


@dataclass(frozen=True)
class Limits:
    window_s: int
    percent: float
    min_retries: int

    @classmethod
    def of(cls, service: Service) -> Limits:
        return cls(
            int(service.retry_budget_window_s),
            float(service.retry_budget_percent),
            int(service.retry_budget_min_retries),
        )

    def limit(self, calls: int) -> int:
        return max(self.min_retries, math.floor(self.percent * calls / 100 + 1e-9))


class BudgetStore(Protocol):
    def record_calls(self, counts: dict[Service, int]) -> None: ...

    def check(self, service: Service, *, spend: bool) -> BudgetCheck: ...


# --- Redis -------------------------------------------------------------------------------------------------

_PRELUDE = r"""
local now = tonumber(ARGV[1])
if now == 0 then now = tonumber(redis.call('TIME')[1]) end
"""

# KEYS: one bucket prefix per service. ARGV: now (s; 0: Redis's clock), then per key: calls, window.
RECORD = (
    _PRELUDE
    + r"""
for i = 1, #KEYS do
  local bucket = KEYS[i] .. now
  redis.call('HINCRBY', bucket, 'c', tonumber(ARGV[2 * i]))
  redis.call('EXPIRE', bucket, tonumber(ARGV[2 * i + 1]) + 1)
end
return now
"""
)

# KEYS[1]: the service's bucket prefix. ARGV: now, window, percent, min_retries, spend (1/0).
# Returns {allowed, retries, calls, limit}.
CHECK = (
    _PRELUDE
    + r"""
local prefix, window = KEYS[1], tonumber(ARGV[2])
local percent, floor, spend = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5] == '1'
local calls, retries = 0, 0
for sec = now - window + 1, now do
  local b = redis.call('HMGET', prefix .. sec, 'c', 'r')
  calls = calls + tonumber(b[1] or 0)
  retries = retries + tonumber(b[2] or 0)
end
local limit = math.max(floor, math.floor(percent * calls / 100 + 1e-9))
local allowed = retries < limit
if allowed and spend then
  local bucket = prefix .. now
  redis.call('HINCRBY', bucket, 'r', 1)
  redis.call('EXPIRE', bucket, window + 1)
  retries = retries + 1
end
return {allowed and 1 or 0, retries, calls, limit}
"""
)


def bucket_prefix(name: str) -> str:
    # Hash-tagged by service: a cluster keeps a service's buckets on one node, as the script needs.
    return f"rebound:budget:{{{name}}}:"


class RedisBudget:
    """Buckets in Redis, on Redis's clock unless a clock is given (tests move time without sleeping)."""

    def __init__(self, client: Any = None, clock: Clock | None = None) -> None:
        self.scripts = redisconn.Scripts(client) if client is not None else redisconn.scripts()
        self.clock = clock

    def _now(self) -> int:
        return int(self.clock()) if self.clock else 0

    def record_calls(self, counts: dict[Service, int]) -> None:
        if not counts:
            return
        keys, args = [], [self._now()]
        for service, n in counts.items():
            keys.append(bucket_prefix(service.name))
            args += [n, Limits.of(service).window_s]
        self.scripts.run(RECORD, keys, args)

    def check(self, service: Service, *, spend: bool) -> BudgetCheck:
        limits = Limits.of(service)
        allowed, retries, calls, limit = self.scripts.run(
            CHECK,
            [bucket_prefix(service.name)],
            [self._now(), limits.window_s, limits.percent, limits.min_retries, 1 if spend else 0],
        )
        return BudgetCheck(bool(allowed), int(retries), int(calls), int(limit), limits.window_s)


# --- Django's cache (embedded mode) ------------------------------------------------------------------------


class CacheBudget:
    """Buckets in Django's cache. Check-and-spend is atomic within this process (a lock); see the module's
    docstring for what that means across processes."""

    def __init__(self, backend: BaseCache | None = None, clock: Clock = time.time) -> None:
        self.cache = backend if backend is not None else cache
        self.clock = clock
        self.lock = threading.Lock()

    @staticmethod
    def _key(name: str, sec: int, field: str) -> str:
        return f"{bucket_prefix(name)}{sec}:{field}"

    def _incr(self, key: str, n: int, window_s: int) -> None:
        for _ in range(3):
            self.cache.add(key, 0, timeout=window_s + 1)
            try:
                self.cache.incr(key, n)
                return
            except ValueError:
                continue  # expired between add and incr: add again

    def record_calls(self, counts: dict[Service, int]) -> None:
        now = int(self.clock())
        with self.lock:
            for service, n in counts.items():
                self._incr(self._key(service.name, now, "c"), n, Limits.of(service).window_s)

    def check(self, service: Service, *, spend: bool) -> BudgetCheck:
        limits = Limits.of(service)
        now = int(self.clock())
        seconds = range(now - limits.window_s + 1, now + 1)
        with self.lock:
            keys = [self._key(service.name, s, f) for s in seconds for f in ("c", "r")]
            values = self.cache.get_many(keys)
            calls = sum(int(v) for k, v in values.items() if k.endswith(":c"))
            retries = sum(int(v) for k, v in values.items() if k.endswith(":r"))
            limit = limits.limit(calls)
            allowed = retries < limit
            if allowed and spend:
                self._incr(self._key(service.name, now, "r"), 1, limits.window_s)
                retries += 1
        return BudgetCheck(allowed, retries, calls, limit, limits.window_s)


# --- The interface -----------------------------------------------------------------------------------------

_store_lock = threading.Lock()
_store: BudgetStore | None = None


def store() -> BudgetStore:
    global _store
    if _store is None:
        with _store_lock:
            if _store is None:
                _store = RedisBudget() if settings.REDIS_URL else CacheBudget()
    return _store


def use_store(new: BudgetStore | None) -> None:
    """Swap the store (tests: an injected clock; None: back to the one the settings say)."""
    global _store
    with _store_lock:
        _store = new


def record_calls(service: Service, n: int = 1) -> None:
    """Count calls of a service into its budget's window."""
    if n > 0:
        store().record_calls({service: n})


def record_calls_many(services: Iterable[Service]) -> None:
    """Count one call per item (a batch of outcomes): one round trip for the whole batch."""
    counts = Counter(services)
    if counts:
        store().record_calls(dict(counts))


def try_retry(service: Service) -> BudgetCheck:
    """Atomic check-and-spend: allowed (and counted) if the window's retries are under its limit."""
    return store().check(service, spend=True)


def peek(service: Service) -> BudgetCheck:
    """The budget now, spending nothing."""
    return store().check(service, spend=False)

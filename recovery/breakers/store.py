"""Where breaker state lives: Redis in production (Lua, one round trip per permit or outcome, one pipeline per
batch), the database in the embedded mode. Both give the same answers (tests/recovery/breakers/test_store_contract.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol, cast

import redis
from django.conf import settings
from django.db import transaction

from core.infra import redisconn
from core.infra.redisconn import Scripts
from recovery.breakers import logic
from recovery.breakers.lua import PEEK, PERMIT, RECORD_MANY
from recovery.breakers.models import BreakerState, Service

_store_lock = threading.Lock()
_store: BreakerStore | None = None


def current_store() -> BreakerStore:
    global _store
    if _store is None:
        with _store_lock:
            if _store is None:
                _store = RedisStore(redisconn.client()) if settings.REDIS_URL else DatabaseStore()
    return _store


def use_store(new: BreakerStore | None) -> None:
    """Swap the store (tests, and a process that must change it after start-up)."""
    global _store
    with _store_lock:
        _store = new


Clock = Callable[[], int]
ScriptArg = str | int | float  # what the Lua scripts take as ARGV


@dataclass(frozen=True)
class Peek:
    state: str
    opened_at: int
    open_until: int
    calls: int
    failures: int
    consecutive: int
    trials_in_use: int
    now: int


class BreakerStore(Protocol):
    def permit(self, service: Service, cfg: logic.Config, permit_id: str) -> logic.Result: ...

    def record_many(self, items: list[tuple[Service, logic.Config, logic.Outcome]]) -> list[logic.Result]: ...

    def peek(self, service: Service, cfg: logic.Config) -> Peek: ...

    def reset(self, service: Service) -> None: ...


def wall_ms() -> int:
    return int(time.time() * 1000)


class DatabaseStore:
    """The embedded store: the state dict in a row, changed under a row lock, one transaction per call."""

    def __init__(self, clock: Clock = wall_ms) -> None:
        self.clock = clock

    def _locked(self, service: Service) -> BreakerState:
        row = BreakerState.objects.select_for_update().filter(service=service).first()
        if row is None:
            BreakerState.objects.get_or_create(service=service, defaults={"data": logic.new_state()})
            row = BreakerState.objects.select_for_update().get(service=service)
        return row

    def permit(self, service: Service, cfg: logic.Config, permit_id: str) -> logic.Result:
        with transaction.atomic():
            row = self._locked(service)
            state = row.data or logic.new_state()
            result = logic.permit(state, cfg, self.clock(), permit_id)
            BreakerState.objects.filter(pk=row.pk).update(data=state)
        return result

    def record_many(self, items: list[tuple[Service, logic.Config, logic.Outcome]]) -> list[logic.Result]:
        results = []
        # Services in name order: two batches lock rows in the same order and cannot deadlock.
        order = sorted(range(len(items)), key=lambda i: items[i][0].name)
        by_index: dict[int, logic.Result] = {}
        with transaction.atomic():
            rows: dict[int, tuple[BreakerState, logic.State]] = {}
            for i in order:
                service, cfg, outcome = items[i]
                if service.pk not in rows:
                    row = self._locked(service)
                    rows[service.pk] = (row, row.data or logic.new_state())
                by_index[i] = logic.record(rows[service.pk][1], cfg, self.clock(), outcome)
            for row, state in rows.values():
                BreakerState.objects.filter(pk=row.pk).update(data=state)
        results = [by_index[i] for i in range(len(items))]
        return results

    def peek(self, service: Service, cfg: logic.Config) -> Peek:
        row = BreakerState.objects.filter(service=service).first()
        state = cast(logic.State, dict(row.data)) if row and row.data else logic.new_state()
        now = self.clock()
        calls, failures = logic.window_counts(state, cfg, now)
        trials = sum(1 for expiry in state["trials"].values() if expiry > now)
        return Peek(
            state["state"],
            state["opened_at"],
            state["open_until"],
            calls,
            failures,
            state["consecutive"],
            trials,
            now,
        )

    def reset(self, service: Service) -> None:
        BreakerState.objects.filter(service=service).delete()


class RedisStore:
    """The production store. `clock=None` uses Redis's own clock, so that every host agrees on time."""

    def __init__(
        self, client: redis.Redis, clock: Clock | None = None, prefix: str = "rebound:breaker"
    ) -> None:
        self.client = client
        self.clock = clock
        self.prefix = prefix
        self.scripts = Scripts(client)
        self._record_many = client.register_script(RECORD_MANY)
        self._peek = client.register_script(PEEK)

    def keys(self, service: Service) -> list[str]:
        tag = f"{self.prefix}:{{{service.name}}}"
        return [f"{tag}:state", f"{tag}:count", f"{tag}:time", f"{tag}:trials"]

    def _args(self, cfg: logic.Config) -> list[ScriptArg]:
        return [
            self.clock() if self.clock else 0,
            *_config_args(cfg),
        ]

    def permit(self, service: Service, cfg: logic.Config, permit_id: str) -> logic.Result:
        return _result(self.scripts.run(PERMIT, self.keys(service), [*self._args(cfg), permit_id]))

    def record_many(self, items: list[tuple[Service, logic.Config, logic.Outcome]]) -> list[logic.Result]:
        """One script call per service, in one pipeline: each applies that service's outcomes in order."""
        by_service: dict[str, list[int]] = {}
        for index, (service, _, _) in enumerate(items):
            by_service.setdefault(service.name, []).append(index)
        pipe = self.client.pipeline(transaction=False)
        for indexes in by_service.values():
            service, cfg, _ = items[indexes[0]]
            args: list[ScriptArg] = [*self._args(cfg), len(indexes)]
            for i in indexes:
                o = items[i][2]
                args += [o.permit_id, int(o.failure), int(o.ignored), o.retry_after_ms, int(o.frozen)]
            self._record_many(keys=self.keys(service), args=args, client=pipe)
        results: list[logic.Result | None] = [None] * len(items)
        for indexes, reply in zip(by_service.values(), pipe.execute(), strict=True):
            for i, result in zip(indexes, _many_results(reply), strict=True):
                results[i] = result
        return [r for r in results if r is not None]

    def peek(self, service: Service, cfg: logic.Config) -> Peek:
        reply = self._peek(
            keys=self.keys(service),
            args=[self.clock() if self.clock else 0, cfg.window_type, cfg.window_size],
        )
        state, opened_at, open_until, calls, failures, consecutive, trials, now = reply
        return Peek(
            _text(state),
            int(opened_at),
            int(open_until),
            int(calls),
            int(failures),
            int(consecutive),
            int(trials),
            int(now),
        )

    def reset(self, service: Service) -> None:
        self.client.delete(*self.keys(service))


@lru_cache(maxsize=1024)
def _config_args(cfg: logic.Config) -> tuple[ScriptArg, ...]:
    # The same settings go with every call of a service: converted once per settings, not per call.
    return (
        cfg.window_type,
        cfg.window_size,
        cfg.threshold,
        cfg.minimum_calls,
        cfg.consecutive,
        cfg.wait_ms,
        cfg.half_open_max,
        cfg.success_threshold,
        cfg.multiplier,
        cfg.max_wait_ms,
        cfg.trial_ttl_ms,
    )


def _many_results(reply: list[Any]) -> list[logic.Result]:
    """RECORD_MANY's flat reply: per outcome, state, calls, failures, consecutive, snapshot calls and failures,
    the number of transitions, then three values per transition."""
    results, i = [], 0
    while i < len(reply):
        state, calls, failures, consecutive, sc, sf, count = reply[i : i + 7]
        i += 7
        trans = reply[i : i + 3 * int(count)]
        i += 3 * int(count)
        results.append(
            logic.Result(
                state=_text(state),
                calls=int(calls),
                failures=int(failures),
                consecutive=int(consecutive),
                snapshot=(int(sc), int(sf)) if int(sc) >= 0 else None,
                transitions=[
                    (_text(trans[j]), _text(trans[j + 1]), _text(trans[j + 2]))
                    for j in range(0, len(trans), 3)
                ],
            )
        )
    return results


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _result(reply: list[Any]) -> logic.Result:
    state, allowed, retry, pid, reason, calls, failures, consecutive, sc, sf, *trans = reply
    transitions = [
        (_text(trans[i]), _text(trans[i + 1]), _text(trans[i + 2])) for i in range(0, len(trans), 3)
    ]
    return logic.Result(
        state=_text(state),
        allowed=bool(int(allowed)),
        retry_after_ms=int(retry),
        permit_id=_text(pid),
        reason=_text(reason),
        transitions=transitions,
        calls=int(calls),
        failures=int(failures),
        consecutive=int(consecutive),
        snapshot=(int(sc), int(sf)) if int(sc) >= 0 else None,
    )

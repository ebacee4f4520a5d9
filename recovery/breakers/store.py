"""Where breaker state lives: Redis in production (Lua, one round trip per permit or outcome, one pipeline per
batch), the database in the embedded mode. Both give the same answers (tests/recovery/breakers/test_store_contract.py).

Both treat what they hold as possibly damaged: a state that is missing or cannot be read is rebuilt from the
breaker's history (recovery/breakers/history.py) before anything is decided on it, and numbers out of range are
clamped (an open-until never lies beyond now + MAX_RETRY_AFTER_S), so that no stored value can make a reader fail.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol, cast

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import OuterRef, Subquery

from core.infra import redisconn
from core.infra.redisconn import Scripts
from recovery.breakers import history, logic
from recovery.breakers.lua import ACK, CLOSE, PEEK, PERMIT, RECORD_MANY, RESTORE, SET_OVERRIDE, VERDICT
from recovery.breakers.models import BreakerState, BreakerTransition, Service

log = logging.getLogger(__name__)
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
    override: str = ""  # the override in force in the store ("" when automatic)
    override_until: int = 0
    override_reason: str = ""
    pending: int = 0  # transitions waiting for their rows


class BreakerStore(Protocol):
    def permit(self, service: Service, cfg: logic.Config, permit_id: str) -> logic.Result: ...

    def record_many(self, items: list[tuple[Service, logic.Config, logic.Outcome]]) -> list[logic.Result]: ...

    def peek(self, service: Service, cfg: logic.Config) -> Peek: ...

    def peek_many(self, services: list[Service], cfgs: list[logic.Config]) -> list[Peek]: ...

    def reset(self, service: Service) -> None: ...

    def set_override(
        self, service: Service, cfg: logic.Config, mode: str, until: int, reason: str
    ) -> None: ...

    def pending(self, service: Service) -> list[dict[str, Any]]: ...

    def acknowledge(self, service: Service, seqs: set[str]) -> None: ...

    def health_verdict(
        self, service: Service, cfg: logic.Config, *, healthy: bool, check: str, why: str
    ) -> logic.Result: ...

    def close(self, service: Service, cfg: logic.Config, why: str) -> logic.Result: ...


def wall_ms() -> int:
    return int(time.time() * 1000)


def read_pending(entries: list[Any]) -> list[dict[str, Any]]:
    """The pending transitions that can be written as rows (the others are dropped when acknowledged)."""
    fields = {"seq": str, "from": str, "to": str, "why": str}
    return [
        entry
        for entry in entries
        if isinstance(entry, dict) and all(isinstance(entry.get(k), kind) for k, kind in fields.items())
    ]


class DatabaseStore:
    """The embedded store: the state dict in a row, changed under a row lock, one transaction per call."""

    def __init__(self, clock: Clock = wall_ms) -> None:
        self.clock = clock

    def _locked(self, service: Service) -> BreakerState:
        row = BreakerState.objects.select_for_update().filter(service=service).first()
        if row is None:
            # An empty state: read as missing, so the first reader rebuilds it from the breaker's history.
            BreakerState.objects.get_or_create(service=service, defaults={"data": {}})
            row = BreakerState.objects.select_for_update().get(service=service)
        return row

    def _state(self, service: Service, cfg: logic.Config, data: Any, now: int) -> logic.State:
        state = logic.sanitize(data, now, cfg.cap_ms)
        if state is None:
            if data:
                log.warning("breaker state of %s unreadable: rebuilt from its history", service.name)
            state = history.state_from_history(service, cfg, now)
        return state

    def permit(self, service: Service, cfg: logic.Config, permit_id: str) -> logic.Result:
        with transaction.atomic():
            row = self._locked(service)
            now = self.clock()
            state = self._state(service, cfg, row.data, now)
            result = logic.permit(state, cfg, now, permit_id)
            BreakerState.objects.filter(pk=row.pk).update(data=state)
        return result

    def record_many(self, items: list[tuple[Service, logic.Config, logic.Outcome]]) -> list[logic.Result]:
        # Services in name order: two batches lock rows in the same order and cannot deadlock.
        order = sorted(range(len(items)), key=lambda i: items[i][0].name)
        by_index: dict[int, logic.Result] = {}
        with transaction.atomic():
            rows: dict[int, tuple[BreakerState, logic.State]] = {}
            for i in order:
                service, cfg, outcome = items[i]
                now = self.clock()
                if service.pk not in rows:
                    row = self._locked(service)
                    rows[service.pk] = (row, self._state(service, cfg, row.data, now))
                by_index[i] = logic.record_run(rows[service.pk][1], cfg, now, outcome)
            for row, state in rows.values():
                BreakerState.objects.filter(pk=row.pk).update(data=state)
        return [by_index[i] for i in range(len(items))]

    def peek(self, service: Service, cfg: logic.Config) -> Peek:
        row = BreakerState.objects.filter(service=service).first()
        now = self.clock()
        return _peek_of(self._state(service, cfg, row.data if row else None, now), cfg, now)

    def peek_many(self, services: list[Service], cfgs: list[logic.Config]) -> list[Peek]:
        """`peek` of many breakers in a bounded number of queries (the console's fleet page): one for the state
        rows, and two for the history of those whose state is missing or unreadable (rebuilt, not written, as
        `peek` does)."""
        rows = dict(
            BreakerState.objects.filter(service_id__in=[s.pk for s in services]).values_list(
                "service_id", "data"
            )
        )
        now = self.clock()
        states: dict[int, logic.State] = {}
        for service, cfg in zip(services, cfgs, strict=True):
            data = rows.get(service.pk)
            state = logic.sanitize(data, now, cfg.cap_ms)
            if state is None:
                if data:
                    log.warning("breaker state of %s unreadable: rebuilt from its history", service.name)
            else:
                states[service.pk] = state
        missing = [(s, c) for s, c in zip(services, cfgs, strict=True) if s.pk not in states]
        states.update(states_from_history([s for s, _ in missing], [c for _, c in missing], now))
        return [_peek_of(states[s.pk], cfg, now) for s, cfg in zip(services, cfgs, strict=True)]

    def reset(self, service: Service) -> None:
        BreakerState.objects.filter(service=service).delete()

    def set_override(self, service: Service, cfg: logic.Config, mode: str, until: int, reason: str) -> None:
        with transaction.atomic():
            row = self._locked(service)
            state = self._state(service, cfg, row.data, self.clock())
            logic.set_override(state, mode, until, reason)
            BreakerState.objects.filter(pk=row.pk).update(data=state)

    def pending(self, service: Service) -> list[dict[str, Any]]:
        row = BreakerState.objects.filter(service=service).first()
        data = row.data if row is not None and isinstance(row.data, dict) else {}
        entries = data.get("pending")
        return read_pending(entries if isinstance(entries, list) else [])

    def acknowledge(self, service: Service, seqs: set[str]) -> None:
        with transaction.atomic():
            row = BreakerState.objects.select_for_update().filter(service=service).first()
            if row is None or not isinstance(row.data, dict) or not isinstance(row.data.get("pending"), list):
                return
            kept = [p for p in read_pending(row.data["pending"]) if p["seq"] not in seqs]
            BreakerState.objects.filter(pk=row.pk).update(data={**row.data, "pending": kept})

    def _change(
        self, service: Service, cfg: logic.Config, step: Callable[[logic.State, int], logic.Result]
    ) -> logic.Result:
        with transaction.atomic():
            row = self._locked(service)
            now = self.clock()
            state = self._state(service, cfg, row.data, now)
            result = step(state, now)
            BreakerState.objects.filter(pk=row.pk).update(data=state)
        return result

    def health_verdict(
        self, service: Service, cfg: logic.Config, *, healthy: bool, check: str, why: str
    ) -> logic.Result:
        return self._change(
            service,
            cfg,
            lambda state, now: logic.health_verdict(state, cfg, now, healthy=healthy, check=check, why=why),
        )

    def close(self, service: Service, cfg: logic.Config, why: str) -> logic.Result:
        return self._change(service, cfg, lambda state, now: logic.close(state, cfg, now, why))


# What each key of a breaker must be; a key of another type (written by hand, or by a bug) is deleted.
KEY_TYPES = ("hash", "list", "hash", "zset", "list")


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
        self._restore = client.register_script(RESTORE)
        self._set_override = client.register_script(SET_OVERRIDE)
        self._ack = client.register_script(ACK)
        self._verdict = client.register_script(VERDICT)
        self._close = client.register_script(CLOSE)

    def keys(self, service: Service) -> list[str]:
        tag = f"{self.prefix}:{{{service.name}}}"
        return [f"{tag}:state", f"{tag}:count", f"{tag}:time", f"{tag}:trials", f"{tag}:pending"]

    def _args(self, cfg: logic.Config) -> list[ScriptArg]:
        return [
            self.clock() if self.clock else 0,
            *_config_args(cfg),
        ]

    def _now(self) -> int:
        return self.clock() if self.clock else wall_ms()

    def _run(self, service: Service, cfg: logic.Config, call: Callable[[], Any]) -> Any:
        """Run a script; a state it cannot read is rebuilt from history and the script run again, a key of the
        wrong type (the script fails) is deleted and the script run again."""
        for attempt in range(3):
            try:
                reply = call()
            except redis.ResponseError as error:
                if attempt == 2 or not self._repair(service, error):
                    raise
                continue
            if not _asks_rebuild(reply):
                return reply
            self.rebuild(service, cfg)
        raise redis.ResponseError(f"the breaker state of {service.name} could not be rebuilt")

    def _repair(self, service: Service, error: Exception) -> bool:
        """Delete the breaker's keys that hold the wrong type; whether any was."""
        keys = self.keys(service)
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.type(key)
        found = [_text(kind) for kind in pipe.execute()]
        wrong = [
            key for key, kind, want in zip(keys, found, KEY_TYPES, strict=True) if kind not in (want, "none")
        ]
        if wrong:
            log.warning("breaker keys of %s had the wrong type (%s): deleted %s", service.name, error, wrong)
            self.client.delete(*wrong)
        return bool(wrong)

    def rebuild(self, service: Service, cfg: logic.Config) -> None:
        """Write the state the breaker's history gives, unless a readable one appeared meanwhile."""
        state = history.state_from_history(service, cfg, self._now())
        fields: list[ScriptArg] = []
        for name, value in _hash_fields(state, cfg).items():
            fields += [name, value]
        if self._restore(keys=self.keys(service), args=[*self._args(cfg), cfg.cap_ms, *fields]):
            log.warning(
                "breaker state of %s was missing or unreadable in Redis: rebuilt from its history as %s",
                service.name,
                state["state"],
            )

    def permit(self, service: Service, cfg: logic.Config, permit_id: str) -> logic.Result:
        keys, args = self.keys(service), [*self._args(cfg), permit_id, cfg.cap_ms]
        return _result(self._run(service, cfg, lambda: self.scripts.run(PERMIT, keys, args)))

    def _record_args(self, cfg: logic.Config, outcomes: list[logic.Outcome]) -> list[ScriptArg]:
        args: list[ScriptArg] = [*self._args(cfg), len(outcomes)]
        for o in outcomes:
            args += [
                o.permit_id,
                int(o.failure),
                int(o.ignored),
                o.retry_after_ms,
                int(o.frozen),
                o.asked_s,
                o.count,
            ]
        return [*args, cfg.cap_ms]

    def record_many(self, items: list[tuple[Service, logic.Config, logic.Outcome]]) -> list[logic.Result]:
        """One script call per service, in one pipeline: each applies that service's outcomes in order (an
        outcome with `count` k is a run of k identical ones, applied at once; its result is the state after the
        run, with every transition the run made). A service whose state must be repaired or rebuilt first is run
        again on its own."""
        by_service: dict[str, list[int]] = {}
        for index, (service, _, _) in enumerate(items):
            by_service.setdefault(service.name, []).append(index)
        calls = []
        for indexes in by_service.values():
            service, cfg, _ = items[indexes[0]]
            calls.append((service, cfg, self._record_args(cfg, [items[i][2] for i in indexes])))
        pipe = self.client.pipeline(transaction=False)
        for service, _, args in calls:
            self._record_many(keys=self.keys(service), args=args, client=pipe)
        replies = pipe.execute(raise_on_error=False)
        results: list[logic.Result | None] = [None] * len(items)
        for indexes, (service, cfg, args), reply in zip(by_service.values(), calls, replies, strict=True):
            if isinstance(reply, redis.ConnectionError | redis.TimeoutError):
                raise reply
            if isinstance(reply, Exception) or _asks_rebuild(reply):

                def again(service: Service = service, args: list[ScriptArg] = args) -> Any:
                    return self._record_many(keys=self.keys(service), args=args)

                reply = (
                    self._run(service, cfg, again)
                    if _asks_rebuild(reply)
                    else self._rerun(service, cfg, reply, again)
                )
            for i, result in zip(indexes, _many_results(reply), strict=True):
                results[i] = result
        return [r for r in results if r is not None]

    def _rerun(self, service: Service, cfg: logic.Config, error: Exception, call: Callable[[], Any]) -> Any:
        if not isinstance(error, redis.ResponseError) or not self._repair(service, error):
            raise error
        return self._run(service, cfg, call)

    def peek(self, service: Service, cfg: logic.Config) -> Peek:
        args = [*self._args(cfg), cfg.cap_ms]
        reply = self._run(service, cfg, lambda: self._peek(keys=self.keys(service), args=args))
        return _peek_reply(reply)

    def peek_many(self, services: list[Service], cfgs: list[logic.Config]) -> list[Peek]:
        """`peek` of many breakers in one round trip (one PEEK per breaker, in one pipeline). Breakers whose state
        is missing are rebuilt from their history together (two queries, one more round trip: RESTORE and PEEK
        again); a breaker whose keys are damaged is repaired by `peek` on its own."""
        replies = self._peek_pipeline(services, cfgs, restore=None)
        lost = [i for i, reply in enumerate(replies) if _asks_rebuild(reply)]
        if lost:
            now = self._now()
            rebuilt = states_from_history([services[i] for i in lost], [cfgs[i] for i in lost], now)
            again = self._peek_pipeline([services[i] for i in lost], [cfgs[i] for i in lost], restore=rebuilt)
            for i, reply in zip(lost, again, strict=True):
                replies[i] = reply
        peeks = []
        for service, cfg, reply in zip(services, cfgs, replies, strict=True):
            if isinstance(reply, redis.ConnectionError | redis.TimeoutError):
                raise reply
            if isinstance(reply, Exception) or _asks_rebuild(reply):
                peeks.append(self.peek(service, cfg))  # damaged keys, or lost again meanwhile: one by one
            else:
                peeks.append(_peek_reply(reply))
        return peeks

    def _peek_pipeline(
        self, services: list[Service], cfgs: list[logic.Config], restore: dict[int, logic.State] | None
    ) -> list[Any]:
        """PEEK each breaker in one pipeline; with `restore`, each first RESTOREs its rebuilt state (which
        writes nothing where a readable state appeared meanwhile) and only the PEEK replies are kept."""
        if not services:
            return []
        pipe = self.client.pipeline(transaction=False)
        for service, cfg in zip(services, cfgs, strict=True):
            if restore is not None:
                fields: list[ScriptArg] = []
                for name, value in _hash_fields(restore[service.pk], cfg).items():
                    fields += [name, value]
                self._restore(
                    keys=self.keys(service), args=[*self._args(cfg), cfg.cap_ms, *fields], client=pipe
                )
            self._peek(keys=self.keys(service), args=[*self._args(cfg), cfg.cap_ms], client=pipe)
        replies = pipe.execute(raise_on_error=False)
        return replies[1::2] if restore is not None else replies

    def reset(self, service: Service) -> None:
        self.client.delete(*self.keys(service)[:4])

    def set_override(self, service: Service, cfg: logic.Config, mode: str, until: int, reason: str) -> None:
        args = [*self._args(cfg), cfg.cap_ms, mode, until, reason]
        self._run(service, cfg, lambda: self._set_override(keys=self.keys(service), args=args))

    def pending(self, service: Service) -> list[dict[str, Any]]:
        entries = []
        items = cast(list[bytes], self.client.lrange(self.keys(service)[4], 0, -1))
        for item in items:
            try:
                entries.append(json.loads(item))
            except ValueError:
                continue  # dropped by the next acknowledgement
        return read_pending(entries)

    def acknowledge(self, service: Service, seqs: set[str]) -> None:
        self._ack(keys=[self.keys(service)[4]], args=sorted(seqs))

    def health_verdict(
        self, service: Service, cfg: logic.Config, *, healthy: bool, check: str, why: str
    ) -> logic.Result:
        keys, args = self.keys(service), [*self._args(cfg), cfg.cap_ms, int(healthy), check, why]
        return _changed(self._run(service, cfg, lambda: self._verdict(keys=keys, args=args)))

    def close(self, service: Service, cfg: logic.Config, why: str) -> logic.Result:
        keys, args = self.keys(service), [*self._args(cfg), cfg.cap_ms, why]
        return _changed(self._run(service, cfg, lambda: self._close(keys=keys, args=args)))


def _peek_of(state: logic.State, cfg: logic.Config, now: int) -> Peek:
    """What `peek` answers from a state the database store holds (or rebuilt)."""
    calls, failures = logic.window_counts(state, cfg, now)
    trials = sum(1 for expiry in state["trials"].values() if expiry > now)
    override = logic.override_in_force(state, now)
    return Peek(
        state["state"],
        state["opened_at"],
        state["open_until"],
        calls,
        failures,
        state["consecutive"],
        trials,
        now,
        override,
        state["override_until"] if override else 0,
        state["override_reason"] if override else "",
        len(state["pending"]),
    )


def _peek_reply(reply: list[Any]) -> Peek:
    """What `peek` answers from the PEEK script's reply."""
    state, opened_at, open_until, calls, failures, consecutive, trials, now, ovr, until, why, pending = reply
    return Peek(
        _text(state),
        int(opened_at),
        int(open_until),
        int(calls),
        int(failures),
        int(consecutive),
        int(trials),
        int(now),
        _text(ovr),
        int(until) if _text(ovr) else 0,
        _text(why) if _text(ovr) else "",
        int(pending),
    )


def states_from_history(
    services: list[Service], cfgs: list[logic.Config], now: int
) -> dict[int, logic.State]:
    """history.state_from_history for many breakers in two queries (by service pk): each service's override
    row with the id of its last transition to a breaker state, then those transitions. The same steps as that
    function (tests/recovery/breakers/test_fleet_reads.py holds them together); a peek of the whole fleet must
    not cost two queries per breaker whose state was never written."""
    if not services:
        return {}
    last = (
        BreakerTransition.objects.filter(service_id=OuterRef("pk"), to_state__in=logic.STATES)
        .order_by("-created_at", "-id")
        .values("id")[:1]
    )
    rows = {
        row["pk"]: row
        for row in Service.objects.filter(pk__in=[s.pk for s in services])
        .annotate(last_id=Subquery(last))
        .values("pk", "override", "override_reason", "override_until", "last_id")
    }
    ids = [row["last_id"] for row in rows.values() if row["last_id"] is not None]
    moves = {
        t.service_id: t
        for t in BreakerTransition.objects.filter(pk__in=ids).only(
            "service_id", "to_state", "created_at", "window"
        )
    }
    states = {}
    for service, cfg in zip(services, cfgs, strict=True):
        state = logic.new_state(history.new_generation())
        move = moves.get(service.pk)
        if move is not None and move.to_state != logic.CLOSED:
            at = history.ms(move.created_at)
            window = move.window if isinstance(move.window, dict) else {}
            wait = window.get("wait_ms")
            wait_ms = int(wait) if isinstance(wait, int) and wait > 0 else cfg.wait_ms
            state["state"], state["opened_at"] = move.to_state, min(at, now)
            state["wait_ms"] = min(wait_ms, cfg.cap_ms)
            if move.to_state == logic.OPEN:
                until = history._window_ms(window, "open_until") or at + wait_ms
                state["open_until"] = min(until, now + cfg.cap_ms)
        row = rows.get(service.pk)
        if row is not None and row["override"] != logic.AUTO:
            until_ms = history.ms(row["override_until"]) if row["override_until"] is not None else 0
            logic.set_override(state, row["override"], until_ms, row["override_reason"])
        states[service.pk] = state
    return states


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


def _hash_fields(state: logic.State, cfg: logic.Config) -> dict[str, ScriptArg]:
    """A rebuilt state as the Redis hash holds it (its window starts empty, of the configured type)."""
    return {
        "state": state["state"],
        "opened_at": state["opened_at"],
        "open_until": state["open_until"],
        "wait_ms": state["wait_ms"],
        "consecutive": 0,
        "ho_ok": 0,
        "wf": 0,
        "win_type": cfg.window_type,
        "gen": state["gen"],
        "tseq": 0,
        "ovr": state["override"],
        "ovr_until": state["override_until"],
        "ovr_reason": state["override_reason"],
    }


def _asks_rebuild(reply: Any) -> bool:
    return isinstance(reply, list) and len(reply) == 1 and _text(reply[0]) == "rebuild"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _moves(flat: list[Any], at: int) -> tuple[list[tuple[str, str, str]], list[logic.Facts]]:
    """Transitions as the scripts reply them: ten values each (see lua.py)."""
    moves, facts = [], []
    for j in range(0, len(flat), 10):
        from_state, to_state, why, seq, calls, failures, consecutive, open_until, wait_ms, check = flat[
            j : j + 10
        ]
        moves.append((_text(from_state), _text(to_state), _text(why)))
        facts.append(
            logic.Facts(
                _text(seq),
                at,
                int(calls),
                int(failures),
                int(consecutive),
                int(open_until),
                int(wait_ms),
                _text(check),
            )
        )
    return moves, facts


def _built(common: tuple[Any, ...], flat: list[Any], **extra: Any) -> logic.Result:
    """A Result from what every script replies (bytes or numbers): `common` is the state, calls, failures,
    consecutive failures, override, pending and now; `flat` the transitions; `extra` the script's own fields."""
    state, calls, failures, consecutive, override, pending, now = common
    moves, facts = _moves(flat, int(now))
    return logic.Result(
        state=_text(state),
        transitions=moves,
        calls=int(calls),
        failures=int(failures),
        consecutive=int(consecutive),
        facts=facts,
        override=_text(override),
        pending=int(pending),
        **extra,
    )


def _many_results(reply: list[Any]) -> list[logic.Result]:
    """RECORD_MANY's flat reply: now, pending, then per outcome state, calls, failures, consecutive, override,
    the number of transitions, then ten values per transition."""
    now, pending = reply[0], reply[1]
    results, i = [], 2
    while i < len(reply):
        state, calls, failures, consecutive, override, count = reply[i : i + 6]
        i += 6
        flat = reply[i : i + 10 * int(count)]
        i += 10 * int(count)
        results.append(_built((state, calls, failures, consecutive, override, pending, now), flat))
    return results


def _result(reply: list[Any]) -> logic.Result:
    state, allowed, retry, pid, reason, calls, failures, consecutive, override, pending, now, *trans = reply
    return _built(
        (state, calls, failures, consecutive, override, pending, now),
        trans,
        allowed=bool(int(allowed)),
        retry_after_ms=int(retry),
        permit_id=_text(pid),
        reason=_text(reason),
    )


def _changed(reply: list[Any]) -> logic.Result:
    """VERDICT's and CLOSE's reply: state, the state found, the effect, calls, failures, consecutive, the
    override in force, pending, now, then the transitions."""
    state, before, effect, calls, failures, consecutive, override, pending, now, *trans = reply
    return _built(
        (state, calls, failures, consecutive, override, pending, now),
        trans,
        reason=_text(effect),
        before=_text(before),
    )

"""Fallback chains and the result cache behind them.

A chain is a service's FallbackOption rows for one operation: the options configured for that operation first,
then those for every operation (operation ""), each group in position order. Each option is available now or
not, and says why:

* service: another service (and operation); not while that service's breaker is open.
* cache: the last good result agents sent with a successful outcome (`cache_key` and `result`), kept in Redis
  for RESULT_CACHE_TTL_SECONDS; not when there is none, or it is older than the option's `max_age_s`.
* static: a static default, always.
* skip: skip the call with a partial result and a warning; only for non-critical work (the Operation row says
  critical=False, or there is none and the service is non-critical).

The cache key names the input a result belongs to (a search's query, a report's date): a result is only ever
offered for the same service, operation and cache_key. The empty key means "the operation's last result,
whatever its input", for operations without input (a status, a summary).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from django.conf import settings
from django.core.cache import BaseCache, cache
from django.db import transaction
from django.db.models import Case, IntegerField, Value, When
from django.utils import timezone

from core.api.errors import InvalidInput
from core.audit.services import Actor, audited_delete, audited_save, require_reason
from core.infra import redisconn
from core.infra.conf import rebound
from recovery.breakers import registry as breaker_registry
from recovery.breakers import selectors as breaker_selectors
from recovery.breakers.models import Service
from recovery.breakers.schemas import encoded, too_large
from recovery.decisions.models import FallbackOption, Operation
from recovery.decisions.planner import BreakerInput, OptionInput, seconds

log = logging.getLogger(__name__)
Kind = FallbackOption.Kind

# --- The result cache --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CachedResult:
    value: Any
    cached_at: datetime

    def age_s(self, now: float) -> float:
        return max(0.0, now - self.cached_at.timestamp())


@dataclass(frozen=True)
class CachedEntry:
    """One cached result as `entries` lists it (its value left out: it can be large)."""

    operation: str
    cache_key: str  # its first CACHE_KEY_SHOWN characters
    cached_at: datetime
    age_s: float
    bytes: int  # the size of the stored entry


CACHE_KEY_SHOWN = 200  # what an entry keeps of its cache key, for listing: agents' keys can be of any length
SCAN_PAGE = 500


def result_key(service: str, operation: str, cache_key: str) -> str:
    # Hashed: cache keys are the agents' text of any length; the service stays readable for operators.
    digest = hashlib.sha256(f"{operation}\0{cache_key}".encode()).hexdigest()[:40]
    return f"rebound:result:{{{service}}}:{digest}"


class ResultCache:
    """Results in Redis (SET with a TTL), or in Django's cache in the embedded mode (per process there)."""

    def __init__(self, backend: BaseCache | None = None, clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.clock = clock

    def _redis(self) -> redis.Redis | None:
        return redisconn.client() if self.backend is None and settings.REDIS_URL else None

    def put_many(self, items: list[tuple[str, str, str, Any]], at: float | None = None) -> int:
        """Store (service, operation, cache_key, value) results; a result over the size limit is skipped."""
        ttl = int(rebound("RESULT_CACHE_TTL_SECONDS"))
        stamp = self.clock() if at is None else at
        entries: dict[str, bytes] = {}
        for service, operation, cache_key, value in items:
            if (problem := too_large(value)) is not None:
                log.warning("result of %s/%s not cached: %s", service, operation, problem)
                continue
            # "op" and "ck" let `entries` list a service's results by operation (the keys are hashed).
            stored = {"v": value, "at": stamp, "op": operation, "ck": cache_key[:CACHE_KEY_SHOWN]}
            entries[result_key(service, operation, cache_key)] = encoded(stored)
        if not entries:
            return 0
        client = self._redis()
        if client is not None:
            pipe = client.pipeline(transaction=False)
            for key, payload in entries.items():
                pipe.set(key, payload, ex=ttl)
            pipe.execute()
        else:
            (self.backend or cache).set_many({k: v.decode() for k, v in entries.items()}, timeout=ttl)
        return len(entries)

    def get(self, service: str, operation: str, cache_key: str) -> CachedResult | None:
        key = result_key(service, operation, cache_key)
        client = self._redis()
        raw: Any = client.get(key) if client is not None else (self.backend or cache).get(key)
        if raw is None:
            return None
        data = json.loads(raw)
        return CachedResult(data["v"], datetime.fromtimestamp(data["at"], tz=UTC))

    def forget_service(self, service: str) -> int:
        """Delete every cached result of the service (all operations and cache keys). Answers how many went.

        Redis: SCAN for the service's keys (they share the `rebound:result:{service}:` prefix) and UNLINK them
        a page at a time, never KEYS. The embedded mode's per-process cache: the entries with that prefix."""
        prefix = f"rebound:result:{{{service}}}:"
        client = self._redis()
        if client is not None:
            forgotten = 0
            page: list[Any] = []
            for key in client.scan_iter(match=f"{prefix}*", count=500):
                page.append(key)
                if len(page) >= 500:
                    reply: Any = client.unlink(*page)
                    forgotten += int(reply)
                    page = []
            if page:
                last: Any = client.unlink(*page)
                forgotten += int(last)
            return forgotten
        backend = self.backend or cache
        # Django's caches cannot list their keys; the local-memory cache (the embedded mode) keeps them in a dict.
        stored = getattr(backend, "_cache", None)
        if not isinstance(stored, dict):
            log.warning("the result cache %s cannot list its keys: nothing forgotten", type(backend).__name__)
            return 0
        head = backend.make_key("")  # what the cache puts before each key (its prefix and version)
        ours = [key[len(head) :] for key in list(stored) if str(key).startswith(head + prefix)]
        backend.delete_many(ours)
        return len(ours)

    def entries(
        self, service: str, operation: str | None = None, limit: int = 20
    ) -> tuple[int, list[CachedEntry]]:
        """How many results the service has cached (of that operation when given) and the newest `limit` of
        them, newest first. Redis: SCAN the service's prefix (never KEYS) and MGET a page at a time; the embedded
        mode's per-process cache: the entries with that prefix. Entries stored before they named their operation
        are listed under operation "" (they expire within RESULT_CACHE_TTL_SECONDS)."""
        now = self.clock()
        found = [
            entry
            for raw in self._stored(f"rebound:result:{{{service}}}:")
            if (entry := _entry_of(raw, now)) is not None
            and (operation is None or entry.operation == operation)
        ]
        found.sort(key=lambda e: e.cached_at, reverse=True)
        return len(found), found[:limit]

    def _stored(self, prefix: str) -> list[Any]:
        """The raw payloads under a prefix (those that expire while they are read are left out)."""
        client = self._redis()
        if client is not None:
            payloads: list[Any] = []
            page: list[Any] = []
            for key in client.scan_iter(match=f"{prefix}*", count=SCAN_PAGE):
                page.append(key)
                if len(page) >= SCAN_PAGE:
                    reply: Any = client.mget(page)
                    payloads += reply
                    page = []
            if page:
                last: Any = client.mget(page)
                payloads += last
            return [p for p in payloads if p is not None]
        backend = self.backend or cache
        # As in forget_service: of Django's caches, only the local-memory one (the embedded mode) can list.
        stored = getattr(backend, "_cache", None)
        if not isinstance(stored, dict):
            log.warning("the result cache %s cannot list its keys: no entries listed", type(backend).__name__)
            return []
        head = backend.make_key("")
        ours = [key[len(head) :] for key in list(stored) if str(key).startswith(head + prefix)]
        return list(backend.get_many(ours).values())


def _entry_of(raw: Any, now: float) -> CachedEntry | None:
    try:
        data = json.loads(raw)
        cached_at = datetime.fromtimestamp(float(data["at"]), tz=UTC)
    except (ValueError, TypeError, KeyError, OverflowError, OSError):
        return None  # not a payload put_many wrote: nothing to list
    return CachedEntry(
        operation=str(data.get("op", "")),
        cache_key=str(data.get("ck", "")),
        cached_at=cached_at,
        age_s=round(max(0.0, now - cached_at.timestamp()), 3),
        bytes=len(raw.encode() if isinstance(raw, str) else raw),
    )


_results = ResultCache()


def results() -> ResultCache:
    return _results


def use_results(new: ResultCache | None) -> None:
    """Swap the result cache (tests: an injected clock or backend; None: the default)."""
    global _results
    _results = new or ResultCache()


def store_results(items: list[tuple[str, str, str, Any]]) -> int:
    """Cache the results of successful outcomes. Best effort: a Redis failure loses a cache entry, not the
    outcome."""
    if not items:
        return 0
    try:
        return results().put_many(items)
    except redis.RedisError as error:
        log.warning("result cache unreachable, %d results not cached: %s", len(items), error)
        return 0


def cached_entries(
    service: str, operation: str | None = None, limit: int = 20
) -> tuple[int, list[CachedEntry]]:
    """The service's cached results (of that operation when given): how many, and the newest `limit`. Best
    effort, as store_results: with Redis unreachable, none (and a warning), so that a reader still answers."""
    try:
        return results().entries(service, operation, limit)
    except redis.RedisError as error:
        log.warning("result cache unreachable, the cached results of %s not listed: %s", service, error)
        return 0, []


def flush_results(service: str) -> int:
    """Forget every cached last good result of the service (the healing action flush_fallback_cache): its
    cache fallbacks are unavailable until agents report new results. Answers how many were forgotten."""
    return results().forget_service(service)


# --- Breakers and criticality, as the planner sees them ----------------------------------------------------


def breaker_info(service: Service) -> BreakerInput:
    """The breaker's state and, while it is open, how long until it lets a call through."""
    live = breaker_selectors.live_breaker(
        service
    )  # not breaker_view: its last transition and settings are not needed
    override = breaker_registry.override_in_force(service)
    state = override if override != Service.Override.AUTO else live["state"]
    now = timezone.now()
    open_for: float | None = None
    if state == "open" and live["open_until"] is not None:
        open_for = (live["open_until"] - now).total_seconds()
    elif state == "forced_open" and service.override_until is not None:
        open_for = (service.override_until - now).total_seconds()
    if open_for is None:
        return BreakerInput(state, None)
    # A forced_open override may run to the year 9999: no plan tells an agent to wait longer than the cap.
    return BreakerInput(state, round(min(max(0.0, open_for), float(rebound("MAX_RETRY_AFTER_S"))), 3))


def operation_of(service: Service, operation: str) -> Operation | None:
    if not operation:
        return None
    return Operation.objects.filter(service=service, name=operation).first()


def is_critical(service: Service, op: Operation | None) -> bool:
    if op is not None:
        return op.critical
    return service.criticality == Service.Criticality.ESSENTIAL


# --- The chain ---------------------------------------------------------------------------------------------


def chain_rows(service: Service, operation: str) -> list[FallbackOption]:
    """The options that apply to this operation: its own first, then those for every operation."""
    scopes = [operation, ""] if operation else [""]
    return list(
        FallbackOption.objects.filter(service=service, operation__in=scopes)
        .select_related("service", "target_service")
        .annotate(
            general=Case(When(operation="", then=Value(1)), default=Value(0), output_field=IntegerField())
        )
        .order_by("general", "position", "id")
    )


def chain_status(
    service: Service, operation: str, *, critical: bool, cache_key: str = ""
) -> tuple[OptionInput, ...]:
    """Every option of the chain with its availability now, in the order it is tried."""
    now = results().clock()
    return tuple(_status(row, operation, critical, cache_key, now) for row in chain_rows(service, operation))


def _status(row: FallbackOption, operation: str, critical: bool, cache_key: str, now: float) -> OptionInput:
    base: dict[str, Any] = {
        "id": row.pk,
        "position": row.position,
        "kind": row.kind,
        "scope": row.operation,
        "warning": row.warning or None,
    }
    if not row.enabled:
        return OptionInput(available=False, why="disabled by an operator", **base)
    if row.kind == Kind.SERVICE:
        target = row.target_service
        assert target is not None  # a check constraint
        breaker = breaker_info(target)
        target_operation = row.target_operation or operation
        name = f"{target.name}/{target_operation}" if target_operation else target.name
        state = breaker.state.replace("_", " ")
        is_open = breaker.state in ("open", "forced_open")
        more = (
            f" for {seconds(breaker.open_for_s)} more" if is_open and breaker.open_for_s is not None else ""
        )
        return OptionInput(
            available=not is_open,
            why=f"{name}: breaker {state}{more}",
            service=target.name,
            operation=target_operation or None,
            **base,
        )
    if row.kind == Kind.CACHE:
        return _cache_status(row, operation, cache_key, now, base)
    if row.kind == Kind.STATIC:
        return OptionInput(available=True, why="a static default", value=row.static_value, **base)
    if critical:
        return OptionInput(available=False, why="critical work is never skipped", **base)
    return OptionInput(available=True, why="non-critical work: skip it with a partial result", **base)


def _cache_status(
    row: FallbackOption, operation: str, cache_key: str, now: float, base: dict[str, Any]
) -> OptionInput:
    service = row.service.name
    try:
        found = results().get(service, operation, cache_key)
    except redis.RedisError as error:
        return OptionInput(available=False, why=f"the result cache is unreachable: {error}", **base)
    key_words = f" for cache_key {cache_key!r}" if cache_key else ""
    if found is None:
        return OptionInput(available=False, why=f"no cached result{key_words}", **base)
    age = round(found.age_s(now), 3)
    cached: dict[str, Any] = {"cached_at": found.cached_at.isoformat(), "age_s": age}
    if row.max_age_s is not None and age > row.max_age_s:
        why = f"the cached result{key_words} is {seconds(age)} old; at most {seconds(row.max_age_s)} is accepted"
        return OptionInput(available=False, why=why, **cached, **base)
    return OptionInput(
        available=True,
        why=f"a result cached {seconds(age)} ago{key_words}",
        value=found.value,
        **cached,
        **base,
    )


def option_json(option: OptionInput) -> dict[str, Any]:
    """An option as a plan's row keeps it (the cached or static value left out: it can be large)."""
    return {
        "kind": option.kind,
        "position": option.position,
        "service": option.service,
        "operation": option.operation,
        "cached_at": option.cached_at,
        "warning": option.warning,
    }


@dataclass(frozen=True)
class Chain:
    """A service's fallback chain for one operation, each option with its availability now."""

    service: str
    operation: str
    critical: bool
    options: tuple[OptionInput, ...]


def chain_now(service: Service, operation: str, cache_key: str = "") -> Chain:
    """GET /fallbacks/{service}: the chain with each option's availability now."""
    critical = is_critical(service, operation_of(service, operation))
    options = chain_status(service, operation, critical=critical, cache_key=cache_key)
    return Chain(service.name, operation, critical, options)


# --- Operators' writes (the admin and PUT /fallbacks/{service}): audited ----------------------------------------------------------------

OPTION_FIELDS = [
    "service",
    "operation",
    "position",
    "kind",
    "enabled",
    "description",
    "target_service",
    "target_operation",
    "static_value",
    "max_age_s",
    "warning",
]
OPERATION_FIELDS = ["service", "name", "idempotent", "critical", "description"]


def save_option(option: FallbackOption, *, actor: Actor, reason: str) -> FallbackOption:
    if (
        option.kind == Kind.SERVICE
        and option.target_service_id == option.service_id
        and (option.target_operation or option.operation) == option.operation
    ):
        raise InvalidInput(
            "A service fallback must name another service or operation.", field="target_service"
        )
    return audited_save(option, OPTION_FIELDS, actor=actor, reason=reason, action="fallback_option")


def delete_option(option: FallbackOption, *, actor: Actor, reason: str) -> None:
    audited_delete(option, OPTION_FIELDS, actor=actor, reason=reason, action="fallback_option")


def save_operation(operation: Operation, *, actor: Actor, reason: str) -> Operation:
    return audited_save(operation, OPERATION_FIELDS, actor=actor, reason=reason, action="operation")


def delete_operation(operation: Operation, *, actor: Actor, reason: str) -> None:
    audited_delete(operation, OPERATION_FIELDS, actor=actor, reason=reason, action="operation")


# --- A whole chain at once (PUT /fallbacks/{service}) ---------------------------------------------------------

MAX_CHAIN_OPTIONS = 20


@dataclass(frozen=True)
class ChainOption:
    """One option of a chain an operator sends, before it is a row: the target named, not looked up."""

    kind: str
    target_service: str | None = None
    target_operation: str = ""
    static_value: Any = None
    max_age_s: float | None = None
    warning: str = ""
    description: str = ""
    enabled: bool = True


# What makes two options the same option: a replacement leaves a row with these values as it is (and unaudited).
_COMPARED = [
    "kind",
    "enabled",
    "description",
    "target_service_id",
    "target_operation",
    "max_age_s",
    "warning",
]


def replace_chain(
    service: Service, operation: str, options: Sequence[ChainOption], *, actor: Actor, reason: str
) -> bool:
    """Make the service's chain for `operation` ("" = every operation) exactly `options`, at positions 1..n, in
    one transaction: a row whose position already holds the same option is left alone, one that differs is
    updated in place, rows past the last position are deleted, each write audited through save_option and
    delete_option. Answers whether anything changed: an identical chain writes nothing and audits nothing.

    Every option is checked before anything is written; errors name the field as `options[i].field`."""
    reason = require_reason(reason)
    targets = _checked(service, operation, options)
    with transaction.atomic():
        # The service's row is the lock: two replacements of one chain run one after the other, so the second
        # sees the first's rows (and never trips the unique position of a row the first just inserted).
        Service.objects.select_for_update().filter(pk=service.pk).first()
        stored = {
            row.position: row
            for row in FallbackOption.objects.select_for_update().filter(service=service, operation=operation)
        }
        changed = False
        for position in sorted(p for p in stored if not 1 <= p <= len(options)):
            delete_option(stored[position], actor=actor, reason=reason)
            changed = True
        for index, option in enumerate(options):
            row = stored.get(index + 1) or FallbackOption(
                service=service, operation=operation, position=index + 1
            )
            wanted = _filled(service, row, option, targets)
            if row.pk is not None and _same(row, wanted):
                continue
            _save_at(index, wanted, actor=actor, reason=reason)
            changed = True
    return changed


def _filled(
    service: Service, row: FallbackOption, option: ChainOption, targets: dict[str, Service]
) -> FallbackOption:
    """The row with the option's values (a copy: the stored row stays as it is, for the comparison)."""
    filled = FallbackOption(
        pk=row.pk,
        service=service,
        operation=row.operation,
        position=row.position,
        kind=option.kind,
        enabled=option.enabled,
        description=option.description,
        target_service=targets.get(option.target_service) if option.target_service else None,
        target_operation=option.target_operation,
        static_value=option.static_value,
        max_age_s=option.max_age_s,
        warning=option.warning,
    )
    # An update, not an insert: model validation must not find the stored row in its own unique position.
    filled._state.adding = row.pk is None
    return filled


def _same(stored: FallbackOption, wanted: FallbackOption) -> bool:
    if any(getattr(stored, name) != getattr(wanted, name) for name in _COMPARED):
        return False
    # As JSON, with sorted keys: PostgreSQL's jsonb keeps no key order, and Python says True == 1 == 1.0.
    return _as_json(stored.static_value) == _as_json(wanted.static_value)


def _as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _save_at(index: int, row: FallbackOption, *, actor: Actor, reason: str) -> None:
    try:
        save_option(row, actor=actor, reason=reason)
    except InvalidInput as error:
        # Model validation names the row's fields; the request names them inside the option it sent.
        errors = [
            {**e, "field": f"options[{index}].{e['field']}" if e["field"] != "body" else f"options[{index}]"}
            for e in error.errors
        ] or [{"field": f"options[{index}]", "message": error.message}]
        raise InvalidInput(error.message, errors=errors) from error


def _checked(service: Service, operation: str, options: Sequence[ChainOption]) -> dict[str, Service]:
    """Every problem of every option at once (a 400 naming each field), or the target services by name."""
    if len(options) > MAX_CHAIN_OPTIONS:
        raise InvalidInput(f"A chain has at most {MAX_CHAIN_OPTIONS} options.", field="options")
    names = {o.target_service for o in options if o.target_service}
    targets = {s.name: s for s in Service.objects.filter(name__in=names)}
    errors = [
        {"field": f"options[{index}].{name}", "message": message}
        for index, option in enumerate(options)
        for name, message in _problems(service, operation, option, targets)
    ]
    if errors:
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        raise InvalidInput(f"Invalid fallback chain: {summary}", errors=errors)
    return targets


def _problems(
    service: Service, operation: str, option: ChainOption, targets: dict[str, Service]
) -> list[tuple[str, str]]:
    """(field, message) for each thing wrong with one option. Each field belongs to one kind: a target to a
    service option, a value to a static one, a maximum age to a cache one."""
    if option.kind not in Kind.values:
        return [("kind", f"unknown kind {option.kind!r}; one of {', '.join(Kind.values)}")]
    found: list[tuple[str, str]] = []
    if option.kind == Kind.SERVICE:
        if not option.target_service:
            found.append(("target_service", "a service option needs a target service"))
        elif option.target_service not in targets:
            found.append(("target_service", f"unknown service {option.target_service!r}"))
        elif option.target_service == service.name and (option.target_operation or operation) == operation:
            found.append(("target_service", "a service option must name another service or operation"))
    else:
        if option.target_service:
            found.append(("target_service", "only a service option has a target service"))
        if option.target_operation:
            found.append(("target_operation", "only a service option has a target operation"))
    if option.kind == Kind.STATIC and option.static_value is None:
        found.append(("static_value", "a static option needs a value"))
    if option.kind != Kind.STATIC and option.static_value is not None:
        found.append(("static_value", "only a static option has a value"))
    if option.max_age_s is not None:
        if option.kind != Kind.CACHE:
            found.append(("max_age_s", "only a cache option has a maximum age"))
        elif not math.isfinite(option.max_age_s) or option.max_age_s < 0:
            found.append(("max_age_s", "must be a finite number of seconds, at least 0"))
    return found

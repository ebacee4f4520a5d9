"""The synchronous client: `Client(base_url, api_key)`, its guard, decorators and `call`.

Two daemon threads do the network work: the view thread keeps the live view of the fleet's breakers (a
snapshot at start and every `refresh_s`, transitions by long-poll in between) and the flusher sends queued
outcomes in batches. A guarded call on a closed breaker touches neither: it looks the service up in a dict,
calls, and appends its outcome to a deque.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, Unpack, cast

import httpx

from rebound_client import _tracing
from rebound_client._breaker import LocalBreaker
from rebound_client._common import (
    CacheKey,
    ClientBase,
    GuardBase,
    Items,
    Settings,
    check,
    check_status,
    jittered,
    key_for,
    plan_body,
    unavailable,
)
from rebound_client._core import ALLOW, ASK, CallState, Change
from rebound_client._follow import (
    FALLBACK,
    RAISE,
    RETRY,
    VALUE,
    Fallbacks,
    Following,
    PlanKwargs,
    Rules,
    refusal_plan,
)
from rebound_client.errors import (
    CircuitOpenError,
    ReboundAPIError,
    ReboundError,
    ReboundUnavailableError,
)
from rebound_client.plans import Plan

log = logging.getLogger("rebound_client")
perf_counter = time.perf_counter
P = ParamSpec("P")
R = TypeVar("R")


class Guard(GuardBase):
    """`with client.guard("svc", operation="op") as g:` or `@client.guard("svc")`.

    Before the call it decides locally (CircuitOpenError when the breaker refuses); after it, it queues the
    outcome. One Guard object per `with` (they are cheap); as a decorator it is made once.
    """

    __slots__ = ()
    _client: Client

    def __enter__(self) -> Guard:
        # The hot path, kept inline (no method call): nothing to ask, nothing to remember.
        if self.service in self._client._fast and self.cache_key is None and self.plan_id is None:
            self._slow = None
        else:
            self._slow = CallState(*self._client._admit(self.service))
        self._started = perf_counter()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._finish(perf_counter() - self._started, error)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        return self._client._decorate(fn, self.service, self.operation, self.cache_key)


class Client(ClientBase[httpx.BaseTransport]):
    """A Rebound client for synchronous code (and async functions it decorates).

    `Client("http://rebound:8000", "rb_...")` loads the fleet's breakers (one request) and starts two daemon
    threads. `test_mode=True` sleeps nowhere (waits are appended to `recorded_delays`) and sends every outcome
    before the guarded block returns. Use it as a context manager, or call `close()`, to send what is queued.
    """

    # The constructor and its options are ClientBase's: `Client(base_url, api_key, *, test_mode=False, ...,
    # transport=None)`, with `transport` an httpx.BaseTransport.

    def _open(
        self,
        s: Settings,
        on_change: Callable[[Change], None] | None,
        transport: httpx.BaseTransport | None,
    ) -> None:
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()
        self._setup(s, on_change, self._flush_now if s.test_mode else self._wake.set)

        def http(read_s: float) -> httpx.Client:
            timeout = httpx.Timeout(s.timeout_s, read=read_s)
            return httpx.Client(
                base_url=s.base_url,
                headers=s.headers,
                timeout=timeout,
                transport=transport,
                event_hooks={"request": [_tracing.inject]},
            )

        self._http = http(s.timeout_s)  # permits and plans, from the callers' threads
        self._flush_http = http(max(s.timeout_s, 10.0))
        self._view_http = http(s.events_wait_s + s.timeout_s + 5)
        try:
            self._refresh()
        except ReboundError as error:
            log.warning(
                "rebound_client: no view of the fleet yet (%s); local fail-safe breakers decide", error
            )
        self._threads = [
            threading.Thread(target=self._view_loop, name="rebound-view", daemon=True),
        ]
        if not s.test_mode:
            self._threads.append(threading.Thread(target=self._flush_loop, name="rebound-flush", daemon=True))
        for thread in self._threads:
            thread.start()
        ref = weakref.ref(self)

        def at_exit() -> None:
            client = ref()
            if client is not None:
                client.close(timeout_s=2.0)

        self._at_exit = at_exit
        atexit.register(at_exit)

    # --- public ------------------------------------------------------------------------------------------

    def guard(
        self,
        service: str,
        operation: str = "",
        *,
        cache_key: str | None = None,
        plan_id: str | None = None,
    ) -> Guard:
        if service not in self._core.names:  # checked once per name: this is on the hot path
            self._core.check_name(service)
        return Guard(self, service, operation, cache_key, plan_id)

    def with_circuit_breaker(
        self, service: str, operation: str = "", *, cache_key: CacheKey = None
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """`@client.with_circuit_breaker("svc")`: the guard as a decorator. `cache_key` may be a callable of
        the function's arguments."""
        self._core.check_name(service)
        return lambda fn: self._decorate(fn, service, operation, cache_key)

    def with_retry(
        self,
        service: str,
        operation: str = "",
        *,
        max_attempts: int = 3,
        max_delay_s: float | None = None,
        base_delay_s: float = 1.0,
        task_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Retry the guarded call as the planner says after each failure (at most `max_attempts` calls), with
        a local exponential backoff from `base_delay_s` while Rebound is unreachable."""
        rules = Rules(max_attempts=max_attempts, max_delay_s=max_delay_s, base_delay_s=base_delay_s)
        return self._following(service, operation, rules, task_id, idempotency_key)

    def with_fallback(
        self,
        service: str,
        fallback: Callable[..., Any],
        operation: str = "",
        *,
        max_attempts: int = 1,
        fallbacks: Fallbacks | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """On failure, use what the planner offers (a cached or static value, a skip, a registered fallback
        service), else call `fallback` with the same arguments."""
        rules = Rules(max_attempts=max_attempts, fallbacks=fallbacks, fallback=fallback)
        return self._following(service, operation, rules, None, None)

    def call(
        self,
        service: str,
        fn: Callable[..., R],
        *args: Any,
        operation: str = "",
        fallbacks: Fallbacks | None = None,
        cache_key: str | None = None,
        max_attempts: int | None = None,
        max_delay_s: float | None = None,
        task_id: str | None = None,
        idempotency_key: str | None = None,
        **kwargs: Any,
    ) -> R | Any:
        """Run `fn(*args, **kwargs)` under the guard and, on failure, follow the planner's plans: retry after
        their delay, wait, use a fallback (cache/static: its value; service: `fallbacks[service]`; skip: a
        PartialResult), or raise (degrade, escalate, abort) with the plan attached."""
        self._core.check_name(service)
        if inspect.iscoroutinefunction(fn):
            raise TypeError("call() on a coroutine function needs AsyncClient")
        rules = Rules(max_attempts=max_attempts, max_delay_s=max_delay_s, fallbacks=fallbacks)
        return self._follow(service, operation, fn, args, kwargs, rules, cache_key, task_id, idempotency_key)

    def plan(
        self,
        service: str,
        error: BaseException,
        *,
        operation: str = "",
        attempt: int = 1,
        elapsed_s: float = 0.0,
        task_id: str | None = None,
        idempotency_key: str | None = None,
        cache_key: str | None = None,
    ) -> Plan:
        """Ask the planner what to do about `error` (ReboundUnavailableError when it cannot be asked). A breaker's
        refusal (CircuitOpenError) gets the planner's fallback if it has one, else a plan of this SDK's that says
        the circuit is open and when to try again; a local breaker's refusal is planned without asking."""
        if isinstance(error, CircuitOpenError) and error.source == "local":
            return refusal_plan(error, None)
        body = plan_body(service, operation, error, attempt, elapsed_s, task_id, idempotency_key, cache_key)
        try:
            data = check(self._http.post("/api/v1/recovery/plan", json=body))
        except httpx.HTTPError as failure:
            raise unavailable(failure) from failure
        answer = Plan.from_json(data)
        return refusal_plan(error, answer) if isinstance(error, CircuitOpenError) else answer

    def flush(self, timeout_s: float | None = None) -> bool:
        """Send every queued outcome now; False if some could not be sent (they stay queued)."""
        return self._flush_all(deadline=None if timeout_s is None else time.monotonic() + timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the threads and send what is queued (for at most `timeout_s`)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        atexit.unregister(self._at_exit)
        self.flush(timeout_s)
        for client in (self._view_http, self._flush_http, self._http):
            client.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- deciding and reporting --------------------------------------------------------------------------

    def _admit(self, service: str) -> tuple[str, tuple[LocalBreaker, str] | None]:
        """The slow path before a call: (permit_id, (local breaker, its permit) in fail-safe)."""
        kind = self._decide(service)
        if kind == ALLOW:
            return "", None
        if kind == ASK:
            try:
                answer = check(self._http.post(f"/api/v1/breakers/{service}/permit"))
            except (httpx.HTTPError, ReboundUnavailableError) as error:
                self._no_permit(service, error)
            else:
                return self._permitted(service, answer)
        return self._local_permit(service)

    def _decorate(
        self, fn: Callable[P, R], service: str, operation: str, cache_key: CacheKey
    ) -> Callable[P, R]:
        core, fast, items, buffer, flush_at = (
            self._core,
            self._fast,
            self._items,
            self._core.buffer,
            self._flush_at,
        )
        if inspect.iscoroutinefunction(fn):
            return cast(Callable[P, R], self._decorate_async(fn, service, operation, cache_key))

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            if cache_key is None and service in fast:
                started = perf_counter()
                try:
                    result = fn(*args, **kwargs)
                except Exception as error:
                    if not isinstance(error, CircuitOpenError):
                        core.report(service, operation, None, None, None, perf_counter() - started, error)
                    raise
                items.append((service, operation, perf_counter() - started))
                if len(items) >= flush_at:
                    buffer.full()
                return result
            with Guard(self, service, operation, key_for(cache_key, args, kwargs)) as guard:
                result = fn(*args, **kwargs)
                guard.set_result(result)
            return result

        return guarded

    def _decorate_async(
        self, fn: Callable[..., Any], service: str, operation: str, cache_key: CacheKey
    ) -> Callable[..., Any]:
        import asyncio

        @functools.wraps(fn)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            key = key_for(cache_key, args, kwargs)
            slow = None
            if key is not None or service not in self._fast:
                # The slow path may ask the server: in a thread, so that the event loop is not blocked.
                slow = CallState(*await asyncio.to_thread(self._admit, service))
            started = perf_counter()
            try:
                result = await fn(*args, **kwargs)
            except Exception as error:
                if not isinstance(error, CircuitOpenError):
                    self._core.report(service, operation, None, key, slow, perf_counter() - started, error)
                raise
            if slow is not None and key is not None:
                slow.result = (result,)
            self._core.report(service, operation, None, key, slow, perf_counter() - started, None)
            return result

        return guarded

    # --- following plans ---------------------------------------------------------------------------------

    def _following(
        self,
        service: str,
        operation: str,
        rules: Rules,
        task_id: str | None,
        idempotency_key: str | None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        self._core.check_name(service)

        def decorator(fn: Callable[P, R]) -> Callable[P, R]:
            if inspect.iscoroutinefunction(fn):
                raise TypeError("with_retry and with_fallback on a coroutine function need AsyncClient")

            @functools.wraps(fn)
            def run(*args: P.args, **kwargs: P.kwargs) -> R:
                return cast(
                    R,
                    self._follow(service, operation, fn, args, kwargs, rules, None, task_id, idempotency_key),
                )

            return run

        return decorator

    def _follow(
        self,
        service: str,
        operation: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        rules: Rules,
        cache_key: str | None,
        task_id: str | None,
        idempotency_key: str | None,
    ) -> Any:
        f = Following(service, operation, fn, rules, cache_key, task_id, idempotency_key)
        while True:
            try:
                with self.guard(
                    f.target, f.target_op, cache_key=f.target_cache_key, plan_id=f.plan_id
                ) as guard:
                    result = f.call_fn(*args, **kwargs)
                    guard.set_result(result)
                return result
            except Exception as error:
                step = f.next(self._plan_or_none(service, f.failed(error), **f.plan_kwargs()), error)
                if step.kind == VALUE:
                    return step.value
                if step.kind == FALLBACK and step.service is None:
                    assert step.fallback is not None
                    return step.fallback(*args, **kwargs)
                if step.kind == RETRY:
                    self._sleep(step.delay_s)
                elif step.kind == RAISE:
                    assert step.error is not None
                    if step.error is error:
                        raise
                    raise step.error from error

    def _plan_or_none(self, service: str, error: BaseException, **kwargs: Unpack[PlanKwargs]) -> Plan | None:
        try:
            return self.plan(service, error, **kwargs)
        except ReboundUnavailableError as failure:
            log.warning("rebound_client: the planner is unreachable (%s); local backoff", failure)
            return refusal_plan(error, None) if isinstance(error, CircuitOpenError) else None

    def _sleep(self, seconds: float) -> None:
        if self.settings.test_mode:
            self.recorded_delays.append(seconds)
        elif seconds > 0:
            time.sleep(seconds)

    # --- the view thread ---------------------------------------------------------------------------------

    def _refresh(self) -> None:
        sent = time.time()
        try:
            data = check(self._view_http.get("/api/v1/breakers/snapshot"))
        except httpx.HTTPError as error:
            raise unavailable(error) from error
        self._core.apply_snapshot(data, sent, time.time())

    def _details(self, services: set[str], http: httpx.Client | None = None) -> None:
        for service in services:
            try:
                self._core.apply_detail(check((http or self._view_http).get(f"/api/v1/breakers/{service}")))
            except (httpx.HTTPError, ReboundError) as error:
                log.info("rebound_client: no details of %s (%s)", service, error)

    def _view_loop(self) -> None:
        s = self.settings
        backoff = 0.25
        next_refresh = time.monotonic() + s.refresh_s
        while not self._stop.is_set():
            try:
                if not self._core.connected or time.monotonic() >= next_refresh:
                    reconnecting = not self._core.connected
                    self._refresh()
                    next_refresh = time.monotonic() + s.refresh_s
                    if reconnecting:
                        self._wake.set()  # Rebound is back: send what waited for it now
                wait = max(0.0, min(s.events_wait_s, next_refresh - time.monotonic()))
                params = {"after": self._core.last_event_id, "wait": round(wait, 1)}
                data = check(self._view_http.get("/api/v1/breakers/events", params=params))
                self._details(self._core.apply_events(data.get("events") or []))
                backoff = 0.25
            except (httpx.HTTPError, ReboundUnavailableError) as error:
                if self._stop.is_set():
                    return
                self._core.disconnect()
                log.info("rebound_client: view: %s; again in about %.1f s", error, backoff)
                self._stop.wait(jittered(backoff))
                backoff = min(backoff * 2, s.max_backoff_s)
            except ReboundAPIError as error:
                # A revoked key, a missing permission: say so, keep trying slowly.
                log.error("rebound_client: the view was refused: %s", error)
                self._core.disconnect()
                self._stop.wait(s.max_backoff_s)
            except Exception:  # the view must outlive a bug in one answer
                if self._stop.is_set():
                    return  # close() closed the HTTP client under the long-poll: not a bug
                log.exception("rebound_client: the view failed")
                self._stop.wait(s.max_backoff_s)

    # --- the flusher -------------------------------------------------------------------------------------

    def _flush_loop(self) -> None:
        s = self.settings
        backoff = 0.0
        while not self._stop.is_set():
            if backoff:
                self._stop.wait(jittered(backoff))  # after a failure: not cut short by every new outcome
            else:
                self._wake.wait(s.flush_interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                ok = self._flush_all()
            except Exception:
                log.exception("rebound_client: the flush failed")
                ok = False
            backoff = 0.0 if ok else min(max(backoff * 2, 0.25), s.max_backoff_s)

    def _flush_now(self) -> None:
        self._flush_all()

    def _flush_all(self, deadline: float | None = None) -> bool:
        buffer = self._core.buffer
        with self._flush_lock:
            while len(buffer):
                if deadline is not None and time.monotonic() > deadline:
                    return False
                batch = buffer.take(self._take)
                self._core.in_flight = len(batch)
                try:
                    left = self._send_items(batch)
                    if left:
                        buffer.give_back(left)
                        return False
                finally:
                    self._core.in_flight = 0
        return True

    def _send_items(self, items: Items) -> Items:
        """Send outcomes in as many requests as they need; returns those not sent (Rebound unreachable)."""
        bodies = self._bodies(items)
        for index, (body, part, dropped) in enumerate(bodies):
            left = self._send(body, part, dropped)
            if left:
                return left + [item for _, rest, _ in bodies[index + 1 :] for item in rest]
        return []

    def _send(self, body: bytes, items: Items, dropped: int = 0) -> Items:
        try:
            response = self._flush_http.post(
                "/api/v1/outcomes", content=body, headers={"Content-Type": "application/json"}
            )
            check_status(response)
        except (httpx.HTTPError, ReboundUnavailableError) as error:
            return self._not_sent(error, items)
        except ReboundAPIError as error:
            kept = self._refused(error, items)
            if kept is not None:
                return kept
            # One invalid outcome refuses the whole request: halve until it is alone, send the rest.
            middle = len(items) // 2
            left = self._send_items(items[:middle])
            return left + items[middle:] if left else self._send_items(items[middle:])
        self._details(self._sent(items, response, dropped), self._flush_http)
        return []

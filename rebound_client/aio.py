"""The asynchronous client: `AsyncClient(base_url, api_key)`, for asyncio code.

The same decision core as the sync client; the background work (the live view's long-poll, the flusher) runs
as asyncio tasks on the loop that first uses the client, with httpx.AsyncClient. Use it from that loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, Unpack

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
from rebound_client.errors import CircuitOpenError, ReboundAPIError, ReboundError, ReboundUnavailableError
from rebound_client.plans import Plan

log = logging.getLogger("rebound_client")
perf_counter = time.perf_counter
P = ParamSpec("P")
R = TypeVar("R")


class AsyncGuard(GuardBase):
    """`async with client.guard("svc", operation="op") as g:` or `@client.guard("svc")` on a coroutine
    function. One per `async with`; as a decorator it is made once."""

    __slots__ = ()
    _client: AsyncClient

    async def __aenter__(self) -> AsyncGuard:
        self._slow = None if self._on_fast_path() else CallState(*await self._client._admit(self.service))
        self._started = perf_counter()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        # A cancelled or interrupted call did not finish: nothing to report, nothing to flush.
        if self._finish(perf_counter() - self._started, error) and self._client.settings.test_mode:
            await self._client.flush()

    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        return self._client._decorate(fn, self.service, self.operation, self.cache_key)


class AsyncClient(ClientBase[httpx.AsyncBaseTransport]):
    """A Rebound client for asyncio code. `async with AsyncClient(url, key) as client:`, or call `await
    client.start()` (the first guarded call starts it otherwise) and `await client.aclose()`.

    The same options as `Client`; `test_mode=True` sleeps nowhere (waits go to `recorded_delays`) and sends
    each outcome before the guarded block returns.
    """

    # The constructor and its options are ClientBase's: `AsyncClient(base_url, api_key, *, test_mode=False,
    # ..., transport=None)`, with `transport` an httpx.AsyncBaseTransport.

    def _open(
        self,
        settings: Settings,
        on_change: Callable[[Change], None] | None,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self._transport = transport
        self._wake: asyncio.Event | None = None
        self._setup(settings, on_change, self._poke)
        self._tasks: list[asyncio.Task[None]] = []
        self._http: httpx.AsyncClient | None = None
        self._flush_http: httpx.AsyncClient | None = None
        self._view_http: httpx.AsyncClient | None = None
        self._flush_lock: asyncio.Lock | None = None
        self._started = False
        self._closed = False

    # --- life --------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the fleet's breakers (one request) and start the background tasks."""
        if self._started:
            return
        self._started = True
        s = self.settings

        def http(read_s: float) -> httpx.AsyncClient:
            timeout = httpx.Timeout(s.timeout_s, read=read_s)
            return httpx.AsyncClient(
                base_url=s.base_url,
                headers=s.headers,
                timeout=timeout,
                transport=self._transport,
                event_hooks={"request": [_tracing.inject_async]},
            )

        self._http = http(s.timeout_s)
        self._flush_http = http(max(s.timeout_s, 10.0))
        self._view_http = http(s.events_wait_s + s.timeout_s + 5)
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        try:
            await self._refresh()
        except ReboundError as error:
            log.warning(
                "rebound_client: no view of the fleet yet (%s); local fail-safe breakers decide", error
            )
        self._tasks.append(asyncio.create_task(self._view_loop(), name="rebound-view"))
        if not s.test_mode:
            self._tasks.append(asyncio.create_task(self._flush_loop(), name="rebound-flush"))

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Stop the background tasks and send what is queued (for at most `timeout_s`)."""
        if self._closed or not self._started:
            self._closed = True
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.flush(timeout_s)
        for client in (self._view_http, self._flush_http, self._http):
            if client is not None:
                await client.aclose()

    async def __aenter__(self) -> AsyncClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # --- public ------------------------------------------------------------------------------------------

    def guard(
        self,
        service: str,
        operation: str = "",
        *,
        cache_key: str | None = None,
        plan_id: str | None = None,
    ) -> AsyncGuard:
        if service not in self._core.names:  # checked once per name: this is on the hot path
            self._core.check_name(service)
        return AsyncGuard(self, service, operation, cache_key, plan_id)

    def with_circuit_breaker(
        self, service: str, operation: str = "", *, cache_key: CacheKey = None
    ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
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
    ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
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
    ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
        rules = Rules(max_attempts=max_attempts, fallbacks=fallbacks, fallback=fallback)
        return self._following(service, operation, rules, None, None)

    async def call(
        self,
        service: str,
        fn: Callable[..., Any],
        *args: Any,
        operation: str = "",
        fallbacks: Fallbacks | None = None,
        cache_key: str | None = None,
        max_attempts: int | None = None,
        max_delay_s: float | None = None,
        task_id: str | None = None,
        idempotency_key: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """As `Client.call`; `fn` and the fallbacks may be coroutine functions or plain ones."""
        self._core.check_name(service)
        rules = Rules(max_attempts=max_attempts, max_delay_s=max_delay_s, fallbacks=fallbacks)
        return await self._follow(
            service, operation, fn, args, kwargs, rules, cache_key, task_id, idempotency_key
        )

    async def plan(
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
        """As `Client.plan`."""
        if isinstance(error, CircuitOpenError) and error.source == "local":
            return refusal_plan(error, None)
        await self.start()
        assert self._http is not None
        body = plan_body(service, operation, error, attempt, elapsed_s, task_id, idempotency_key, cache_key)
        try:
            data = check(await self._http.post("/api/v1/recovery/plan", json=body))
        except httpx.HTTPError as failure:
            raise unavailable(failure) from failure
        answer = Plan.from_json(data)
        return refusal_plan(error, answer) if isinstance(error, CircuitOpenError) else answer

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Send every queued outcome now; False if some could not be sent (they stay queued)."""
        if not self._started:
            await self.start()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        return await self._flush_all(deadline)

    # --- deciding and reporting --------------------------------------------------------------------------

    async def _admit(self, service: str) -> tuple[str, tuple[LocalBreaker, str] | None]:
        if not self._started:
            await self.start()
            if service in self._fast:
                return "", None
        kind = self._decide(service)
        if kind == ALLOW:
            return "", None
        if kind == ASK:
            assert self._http is not None
            try:
                answer = check(await self._http.post(f"/api/v1/breakers/{service}/permit"))
            except (httpx.HTTPError, ReboundUnavailableError) as error:
                self._no_permit(service, error)
            else:
                return self._permitted(service, answer)
        return self._local_permit(service)

    def _decorate(
        self, fn: Callable[P, Awaitable[R]], service: str, operation: str, cache_key: CacheKey
    ) -> Callable[P, Awaitable[R]]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError("AsyncClient guards coroutine functions; use Client for synchronous ones")
        core, fast, items, buffer, flush_at = (
            self._core,
            self._fast,
            self._items,
            self._core.buffer,
            self._flush_at,
        )
        test_mode = self.settings.test_mode

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            if cache_key is None and service in fast and not test_mode:
                started = perf_counter()
                try:
                    result = await fn(*args, **kwargs)
                except Exception as error:
                    if not isinstance(error, CircuitOpenError):
                        core.report(service, operation, None, None, None, perf_counter() - started, error)
                    raise
                items.append((service, operation, perf_counter() - started))
                if len(items) >= flush_at:
                    buffer.full()
                return result
            async with AsyncGuard(self, service, operation, key_for(cache_key, args, kwargs), None) as guard:
                result = await fn(*args, **kwargs)
                guard.set_result(result)
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
    ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
        self._core.check_name(service)

        def decorator(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
            if not inspect.iscoroutinefunction(fn):
                raise TypeError("AsyncClient decorates coroutine functions; use Client for synchronous ones")

            @functools.wraps(fn)
            async def run(*args: P.args, **kwargs: P.kwargs) -> R:
                result: R = await self._follow(
                    service, operation, fn, args, kwargs, rules, None, task_id, idempotency_key
                )
                return result

            return run

        return decorator

    async def _follow(
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
                async with self.guard(
                    f.target, f.target_op, cache_key=f.target_cache_key, plan_id=f.plan_id
                ) as guard:
                    result = await _maybe_await(f.call_fn(*args, **kwargs))
                    guard.set_result(result)
                return result
            except Exception as error:
                step = f.next(await self._plan_or_none(service, f.failed(error), **f.plan_kwargs()), error)
                if step.kind == VALUE:
                    return step.value
                if step.kind == FALLBACK and step.service is None:
                    assert step.fallback is not None
                    return await _maybe_await(step.fallback(*args, **kwargs))
                if step.kind == RETRY:
                    await self._sleep(step.delay_s)
                elif step.kind == RAISE:
                    assert step.error is not None
                    if step.error is error:
                        raise
                    raise step.error from error

    async def _plan_or_none(
        self, service: str, error: BaseException, **kwargs: Unpack[PlanKwargs]
    ) -> Plan | None:
        try:
            return await self.plan(service, error, **kwargs)
        except ReboundUnavailableError as failure:
            log.warning("rebound_client: the planner is unreachable (%s); local backoff", failure)
            return refusal_plan(error, None) if isinstance(error, CircuitOpenError) else None

    async def _sleep(self, seconds: float) -> None:
        if self.settings.test_mode:
            self.recorded_delays.append(seconds)
        elif seconds > 0:
            await asyncio.sleep(seconds)

    # --- the view task -----------------------------------------------------------------------------------

    async def _refresh(self) -> None:
        assert self._view_http is not None
        sent = time.time()
        try:
            data = check(await self._view_http.get("/api/v1/breakers/snapshot"))
        except httpx.HTTPError as error:
            raise unavailable(error) from error
        self._core.apply_snapshot(data, sent, time.time())

    async def _details(self, services: set[str], http: httpx.AsyncClient) -> None:
        for service in services:
            try:
                self._core.apply_detail(check(await http.get(f"/api/v1/breakers/{service}")))
            except (httpx.HTTPError, ReboundError) as error:
                log.info("rebound_client: no details of %s (%s)", service, error)

    async def _view_loop(self) -> None:
        s = self.settings
        assert self._view_http is not None
        backoff = 0.25
        next_refresh = time.monotonic() + s.refresh_s
        while True:
            try:
                if not self._core.connected or time.monotonic() >= next_refresh:
                    reconnecting = not self._core.connected
                    await self._refresh()
                    next_refresh = time.monotonic() + s.refresh_s
                    if reconnecting:
                        self._poke()  # Rebound is back: send what waited for it now
                wait = max(0.0, min(s.events_wait_s, next_refresh - time.monotonic()))
                params = {"after": self._core.last_event_id, "wait": round(wait, 1)}
                data = check(await self._view_http.get("/api/v1/breakers/events", params=params))
                await self._details(self._core.apply_events(data.get("events") or []), self._view_http)
                backoff = 0.25
            except (httpx.HTTPError, ReboundUnavailableError) as error:
                self._core.disconnect()
                log.info("rebound_client: view: %s; again in about %.1f s", error, backoff)
                await asyncio.sleep(jittered(backoff))
                backoff = min(backoff * 2, s.max_backoff_s)
            except ReboundAPIError as error:
                log.error("rebound_client: the view was refused: %s", error)
                self._core.disconnect()
                await asyncio.sleep(s.max_backoff_s)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("rebound_client: the view failed")
                await asyncio.sleep(s.max_backoff_s)

    # --- the flusher -------------------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        s = self.settings
        assert self._wake is not None
        backoff = 0.0
        while True:
            if backoff:
                await asyncio.sleep(jittered(backoff))  # after a failure: not cut short by every new outcome
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), s.flush_interval_s)
            self._wake.clear()
            try:
                ok = await self._flush_all()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("rebound_client: the flush failed")
                ok = False
            backoff = 0.0 if ok else min(max(backoff * 2, 0.25), s.max_backoff_s)

    async def _flush_all(self, deadline: float | None = None) -> bool:
        buffer = self._core.buffer
        assert self._flush_lock is not None
        async with self._flush_lock:
            while len(buffer):
                if deadline is not None and time.monotonic() > deadline:
                    return False
                batch = buffer.take(self._take)
                self._core.in_flight = len(batch)
                try:
                    left = await self._send_items(batch)
                    if left:
                        buffer.give_back(left)
                        return False
                finally:
                    self._core.in_flight = 0
        return True

    async def _send_items(self, items: Items) -> Items:
        bodies = self._bodies(items)
        for index, (body, part, dropped) in enumerate(bodies):
            left = await self._send(body, part, dropped)
            if left:
                return left + [item for _, rest, _ in bodies[index + 1 :] for item in rest]
        return []

    async def _send(self, body: bytes, items: Items, dropped: int = 0) -> Items:
        http = self._flush_http
        assert http is not None
        try:
            response = await http.post(
                "/api/v1/outcomes", content=body, headers={"Content-Type": "application/json"}
            )
            check_status(response)
        except (httpx.HTTPError, ReboundUnavailableError) as error:
            return self._not_sent(error, items)
        except ReboundAPIError as error:
            kept = self._refused(error, items)
            if kept is not None:
                return kept
            middle = len(items) // 2
            left = await self._send_items(items[:middle])
            return left + items[middle:] if left else await self._send_items(items[middle:])
        await self._details(self._sent(items, response, dropped), http)
        return []


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value

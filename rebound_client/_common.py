"""What both clients share: their settings, how an answer is read, the body of a plan request, and all they
decide without I/O (the guard's bookkeeping, a permit's answer, what to keep of a batch that was not sent)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

from rebound_client._breaker import LocalBreaker
from rebound_client._core import REFUSE, Body, CallState, Change, Core, Decision, Encoder
from rebound_client._describe import describe
from rebound_client.errors import CircuitOpenError, ReboundAPIError, ReboundUnavailableError

log = logging.getLogger("rebound_client")
USER_AGENT = "rebound-client/0.1"
CacheKey = str | Callable[..., str] | None
# httpx.BaseTransport for `Client`, httpx.AsyncBaseTransport for `AsyncClient`.
TransportT = TypeVar("TransportT", httpx.BaseTransport, httpx.AsyncBaseTransport)


@dataclass(kw_only=True, eq=False)
class Settings:
    """The knobs shared by both clients, checked and normalised. Their defaults are those of
    `ClientBase.__init__`, the one constructor of both clients (see the clients' docstrings)."""

    base_url: str
    api_key: str = field(repr=False)
    test_mode: bool
    timeout_s: float
    flush_interval_s: float
    flush_at: int
    buffer_size: int
    max_batch: int
    refresh_s: float
    events_wait_s: float
    max_backoff_s: float

    def __post_init__(self) -> None:
        if not self.base_url:
            raise ValueError("base_url is required, e.g. http://rebound.internal:8000")
        if not self.api_key:
            raise ValueError("api_key is required: an agent key rb_<prefix>_<secret>")
        self.base_url = self.base_url.rstrip("/")
        # Test mode flushes synchronously, after every outcome, so that a test sees its effect at once.
        self.flush_at = 1 if self.test_mode else max(1, self.flush_at)
        self.buffer_size = max(1, self.buffer_size)
        self.max_batch = max(1, self.max_batch)

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.api_key}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }


def check(response: httpx.Response) -> Any:
    """The answer's JSON; 5xx and 429 mean Rebound is unavailable (fail-safe), other 4xx are our mistake."""
    check_status(response)
    return response.json() if response.content else None


def check_status(response: httpx.Response) -> None:
    status = response.status_code
    if status < 400:
        return
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text[:500]
    if status >= 500 or status == 429:
        raise ReboundUnavailableError(f"Rebound answered {status}")
    detail = body.get("detail") if isinstance(body, dict) else body
    raise ReboundAPIError(f"Rebound answered {status}: {detail}", status_code=status, body=body)


def transitions_in(response: httpx.Response) -> list[dict[str, Any]]:
    """The answers of a flush that carry a transition. Most flushes cause none, and then the answer (one
    object per outcome) is not even parsed: the flusher shares the GIL with the guarded calls."""
    content = response.content
    if b'"transition":{' not in content and b'"transition": {' not in content:
        return []
    data = response.json()
    results = data.get("results") if isinstance(data, dict) else [data]
    return [r for r in results or [] if isinstance(r, dict) and r.get("transition")]


def unavailable(error: httpx.HTTPError) -> ReboundUnavailableError:
    return ReboundUnavailableError(f"Rebound is unreachable: {type(error).__name__}: {error}")


def jittered(seconds: float) -> float:
    return seconds * random.uniform(0.5, 1.0)


def plan_body(
    service: str,
    operation: str,
    error: BaseException,
    attempt: int,
    elapsed_s: float,
    task_id: str | None,
    idempotency_key: str | None,
    cache_key: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "service": service,
        "operation": operation,
        "error": describe(error),
        "attempt": attempt,
        "elapsed_s": round(elapsed_s, 3),
    }
    if task_id:
        body["task_id"] = task_id
    if idempotency_key:
        body["idempotency_key"] = idempotency_key
    if cache_key:
        body["cache_key"] = cache_key
    return body


def open_error(service: str, decision: Decision) -> CircuitOpenError:
    return CircuitOpenError(
        service, state=decision.state, retry_after_s=decision.retry_after_s, reason=decision.reason
    )


def key_for(cache_key: CacheKey, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str | None:
    if cache_key is None or isinstance(cache_key, str):
        return cache_key
    return str(cache_key(*args, **kwargs))


Items = list[tuple[Any, ...]]
PLAIN_FOR_S = 600.0  # how long a client sends single outcomes after a server refused runs


def _knows_no_runs(body: Any) -> bool:
    """Whether a 400 refused a batch for its runs (`successes`, `durations_ms`) or its `dropped` count as fields
    the server does not know: a server older than the compact form."""
    errors = body.get("errors") if isinstance(body, dict) else None
    return any(
        isinstance(e, dict)
        and str(e.get("field", "")).rsplit(".", 1)[-1] in ("successes", "durations_ms", "dropped")
        and "xtra" in str(e.get("message", ""))
        for e in errors or []
    )


class ClientBase(Generic[TransportT]):
    """What `Client` and `AsyncClient` hold and decide apart from their I/O: their constructor and options,
    the settings, the decision core, the encoder, the views of them, and what to make of the server's
    answers."""

    settings: Settings

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        test_mode: bool = False,
        timeout_s: float = 5.0,
        flush_interval_s: float = 0.2,
        flush_at: int = 1000,
        buffer_size: int = 50_000,
        max_batch: int = 2000,
        refresh_s: float = 30.0,
        events_wait_s: float = 25.0,
        max_backoff_s: float = 5.0,
        on_change: Callable[[Change], None] | None = None,
        transport: TransportT | None = None,
    ) -> None:
        settings = Settings(
            base_url=base_url,
            api_key=api_key,
            test_mode=test_mode,
            timeout_s=timeout_s,
            flush_interval_s=flush_interval_s,
            flush_at=flush_at,
            buffer_size=buffer_size,
            max_batch=max_batch,
            refresh_s=refresh_s,
            events_wait_s=events_wait_s,
            max_backoff_s=max_backoff_s,
        )
        self._open(settings, on_change, transport)

    def _open(
        self, settings: Settings, on_change: Callable[[Change], None] | None, transport: TransportT | None
    ) -> None:
        """The rest of the constructor, each client's own: its HTTP clients and background work. It calls
        `_setup`."""
        raise NotImplementedError

    def _setup(
        self, settings: Settings, on_change: Callable[[Change], None] | None, wake: Callable[[], None]
    ) -> None:
        self.settings = settings
        self.recorded_delays: list[float] = []
        self._core = Core(capacity=settings.buffer_size, flush_at=settings.flush_at, wake=wake)
        if on_change is not None:
            self._core.listeners.append(on_change)
        # The hot path's lookups, bound once.
        self._fast = self._core.fast
        self._items = self._core.buffer.items
        self._flush_at = self._core.buffer.check_at
        self._encoder = Encoder(settings.max_batch)
        # Outcomes one flush takes from the buffer: sent as runs, tens of thousands fit in a request or two.
        self._take = settings.max_batch * 25

    def state(self, service: str) -> str:
        """The breaker's state as this process sees it now."""
        return self._core.state_of(service)

    @property
    def connected(self) -> bool:
        """Whether the live view is current (False: Rebound is unreachable and local breakers decide)."""
        return self._core.connected

    def stats(self) -> dict[str, Any]:
        """What became of this client's outcomes: `delivered` (accepted by the server, also `sent`), `queued`
        (in the buffer), `in_flight` (in a request not answered yet), `buffered` (the two), `dropped` (let go,
        oldest first, by the full buffer), `dropped_reported` (of those, told to the server, which counts them in
        `sdk_outcomes_dropped_total`), `rejected` (refused by the server as invalid); and the view's state."""
        core = self._core
        queued, in_flight = len(core.buffer), core.in_flight
        return {
            "connected": core.connected,
            "delivered": core.sent,
            "sent": core.sent,
            "queued": queued,
            "in_flight": in_flight,
            "buffered": queued + in_flight,
            "dropped": core.buffer.dropped,
            "dropped_reported": core.drops_told,
            "rejected": core.rejected,
            "last_event_id": core.last_event_id,
        }

    def _bodies(self, items: Items) -> list[Body]:
        """The requests a batch needs; the first tells the server of the drops it has not heard of yet."""
        return self._encoder.bodies(items, self._core.buffer.dropped - self._core.drops_told)

    # --- before a call on the slow path ------------------------------------------------------------------

    def _decide(self, service: str) -> str:
        """ALLOW, ASK (the server's permit) or LOCAL (the local fail-safe breaker); a refusal raises."""
        decision = self._core.decide(service)
        if decision.kind == REFUSE:
            raise open_error(service, decision)
        return decision.kind

    def _permitted(self, service: str, answer: Any) -> tuple[str, None]:
        """The server's answer to a permit request: its permit id, or CircuitOpenError."""
        self._core.apply_permit(service, answer)
        if answer.get("allowed"):
            return str(answer.get("permit_id") or ""), None
        retry = answer.get("retry_after_s")
        raise CircuitOpenError(
            service,
            state=str(answer.get("state")),
            retry_after_s=float(retry) if isinstance(retry, int | float) else None,
            reason=str(answer.get("reason") or ""),
        )

    def _no_permit(self, service: str, error: Exception) -> None:
        log.warning("rebound_client: no permit for %s (%s); the local breaker decides", service, error)

    def _local_permit(self, service: str) -> tuple[str, tuple[LocalBreaker, str]]:
        """The local fail-safe breaker's permit (CircuitOpenError when it refuses)."""
        local = self._core.local_breaker(service)
        result = local.permit()
        if not result.allowed:
            raise CircuitOpenError(
                service,
                state=result.state,
                retry_after_s=result.retry_after_ms / 1000,
                reason=f"local fail-safe breaker: {result.reason}",
                source="local",
            )
        return "", (local, result.permit_id)

    # --- after a flush -----------------------------------------------------------------------------------

    def _not_sent(self, error: Exception, items: Items) -> Items:
        """Rebound could not be reached (or was unavailable): the batch stays queued."""
        if isinstance(error, httpx.ConnectError):
            self._core.disconnect()
        log.info("rebound_client: outcomes not sent: %s", error)
        return items

    def _refused(self, error: ReboundAPIError, items: Items) -> Items | None:
        """What to keep of a batch Rebound refused: all of it (the key was refused), nothing (one invalid
        outcome: dropped), or None: split it, since one invalid outcome refuses the whole request."""
        if error.status_code in (401, 403):
            log.error("rebound_client: outcomes refused: %s", error)
            return items
        if self._encoder.compact and error.status_code == 400 and _knows_no_runs(error.body):
            log.warning(
                "rebound_client: Rebound does not take runs of outcomes (an older server): one outcome per item "
                "for the next %.0f s",
                PLAIN_FOR_S,
            )
            self._encoder.plain_until = time.monotonic() + PLAIN_FOR_S
            return None  # sent again, in halves, each as single outcomes
        if len(items) > 1:
            return None
        self._core.rejected += 1
        log.error("rebound_client: an outcome was refused and dropped: %s", error)
        return []

    def _sent(self, items: Items, response: httpx.Response, dropped: int = 0) -> set[str]:
        """Count a batch the server accepted (and the drops it told of); the services whose details to fetch (a
        transition happened)."""
        self._core.sent += len(items)
        self._core.drops_told += dropped
        results = transitions_in(response)
        return self._core.apply_outcome_answers(results) if results else set()


class GuardBase:
    """What `Guard` and `AsyncGuard` share: their fields, the permit, the result to cache, and queueing the
    outcome after the call."""

    __slots__ = ("_client", "_slow", "_started", "cache_key", "operation", "plan_id", "service")
    _slow: CallState | None  # set on entry: None on the hot path
    _started: float

    def __init__(
        self,
        client: ClientBase[Any],
        service: str,
        operation: str,
        cache_key: str | None = None,
        plan_id: str | None = None,
    ) -> None:
        self._client = client
        self.service = service
        self.operation = operation
        self.cache_key = cache_key
        self.plan_id = plan_id

    @property
    def permit_id(self) -> str:
        """The server's trial permit this call went ahead on ('' when none was needed)."""
        return self._slow.permit_id if self._slow is not None else ""

    def _on_fast_path(self) -> bool:
        # The hot path: nothing to ask, nothing to remember.
        return self.service in self._client._fast and self.cache_key is None and self.plan_id is None

    def set_result(self, value: object) -> None:
        """The call's result, sent with the success outcome when the guard has a `cache_key` (the planner's
        cache fallback serves it when the service fails later); without one it is not kept."""
        if self.cache_key is not None and self._slow is not None:
            self._slow.result = (value,)

    def _finish(self, duration: float, error: BaseException | None) -> bool:
        """Queue the call's outcome; False when the call did not finish (KeyboardInterrupt, SystemExit,
        GeneratorExit, a cancellation) and there is nothing to report."""
        client = self._client
        if error is None:
            if self._slow is None:
                items = client._items
                items.append((self.service, self.operation, duration))
                if len(items) >= client._flush_at:
                    client._core.buffer.full()
                return True
        elif not isinstance(error, Exception) or isinstance(error, CircuitOpenError):
            return False
        client._core.report(
            self.service, self.operation, self.plan_id, self.cache_key, self._slow, duration, error
        )
        return True

"""What both clients share: their settings, how an answer is read, the body of a plan request."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from rebound_client._core import Decision
from rebound_client._describe import describe
from rebound_client.errors import CircuitOpenError, ReboundAPIError, ReboundUnavailableError

USER_AGENT = "rebound-client/0.1"
CacheKey = str | Callable[..., str] | None


class Settings:
    """The knobs shared by both clients (see the constructors' docstrings)."""

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
    ) -> None:
        if not base_url:
            raise ValueError("base_url is required, e.g. http://rebound.internal:8000")
        if not api_key:
            raise ValueError("api_key is required: an agent key rb_<prefix>_<secret>")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.test_mode = test_mode
        self.timeout_s = timeout_s
        self.flush_interval_s = flush_interval_s
        # Test mode flushes synchronously, after every outcome, so that a test sees its effect at once.
        self.flush_at = 1 if test_mode else max(1, flush_at)
        self.buffer_size = max(1, buffer_size)
        self.max_batch = max(1, max_batch)
        self.refresh_s = refresh_s
        self.events_wait_s = events_wait_s
        self.max_backoff_s = max_backoff_s

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


def transitions_in(response: httpx.Response) -> list[Any]:
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

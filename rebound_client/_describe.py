"""What an exception says about a failed call, in the shape of the error object of `POST /api/v1/outcomes`,
and how the local fail-safe breaker counts it."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from rebound_client._breaker import Outcome

MESSAGE_MAX = 2000  # the server takes 10,000; an error's first lines are what classifies it
MAX_RETRY_AFTER_S = 86_400.0  # the server's MAX_RETRY_AFTER_S by default


def type_name(exc: BaseException) -> str:
    """`httpx.ConnectTimeout`, `TimeoutError`: the module's public name and the class, as rules name them."""
    kind = type(exc)
    module = kind.__module__
    name = kind.__qualname__ if module in ("builtins", "__main__") else f"{module}.{kind.__qualname__}"
    return name[:200]


def describe(exc: BaseException) -> dict[str, Any]:
    """type, message, and the HTTP status and Retry-After when the exception carries a response (httpx's
    HTTPStatusError, requests' HTTPError, most provider SDKs) or has them as attributes."""
    error: dict[str, Any] = {"type": type_name(exc)}
    message = str(exc)
    if message:
        error["message"] = message[:MESSAGE_MAX]
    response = getattr(exc, "response", None)
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        status = getattr(response, "status_code", None)
    if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599:
        error["status_code"] = status
    retry_after = _retry_after_header(response)
    if retry_after is not None:
        error["headers"] = {"Retry-After": retry_after}
    else:
        attribute = getattr(exc, "retry_after", None)
        if (
            isinstance(attribute, int | float)
            and not isinstance(attribute, bool)
            and 0 <= attribute < math.inf
        ):
            error["retry_after"] = float(attribute)  # finite: JSON has no Infinity
    return error


def _retry_after_header(response: object) -> str | None:
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        value = headers.get("retry-after") or headers.get("Retry-After")
    except Exception:  # a foreign object with a strange `headers`: there is simply no Retry-After
        return None
    return str(value)[:100] if value else None


def retry_after_s(error: dict[str, Any]) -> float | None:
    """Seconds from `retry_after` or a Retry-After header (seconds or an HTTP date)."""
    value = error.get("retry_after")
    if value is None:
        value = (error.get("headers") or {}).get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        pass
    else:
        # NaN says nothing; no wait is longer than the server's cap, MAX_RETRY_AFTER_S (a day by default).
        return None if math.isnan(seconds) else min(max(0.0, seconds), MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(str(value))
        return min(max(0.0, (when - datetime.now(UTC)).total_seconds()), MAX_RETRY_AFTER_S)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def counts_as(error: dict[str, Any] | None, *, permit_id: str = "", slow: bool = False) -> Outcome:
    """How the local breaker counts an outcome while the server cannot classify it: as the built-in rules do,
    a 4xx other than 408 and 429 is the caller's fault and does not count; a 429 with Retry-After opens the
    breaker until then; any other failure counts. A success slower than the service's slow-call limit counts
    as a failure."""
    if error is None:
        return Outcome(failure=slow, permit_id=permit_id)
    status = error.get("status_code")
    if isinstance(status, int) and 400 <= status < 500 and status not in (408, 429):
        return Outcome(failure=False, ignored=True, permit_id=permit_id)
    wait = retry_after_s(error) if status == 429 else None
    return Outcome(failure=True, permit_id=permit_id, retry_after_ms=int(wait * 1000) if wait else 0)

"""The SDK's exceptions. Each one raised after the planner answered carries that answer as `plan`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from rebound_client.plans import Plan


class ReboundError(Exception):
    """The base of every exception this SDK raises."""

    def __init__(self, message: str, *, plan: Plan | None = None, error: BaseException | None = None) -> None:
        super().__init__(message)
        self.plan = plan
        self.error = error  # the failure that led here, when there was one


class CircuitOpenError(ReboundError):
    """The service's breaker refuses calls now. `retry_after_s` says for how long and `retry_at` until when (UTC),
    when that is known (an operator's override may have no end); `source` says whose breaker refused: `fleet`
    (the fleet's, as Rebound said or as this process's view of it says) or `local` (this process's fail-safe
    breaker, deciding while Rebound is unreachable)."""

    def __init__(
        self,
        service: str,
        *,
        state: str = "open",
        retry_after_s: float | None = None,
        reason: str = "",
        plan: Plan | None = None,
        source: str = "fleet",
    ) -> None:
        self.service = service
        self.state = state
        self.retry_after_s = retry_after_s
        self.retry_at = _after(retry_after_s)
        self.reason = reason
        self.source = source
        super().__init__(f"circuit {self.describe()}", plan=plan)

    def describe(self) -> str:
        """`open for 'svc' (local fail-safe breaker): retry after 29.5 s, at 2026-01-05T10:00:03Z`."""
        whose = " (local fail-safe breaker)" if self.source == "local" else ""
        text = f"{self.state.replace('_', ' ')} for {self.service!r}{whose}"
        if self.retry_after_s is None:
            return text + ", with no end set"
        if self.retry_at is None:
            return f"{text}: retry after {self.retry_after_s:g} s"
        return f"{text}: retry after {self.retry_after_s:.1f} s, at {iso(self.retry_at)}"


def _after(seconds: float | None) -> datetime | None:
    """Now plus `seconds`, in UTC; None for no time, or one no calendar holds (an absurd Retry-After)."""
    if seconds is None:
        return None
    try:
        return datetime.now(UTC) + timedelta(seconds=seconds)
    except (OverflowError, ValueError):
        return None


def iso(when: datetime) -> str:
    """UTC to the second, as `2026-01-05T10:00:03Z`."""
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class RecoveryAbortedError(ReboundError):
    """The planner says the failure cannot be recovered from by retrying (a validation error, a fatal one)."""


class EscalatedError(ReboundError):
    """The planner says a human must act (an authentication or permission failure, an exhausted recovery)."""


class DegradedError(ReboundError):
    """The planner says the fleet is degraded and this work should not be done now."""


class RetriesExhaustedError(ReboundError):
    """Every attempt allowed failed."""

    def __init__(
        self, message: str, *, attempts: int, plan: Plan | None = None, error: BaseException | None = None
    ) -> None:
        super().__init__(message, plan=plan, error=error)
        self.attempts = attempts


class FallbackUnavailableError(ReboundError):
    """The planner chose a fallback this process cannot run (no callable registered for that service)."""


class ReboundAPIError(ReboundError):
    """Rebound answered with an error this SDK cannot work around (a bad request, a missing permission)."""

    def __init__(self, message: str, *, status_code: int, body: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class ReboundUnavailableError(ReboundError):
    """Rebound could not be reached (inside the SDK, this sends it to its fail-safe)."""

"""The SDK's exceptions. Each one raised after the planner answered carries that answer as `plan`."""

from __future__ import annotations

from typing import Any

from rebound_client.plans import Plan


class ReboundError(Exception):
    """The base of every exception this SDK raises."""

    def __init__(self, message: str, *, plan: Plan | None = None, error: BaseException | None = None) -> None:
        super().__init__(message)
        self.plan = plan
        self.error = error  # the failure that led here, when there was one


class CircuitOpenError(ReboundError):
    """The service's breaker refuses calls now; `retry_after_s` says for how long, when that is known."""

    def __init__(
        self,
        service: str,
        *,
        state: str = "open",
        retry_after_s: float | None = None,
        reason: str = "",
        plan: Plan | None = None,
    ) -> None:
        wait = f"; retry after {retry_after_s:.1f} s" if retry_after_s is not None else ""
        super().__init__(f"the circuit breaker of {service!r} is {state}{wait}", plan=plan)
        self.service = service
        self.state = state
        self.retry_after_s = retry_after_s
        self.reason = reason


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

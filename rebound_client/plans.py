"""The recovery planner's answer, typed: what `POST /api/v1/recovery/plan` says to do after a failure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

ACTIONS = ("retry", "fallback", "wait", "degrade", "escalate", "abort")


@dataclass(frozen=True)
class Fallback:
    """The option the planner chose: another service (`service`, `operation`), the cached last good result or
    a static default (`value`), or skipping the work with a `warning`."""

    kind: str  # service | cache | static | skip
    position: int | None = None
    service: str | None = None
    operation: str | None = None
    value: Any = None
    cached_at: str | None = None
    warning: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Fallback | None:
        if not isinstance(data, Mapping) or not data.get("kind"):
            return None
        position = data.get("position")
        return cls(
            kind=str(data["kind"]),
            position=int(position) if isinstance(position, int | float) else None,
            service=_str(data.get("service")),
            operation=_str(data.get("operation")),
            value=data.get("value"),
            cached_at=_str(data.get("cached_at")),
            warning=_str(data.get("warning")),
        )


@dataclass(frozen=True)
class Plan:
    """One answer to "it failed: what now?". `raw` keeps the whole answer, fields this SDK does not know too.

    A plan with no `plan_id` was made by this SDK, not by the planner: for a call a breaker refused (its
    `error_class` is `circuit_open`, `retry_at` says when the breaker lets a trial call through)."""

    plan_id: str
    action: str  # retry | fallback | wait | degrade | escalate | abort
    reason: str = ""
    delay_s: float | None = None
    fallback: Fallback | None = None
    attempts_left: int | None = None
    error_class: str | None = None
    severity: str | None = None
    kind: str | None = None
    retry_after_s: float | None = None
    breaker_state: str | None = None
    degradation_level: str | None = None
    policy: Any = None
    retry_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        return cls(
            plan_id=str(data.get("plan_id") or ""),
            action=str(data.get("action") or "abort"),
            reason=str(data.get("reason") or ""),
            delay_s=_float(data.get("delay_s")),
            fallback=Fallback.from_json(data.get("fallback")),
            attempts_left=int(data["attempts_left"]) if isinstance(data.get("attempts_left"), int) else None,
            error_class=_str(data.get("error_class")),
            severity=_str(data.get("severity")),
            kind=_str(data.get("kind")),
            retry_after_s=_float(data.get("retry_after_s")),
            breaker_state=_str(data.get("breaker_state")),
            degradation_level=_str(data.get("degradation_level")),
            policy=data.get("policy"),
            retry_at=_datetime(data.get("retry_at")),
            raw=dict(data),
        )

    @property
    def from_planner(self) -> bool:
        """Whether Rebound's planner made this plan (False: this SDK did, without asking it)."""
        return bool(self.plan_id)

    @property
    def wait_s(self) -> float:
        """How long to wait before the next attempt: the delay, or the Retry-After when that is all there is."""
        for value in (self.delay_s, self.retry_after_s):
            if value is not None and value > 0:
                return value
        return 0.0


@dataclass(frozen=True)
class PartialResult:
    """What `call` returns when the plan is to skip non-critical work: no value, and the warning why."""

    warning: str
    plan: Plan | None = None
    value: Any = None

    def __bool__(self) -> bool:
        return False


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _datetime(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None

"""Following the planner's plans: given the answer (or none, when Rebound cannot be reached), the next step.

Pure: the sync and the async client run the steps (sleep, call again, call a fallback, return, raise).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from rebound_client._describe import describe, retry_after_s
from rebound_client.errors import (
    CircuitOpenError,
    DegradedError,
    EscalatedError,
    FallbackUnavailableError,
    ReboundError,
    RecoveryAbortedError,
    RetriesExhaustedError,
    iso,
)
from rebound_client.plans import PartialResult, Plan

RETRY, VALUE, FALLBACK, RAISE = "retry", "value", "fallback", "raise"
SAFETY_ATTEMPTS = 20  # whatever the plans say, no call loops for ever
CIRCUIT_OPEN = "circuit_open"  # the error_class of the plans this SDK makes for a breaker's refusal

Fallbacks = Mapping[str | tuple[str, str], Callable[..., Any]]


class PlanKwargs(TypedDict):
    """The keyword arguments of the clients' `plan` that following a plan passes."""

    operation: str
    attempt: int
    elapsed_s: float
    task_id: str | None
    idempotency_key: str | None
    cache_key: str | None


@dataclass(frozen=True)
class Step:
    kind: str  # retry | value | fallback | raise
    delay_s: float = 0.0
    value: Any = None
    fallback: Callable[..., Any] | None = None
    service: str | None = None  # the fallback's service, guarded; None for the caller's own fallback
    operation: str = ""
    error: BaseException | None = None
    plan: Plan | None = None


@dataclass(frozen=True)
class Rules:
    """The caller's limits and local policy: `max_attempts` calls at most (None: as the plans say), no wait
    longer than `max_delay_s`, and the local exponential backoff used while the planner cannot be asked."""

    max_attempts: int | None = None
    max_delay_s: float | None = None
    base_delay_s: float = 1.0
    backoff_cap_s: float = 30.0
    local_attempts: int = 3
    fallbacks: Fallbacks | None = None
    fallback: Callable[..., Any] | None = None  # with_fallback's: used whenever nothing better is left


class Following:
    """One call that follows the planner's plans: what it calls now (the service, or a fallback service), after
    how many attempts, on which plan. The clients do the I/O (the guarded call, the plan request, the wait)."""

    def __init__(
        self,
        service: str,
        operation: str,
        fn: Callable[..., Any],
        rules: Rules,
        cache_key: str | None,
        task_id: str | None,
        idempotency_key: str | None,
    ) -> None:
        self.service, self.operation, self.fn, self.rules = service, operation, fn, rules
        self.cache_key, self.task_id, self.idempotency_key = cache_key, task_id, idempotency_key
        self.started = time.monotonic()
        self.attempt = 1
        self.plan_id: str | None = None
        self.target, self.target_op, self.call_fn = service, operation, fn
        self.used: set[tuple[str, str]] = set()
        self.primary: BaseException | None = None

    @property
    def target_cache_key(self) -> str | None:
        """The cache key goes with calls of the service itself, not with those of a fallback service."""
        return self.cache_key if self.target == self.service else None

    def failed(self, error: BaseException) -> BaseException:
        """Note a failed call; the error to ask the planner about (the service's own, even after a fallback
        service failed: that one is not asked for again)."""
        if self.target == self.service:
            self.primary = error
        else:
            self.used.add((self.target, self.target_op))
        assert self.primary is not None
        return self.primary

    def plan_kwargs(self) -> PlanKwargs:
        """The keyword arguments of the client's `plan` about the last failure."""
        return {
            "operation": self.operation,
            "attempt": self.attempt,
            "elapsed_s": time.monotonic() - self.started,
            "task_id": self.task_id,
            "idempotency_key": self.idempotency_key,
            "cache_key": self.cache_key,
        }

    def next(self, plan: Plan | None, error: BaseException) -> Step:
        """The step after `error` given the plan (None: the planner could not be asked), and the call to
        make next when the step is a retry or a fallback service."""
        step = next_step(
            plan,
            error=error,
            attempt=self.attempt,
            rules=self.rules,
            used=self.used,
            service=self.service,
            operation=self.operation,
        )
        if step.kind == FALLBACK and step.service is not None:
            assert step.fallback is not None
            self.target, self.target_op, self.call_fn = step.service, step.operation, step.fallback
        elif step.kind == RETRY:
            self.target, self.target_op, self.call_fn = self.service, self.operation, self.fn
            self.attempt += 1
        self.plan_id = step.plan.plan_id if step.plan is not None else None
        return step


def next_step(
    plan: Plan | None,
    *,
    error: BaseException,
    attempt: int,
    rules: Rules,
    used: set[tuple[str, str]],
    service: str,
    operation: str,
) -> Step:
    limit = min(rules.max_attempts or SAFETY_ATTEMPTS, SAFETY_ATTEMPTS)
    if plan is None:
        return _local(error, attempt, rules, limit)
    if not plan.from_planner:
        # This SDK's own plan (a breaker's refusal): the planner was not asked, its attempts are the local ones.
        limit = min(limit, rules.max_attempts or rules.local_attempts)
    action = plan.action
    if action in ("retry", "wait"):
        delay = plan.wait_s
        if attempt >= limit:
            return _last_resort(rules, error, plan, f"{attempt} attempts made", exhausted=attempt)
        if rules.max_delay_s is not None and delay > rules.max_delay_s:
            why = f"the plan waits {delay:g} s, longer than max_delay_s={rules.max_delay_s:g}"
            return _last_resort(rules, error, plan, why, exhausted=attempt)
        return Step(RETRY, delay_s=delay, plan=plan)
    if action == "fallback" or (
        action == "degrade" and plan.fallback is not None and plan.fallback.kind == "skip"
    ):
        # The planner answers a skip option as `degrade` with that option: continue with a partial result.
        return _fallback(plan, error, rules, used, service, operation)
    if rules.fallback is not None:
        return Step(FALLBACK, fallback=rules.fallback, plan=plan)
    text = f"{service}: {plan.reason or action}"
    if action == "degrade":
        return Step(RAISE, error=DegradedError(text, plan=plan, error=error), plan=plan)
    if action == "escalate":
        return Step(RAISE, error=EscalatedError(text, plan=plan, error=error), plan=plan)
    return Step(RAISE, error=RecoveryAbortedError(text, plan=plan, error=error), plan=plan)


def _fallback(
    plan: Plan,
    error: BaseException,
    rules: Rules,
    used: set[tuple[str, str]],
    service: str,
    operation: str,
) -> Step:
    option = plan.fallback
    if option is None:
        return _last_resort(rules, error, plan, "the plan names no fallback")
    if option.kind in ("cache", "static"):
        return Step(VALUE, value=option.value, plan=plan)
    if option.kind == "skip":
        warning = option.warning or plan.reason or f"{service} skipped"
        return Step(VALUE, value=PartialResult(warning=warning, plan=plan), plan=plan)
    target = option.service or ""
    target_op = option.operation if option.operation is not None else operation
    registered = _lookup(rules.fallbacks, target, target_op)
    if registered is None or (target, target_op) in used:
        why = (
            f"the fallback {target}/{target_op} failed already"
            if (target, target_op) in used
            else f"no fallback callable registered for {target!r} (pass fallbacks={{{target!r}: fn}})"
        )
        return _last_resort(rules, error, plan, why)
    return Step(FALLBACK, fallback=registered, service=target, operation=target_op, plan=plan)


def _lookup(fallbacks: Fallbacks | None, service: str, operation: str) -> Callable[..., Any] | None:
    if not fallbacks:
        return None
    return fallbacks.get((service, operation)) or fallbacks.get(service)


def _last_resort(
    rules: Rules, error: BaseException, plan: Plan | None, why: str, exhausted: int | None = None
) -> Step:
    if rules.fallback is not None:
        return Step(FALLBACK, fallback=rules.fallback, plan=plan)
    if exhausted is not None:
        return Step(
            RAISE,
            error=RetriesExhaustedError(why, attempts=exhausted, plan=plan, error=error),
            plan=plan,
        )
    return Step(RAISE, error=FallbackUnavailableError(why, plan=plan, error=error), plan=plan)


def refusal_plan(error: CircuitOpenError, answer: Plan | None) -> Plan:
    """The plan for a call a breaker refused: the planner's `answer` when it offers a fallback (the fallback
    chain is the planner's to know), else this SDK's own, which says so. A refusal is not a failure of the
    service; the planner classifies it as an error it does not know (`internal`, `unknown`) and answers about
    that, and a local breaker's refusal is not even its breaker's. Wait until the breaker lets a trial call
    through, or, for an operator's override with no end, skip the work (degrade)."""
    if answer is not None and (
        answer.action == "fallback"
        or (answer.action == "degrade" and answer.fallback is not None and answer.fallback.kind == "skip")
    ):
        return answer
    wait, when = error.retry_after_s, error.retry_at
    reason = f"circuit {error.state.replace('_', ' ')} for {error.service}"
    if error.state == "forced_open":
        reason += " by an operator"
    if error.state == "half_open":
        reason += ", every trial call slot taken"
    if error.source == "local":
        reason += " (local fail-safe breaker: Rebound is unreachable)"
    if wait is None:
        reason += ", with no end set"
    else:
        reason += f", retry after {wait:.1f} s" + (f" (at {iso(when)})" if when is not None else "")
    raw: dict[str, Any] = {
        "plan_id": "",
        "action": "degrade" if wait is None else "wait",
        "reason": reason,
        "delay_s": wait,
        "error_class": CIRCUIT_OPEN,
        "kind": f"{error.source}_breaker",
        "retry_after_s": wait,
        "retry_at": iso(when) if when is not None else None,
        "breaker_state": error.state,
        "made_by": "rebound_client",
    }
    if answer is not None:
        raw["planner_plan_id"] = answer.plan_id
    return Plan(
        plan_id="",
        action=raw["action"],
        reason=reason,
        delay_s=wait,
        error_class=CIRCUIT_OPEN,
        kind=raw["kind"],
        retry_after_s=wait,
        breaker_state=error.state,
        retry_at=when,
        raw=raw,
    )


def retryable_locally(error: BaseException) -> float | None:
    """Whether to try again without a plan, and the least wait: a breaker's refusal after its Retry-After,
    a rate limit after its Retry-After, any other failure but the caller's own (4xx) after the backoff."""
    if isinstance(error, CircuitOpenError):
        return error.retry_after_s
    if isinstance(error, ReboundError):
        return None
    described = describe(error)
    status = described.get("status_code")
    if isinstance(status, int) and 400 <= status < 500 and status not in (408, 429):
        return None
    return retry_after_s(described) or 0.0


def _local(error: BaseException, attempt: int, rules: Rules, limit: int) -> Step:
    """Rebound cannot be asked: retry with exponential backoff (full jitter above half), then give up."""
    least = retryable_locally(error)
    attempts = min(limit, rules.max_attempts or rules.local_attempts)
    if least is None:
        if rules.fallback is not None:
            return Step(FALLBACK, fallback=rules.fallback)
        return Step(RAISE, error=error)
    if attempt >= attempts:
        return _last_resort(rules, error, None, f"{attempt} attempts made (Rebound unreachable)", attempt)
    backoff = min(rules.base_delay_s * 2 ** (attempt - 1), rules.backoff_cap_s)
    delay = max(least, backoff * random.uniform(0.5, 1.0))
    if rules.max_delay_s is not None and delay > rules.max_delay_s:
        if least > rules.max_delay_s:
            return _last_resort(
                rules, error, None, f"the wait of {least:g} s is longer than max_delay_s", attempt
            )
        delay = rules.max_delay_s
    return Step(RETRY, delay_s=delay)

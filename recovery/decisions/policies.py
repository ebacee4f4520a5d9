"""Retry policies: which one applies, and how long to wait before the next attempt.

Precedence, most specific first: the service's operation, the service, the error kind, the error class, the
global default. Policies are few and read on every plan, so each process keeps them for a few seconds (as the
breaker settings are kept); an edit is in force everywhere within BREAKER_CONFIG_CACHE_SECONDS.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from core.api.errors import Conflict
from core.audit import services as audit
from core.audit.services import Actor
from core.infra.conf import rebound
from recovery.breakers.models import Service
from recovery.decisions.models import RetryPolicy

Strategy = RetryPolicy.Strategy
_lock = threading.Lock()
# (service id, operation, error class, kind), blanks and None where a policy does not narrow.
PolicyKey = tuple[int | None, str, str, str]
_cache: tuple[float, dict[PolicyKey, RetryPolicy]] | None = None

# The fields a policy's snapshot keeps (a server-side retry runs with the policy as it was when it started).
SNAPSHOT_FIELDS = [
    "id",
    "name",
    "strategy",
    "max_attempts",
    "base_delay_s",
    "multiplier",
    "max_delay_s",
    "deadline_s",
    "honour_retry_after",
    "retry_on",
]


def _key(p: RetryPolicy) -> PolicyKey:
    return (p.service_id, p.operation, p.error_class, p.kind)


def _policies() -> dict[PolicyKey, RetryPolicy]:
    global _cache
    now = time.monotonic()
    cached = _cache
    if cached is not None and now - cached[0] < rebound("BREAKER_CONFIG_CACHE_SECONDS"):
        return cached[1]
    with _lock:
        table = {_key(p): p for p in RetryPolicy.objects.all()}
        _cache = (now, table)
    return table


def forget() -> None:
    """Drop this process's copy (after an edit here, and in tests)."""
    global _cache
    _cache = None


@dataclass(frozen=True)
class PolicyStep:
    """One rung of the precedence chain: what was looked for, and the policy found there (if any)."""

    scope: str  # operation, service, kind, error_class, global
    looked_for: str
    policy: RetryPolicy | None


def explain(service: Service | None, operation: str, error_class: str, kind: str) -> list[PolicyStep]:
    """The precedence chain for this call and error, most specific first; the first step with a policy wins.
    Rungs that do not apply (no service, no operation, ...) are left out."""
    table = _policies()
    service_id = service.pk if service is not None else None
    name = service.name if service is not None else ""
    rungs = [
        ("operation", f"service {name}, operation {operation}", (service_id, operation, "", ""))
        if service_id and operation
        else None,
        ("service", f"service {name}", (service_id, "", "", "")) if service_id else None,
        ("kind", f"kind {kind}", (None, "", "", kind)) if kind else None,
        ("error_class", f"error class {error_class}", (None, "", error_class, "")) if error_class else None,
        ("global", "the global default", (None, "", "", "")),
    ]
    return [PolicyStep(scope, looked_for, table.get(key)) for scope, looked_for, key in filter(None, rungs)]


def resolve(service: Service | None, operation: str, error_class: str, kind: str) -> RetryPolicy:
    """The policy for this call and error. There is always one: a built-in global default is migrated in,
    and if an operator deleted it the answer is an unsaved policy that never retries."""
    for step in explain(service, operation, error_class, kind):
        if step.policy is not None:
            return step.policy
    return RetryPolicy(
        name="no policy", strategy=Strategy.NONE, max_attempts=1, base_delay_s=0, max_delay_s=0
    )


def snapshot(policy: RetryPolicy) -> dict[str, Any]:
    return {field: getattr(policy, field) for field in SNAPSHOT_FIELDS}


def from_snapshot(data: dict[str, Any]) -> RetryPolicy:
    return RetryPolicy(**{k: v for k, v in data.items() if k in SNAPSHOT_FIELDS})


def retries(policy: RetryPolicy, error_class: str) -> bool:
    return policy.strategy != Strategy.NONE and error_class in (policy.retry_on or [])


def attempts_left(policy: RetryPolicy, attempt: int) -> int:
    """Attempts still allowed after `attempt` (1-based, the one that just failed)."""
    if policy.strategy == Strategy.NONE:
        return 0
    return max(0, policy.max_attempts - attempt)


def delay_s(
    policy: RetryPolicy,
    attempt: int,
    *,
    retry_after_s: float | None = None,
    previous_delay_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after attempt `attempt` (1-based) failed, before the next one.

    The strategies are those of the AWS Architecture Blog's "Exponential Backoff and Jitter": full jitter
    spreads a fleet's retries evenly, decorrelated jitter grows from the previous delay. A server's
    Retry-After is a floor, when the policy honours it, and is not capped: asking sooner only earns another 429.
    """
    rand = rng or random
    # Every wait is capped by MAX_RETRY_AFTER_S, whatever the policy says (a policy may allow more).
    longest = float(rebound("MAX_RETRY_AFTER_S"))
    base, cap = policy.base_delay_s, min(policy.max_delay_s, longest)
    n = max(1, attempt)
    exponential = _grown(base, policy.multiplier, n - 1)
    match policy.strategy:
        case Strategy.NONE:
            delay = 0.0
        case Strategy.FIXED:
            delay = base
        case Strategy.LINEAR:
            delay = base * n
        case Strategy.EXPONENTIAL:
            delay = exponential
        case Strategy.EXPONENTIAL_FULL_JITTER:
            delay = rand.uniform(0, min(cap, exponential))
        case Strategy.DECORRELATED_JITTER:
            previous = previous_delay_s if previous_delay_s is not None else base
            delay = rand.uniform(base, max(base, previous * 3))
        case _:
            delay = base
    delay = min(cap, delay)
    if policy.honour_retry_after and retry_after_s:
        delay = min(max(delay, retry_after_s), longest)
    return round(delay, 3)


def _grown(base: float, multiplier: float, times: int) -> float:
    """base * multiplier ** times, or infinity where a float cannot hold it (attempt 2000 of a doubling
    policy): the caller caps it anyway, and an OverflowError would be a 500."""
    try:
        return base * multiplier**times
    except OverflowError:
        return math.inf


# --- Operators' writes (the admin): audited, and in force here at once, elsewhere within the cache time ----

POLICY_FIELDS = [
    "name",
    "description",
    "service",
    "operation",
    "error_class",
    "kind",
    "strategy",
    "max_attempts",
    "base_delay_s",
    "multiplier",
    "max_delay_s",
    "deadline_s",
    "honour_retry_after",
    "retry_on",
]


def save_policy(policy: RetryPolicy, *, actor: Actor, reason: str) -> RetryPolicy:
    audit.audited_save(policy, POLICY_FIELDS, actor=actor, reason=reason, action="retry_policy")
    forget()
    return policy


def delete_policy(policy: RetryPolicy, *, actor: Actor, reason: str) -> None:
    if policy.builtin:
        # The built-in defaults are sources 003 and 004's numbers: edit them, never lose them.
        raise Conflict(f"{policy.name!r} is a built-in policy: edit it instead of deleting it.")
    audit.audited_delete(policy, POLICY_FIELDS, actor=actor, reason=reason, action="retry_policy")
    forget()

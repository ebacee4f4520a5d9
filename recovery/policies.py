"""Retry policies: which one applies, and how long to wait before the next attempt.

Precedence, most specific first: the service's operation, the service, the error kind, the error class, the
global default. Policies are few and read on every plan, so each process keeps them for a few seconds (as the
breaker settings are kept); an edit is in force everywhere within BREAKER_CONFIG_CACHE_SECONDS.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from config.conf import rebound
from recovery.models import RetryPolicy, Service

Strategy = RetryPolicy.Strategy
_lock = threading.Lock()
_cache: tuple[float, dict[tuple[Any, ...], RetryPolicy]] | None = None

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


def _key(p: RetryPolicy) -> tuple[Any, ...]:
    return (p.service_id, p.operation, p.error_class, p.kind)


def _policies() -> dict[tuple[Any, ...], RetryPolicy]:
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


def resolve(service: Service | None, operation: str, error_class: str, kind: str) -> RetryPolicy:
    """The policy for this call and error. There is always one: a built-in global default is migrated in,
    and if an operator deleted it the answer is an unsaved policy that never retries."""
    table = _policies()
    service_id = service.pk if service is not None else None
    for key in (
        (service_id, operation, "", "") if service_id and operation else None,
        (service_id, "", "", "") if service_id else None,
        (None, "", "", kind) if kind else None,
        (None, "", error_class, "") if error_class else None,
        (None, "", "", ""),
    ):
        if key is not None and key in table:
            return table[key]
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
    base, cap = policy.base_delay_s, policy.max_delay_s
    n = max(1, attempt)
    exponential = base * policy.multiplier ** (n - 1)
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
        delay = max(delay, retry_after_s)
    return round(delay, 3)

"""The planner's decision tree as a table: every branch, from inputs to decision. Pure: no database, no Redis."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest

from recovery.decisions import planner
from recovery.decisions.planner import BreakerInput, BudgetInput, Inputs, OptionInput, PolicyInput

POLICY = PolicyInput(
    name="transient", max_attempts=3, deadline_s=None, retries_class=True, attempts_left=2, delay_s=1.0
)
EXHAUSTED = replace(POLICY, attempts_left=0)
BUDGET = BudgetInput(allowed=True, retries=0, calls=10, limit=3, window_s=10)
SPENT = BudgetInput(allowed=False, retries=3, calls=10, limit=3, window_s=10)
CACHE = OptionInput(
    id=1, position=1, kind="cache", available=True, why="a result cached 5 s ago", value={"n": 1}, age_s=5.0
)
NO_CACHE = replace(CACHE, available=False, why="no cached result", value=None, age_s=None)
STATIC = OptionInput(id=2, position=2, kind="static", available=True, why="a static default", value=[])
OTHER = OptionInput(
    id=3,
    position=1,
    kind="service",
    available=True,
    why="backup/op: breaker closed",
    service="backup",
    operation="op",
)
OTHER_OPEN = replace(OTHER, available=False, why="backup/op: breaker open for 9 s more")
SKIP = OptionInput(
    id=4, position=3, kind="skip", available=True, why="non-critical", warning="partial results"
)


def inputs(**changes: Any) -> Inputs:
    base = Inputs(
        service="svc",
        operation="op",
        error_class="transient",
        kind="connection_timeout",
        severity="medium",
        needs_human=False,
        retry_after_s=None,
        attempt=1,
        elapsed_s=None,
        idempotent=True,
        has_idempotency_key=False,
        operation_critical=None,
        essential=True,
        policy=POLICY,
        budget=BUDGET,
        breaker=BreakerInput("closed"),
    )
    return replace(base, **changes)


@dataclass(frozen=True)
class Case:
    name: str
    given: dict[str, Any]
    action: str
    delay_s: float | None = None
    fallback: OptionInput | None = None
    reason: str = ""
    exhausted: bool = False
    refused: str | None = None
    attempts_left: int | None = None


CASES = [
    # --- 1. fatal aborts, whatever else holds
    Case("fatal", {"error_class": "fatal", "kind": "configuration"}, "abort", reason="a fatal error"),
    Case(
        "fatal with a chain and an open breaker",
        {"error_class": "fatal", "chain": (CACHE,), "breaker": BreakerInput("open", 5.0)},
        "abort",
    ),
    # --- 2. a human is needed
    Case(
        "authentication failed",
        {"error_class": "authentication", "kind": "authentication_failed"},
        "escalate",
        reason="authentication failed: a human must act",
    ),
    Case(
        "permission denied",
        {"error_class": "authentication", "kind": "permission_denied", "chain": (CACHE,)},
        "escalate",
        reason="permission denied",
    ),
    Case(
        "quota exhausted needs a human",
        {"error_class": "resource", "kind": "quota_exhausted", "needs_human": True},
        "escalate",
        reason="needs a human",
    ),
    # --- 3. validation goes back to the caller; an unimplemented operation to its alternative
    Case(
        "invalid input", {"error_class": "validation", "kind": "invalid_input"}, "abort", reason="validation"
    ),
    Case(
        "invalid input ignores the chain",
        {"error_class": "validation", "kind": "not_found", "chain": (OTHER,)},
        "abort",
    ),
    Case(
        "unimplemented goes to its alternative",
        {"error_class": "validation", "kind": "unimplemented", "chain": (OTHER,)},
        "fallback",
        fallback=OTHER,
        reason="svc/op is not implemented; fall back to backup/op",
    ),
    Case(
        "unimplemented without an alternative",
        {"error_class": "validation", "kind": "unimplemented"},
        "abort",
        reason="no fallback is configured",
        exhausted=True,
    ),
    Case(
        "unimplemented with its alternative down",
        {"error_class": "validation", "kind": "unimplemented", "chain": (OTHER_OPEN,)},
        "abort",
        reason="breaker open for 9 s more",
        exhausted=True,
    ),
    # --- 4. an open breaker: fallback, else wait
    Case(
        "open breaker, cache available",
        {"breaker": BreakerInput("open", 12.5), "chain": (CACHE,)},
        "fallback",
        fallback=CACHE,
        reason="the breaker of svc is open; fall back to the cached result",
        refused="breaker",
    ),
    Case(
        "open breaker, nothing available",
        {"breaker": BreakerInput("open", 12.5), "chain": (NO_CACHE,)},
        "wait",
        delay_s=12.5,
        reason="wait 12.5 s until a trial call is let through",
        exhausted=True,
        refused="breaker",
        attempts_left=2,
    ),
    Case(
        "forced open until a time",
        {"breaker": BreakerInput("forced_open", 600.0)},
        "wait",
        delay_s=600.0,
        reason="until the operator's override ends",
        exhausted=True,
        refused="breaker",
        attempts_left=2,
    ),
    Case(
        "forced open with no end, essential",
        {"breaker": BreakerInput("forced_open", None)},
        "escalate",
        reason="forced open with no end set; no fallback is configured; svc is essential",
        exhausted=True,
        refused="breaker",
    ),
    Case(
        "forced open with no end, non-critical operation",
        {"breaker": BreakerInput("forced_open", None), "operation_critical": False},
        "degrade",
        exhausted=True,
        refused="breaker",
    ),
    Case(
        "open breaker, attempts spent",
        {"breaker": BreakerInput("open", 3.0), "policy": EXHAUSTED},
        "escalate",
        reason="policy transient is exhausted",
        exhausted=True,
        refused="attempts",
    ),
    Case(
        "open breaker skips the chain's unavailable options",
        {"breaker": BreakerInput("open", 3.0), "chain": (OTHER_OPEN, NO_CACHE, STATIC)},
        "fallback",
        fallback=STATIC,
        refused="breaker",
    ),
    # --- 5. rate limits wait for Retry-After
    Case(
        "rate limit with Retry-After",
        {"error_class": "rate_limit", "kind": "rate_limit", "retry_after_s": 20.0},
        "wait",
        delay_s=20.0,
        reason="wait 20 s (Retry-After)",
        attempts_left=2,
    ),
    Case(
        "rate limit without Retry-After",
        {"error_class": "rate_limit", "kind": "rate_limit"},
        "wait",
        delay_s=1.0,
        reason="(policy transient)",
        attempts_left=2,
    ),
    Case(
        "rate limit of a non-idempotent operation still waits",
        {"error_class": "rate_limit", "kind": "rate_limit", "idempotent": False, "retry_after_s": 2.0},
        "wait",
        delay_s=2.0,
        attempts_left=2,
    ),
    Case(
        "rate limit ignores the retry budget",
        {"error_class": "rate_limit", "kind": "rate_limit", "budget": SPENT},
        "wait",
        delay_s=1.0,
        attempts_left=2,
    ),
    Case(
        "rate limit, attempts spent, cache",
        {"error_class": "rate_limit", "kind": "rate_limit", "policy": EXHAUSTED, "chain": (CACHE,)},
        "fallback",
        fallback=CACHE,
        reason="rate limited and policy transient is exhausted",
        refused="attempts",
        attempts_left=0,
    ),
    Case(
        "rate limit past the deadline, non-critical",
        {
            "error_class": "rate_limit",
            "kind": "rate_limit",
            "retry_after_s": 30.0,
            "elapsed_s": 50.0,
            "policy": replace(POLICY, deadline_s=60.0),
            "essential": False,
        },
        "degrade",
        reason="deadline of 60 s would pass (50 s elapsed + 30 s to wait)",
        exhausted=True,
        refused="deadline",
        attempts_left=2,
    ),
    # --- 6. retry while the policy, the deadline, idempotency and the budget allow
    Case(
        "transient",
        {},
        "retry",
        delay_s=1.0,
        reason="retry in 1 s, attempt 2 of 3 (policy transient)",
        attempts_left=2,
    ),
    Case(
        "resource",
        {"error_class": "resource", "kind": "temporary_resource"},
        "retry",
        delay_s=1.0,
        attempts_left=2,
    ),
    Case(
        "external service",
        {"error_class": "external_service", "kind": "service_unavailable"},
        "retry",
        delay_s=1.0,
        attempts_left=2,
    ),
    Case(
        "half-open breaker lets a retry through",
        {"breaker": BreakerInput("half_open")},
        "retry",
        1.0,
        attempts_left=2,
    ),
    Case("unknown breaker state", {"breaker": BreakerInput("unknown")}, "retry", 1.0, attempts_left=2),
    Case(
        "internal, the policy retries it",
        {"error_class": "internal", "kind": "bug"},
        "retry",
        1.0,
        attempts_left=2,
    ),
    Case(
        "internal, the policy does not retry it",
        {"error_class": "internal", "kind": "bug", "policy": replace(POLICY, retries_class=False)},
        "escalate",
        reason="policy transient does not retry internal errors",
        exhausted=True,
        refused="policy",
        attempts_left=2,
    ),
    Case(
        "no policy at all",
        {"policy": replace(POLICY, name=None, retries_class=False, attempts_left=0), "chain": (STATIC,)},
        "fallback",
        fallback=STATIC,
        reason="no retry policy applies",
        refused="policy",
        attempts_left=0,
    ),
    Case(
        "policy exhausted, static default",
        {"policy": EXHAUSTED, "attempt": 3, "chain": (NO_CACHE, STATIC)},
        "fallback",
        fallback=STATIC,
        reason="it allows 3 attempt(s) and attempt 3 failed",
        refused="attempts",
        attempts_left=0,
    ),
    Case(
        "deadline would pass",
        {"elapsed_s": 29.5, "policy": replace(POLICY, deadline_s=30.0), "chain": (CACHE,)},
        "fallback",
        fallback=CACHE,
        reason="deadline of 30 s would pass",
        refused="deadline",
        attempts_left=2,
    ),
    Case(
        "deadline still far",
        {"elapsed_s": 10.0, "policy": replace(POLICY, deadline_s=30.0)},
        "retry",
        delay_s=1.0,
        attempts_left=2,
    ),
    Case(
        "not idempotent, no key",
        {"idempotent": False},
        "escalate",
        reason="svc/op is not idempotent and no idempotency_key was sent",
        exhausted=True,
        refused="idempotency",
        attempts_left=2,
    ),
    Case(
        "not idempotent, with a key",
        {"idempotent": False, "has_idempotency_key": True},
        "retry",
        1.0,
        attempts_left=2,
    ),
    Case(
        "budget spent, cache",
        {"budget": SPENT, "chain": (CACHE,)},
        "fallback",
        fallback=CACHE,
        reason="the retry budget of svc is spent: 3 of 3 retries used in the last 10 s (10 calls)",
        refused="budget",
        attempts_left=2,
    ),
    Case(
        "budget spent, nothing else, essential",
        {"budget": SPENT},
        "escalate",
        reason="svc is essential: a human must decide",
        exhausted=True,
        refused="budget",
        attempts_left=2,
    ),
    # --- the chain: in order, only available options; skip degrades
    Case(
        "the first available option wins",
        {"policy": EXHAUSTED, "chain": (OTHER_OPEN, CACHE, STATIC)},
        "fallback",
        fallback=CACHE,
        refused="attempts",
        attempts_left=0,
    ),
    Case(
        "another service",
        {"policy": EXHAUSTED, "chain": (OTHER, CACHE)},
        "fallback",
        fallback=OTHER,
        reason="fall back to backup/op (position 1)",
        refused="attempts",
        attempts_left=0,
    ),
    Case(
        "a skip option degrades",
        {"policy": EXHAUSTED, "chain": (NO_CACHE, SKIP)},
        "degrade",
        fallback=SKIP,
        reason="skip it with a partial result (position 3): partial results",
        refused="attempts",
        attempts_left=0,
    ),
    # --- then degrade or escalate
    Case(
        "non-critical operation",
        {"policy": EXHAUSTED, "operation_critical": False},
        "degrade",
        reason="operation op is non-critical: skip it",
        exhausted=True,
        refused="attempts",
        attempts_left=0,
    ),
    Case(
        "no operation row, non-critical service",
        {"policy": EXHAUSTED, "essential": False},
        "degrade",
        reason="svc is non-critical",
        exhausted=True,
        refused="attempts",
        attempts_left=0,
    ),
    Case(
        "critical operation of a non-critical service",
        {"policy": EXHAUSTED, "essential": False, "operation_critical": True},
        "escalate",
        reason="operation op is critical: a human must decide",
        exhausted=True,
        refused="attempts",
        attempts_left=0,
    ),
    Case(
        "the degradation level skips the service",
        {"policy": EXHAUSTED, "degradation_level": "minimal", "skipped_at_level": True},
        "degrade",
        reason="the degradation level is minimal, at which agents skip svc",
        exhausted=True,
        refused="attempts",
        attempts_left=0,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_it_decides(case: Case) -> None:
    decision = planner.decide(inputs(**case.given))

    assert decision.action == case.action
    assert decision.delay_s == case.delay_s
    assert decision.fallback == case.fallback
    assert case.reason in decision.reason
    assert decision.chain_exhausted == case.exhausted
    assert decision.retry_refused == case.refused
    assert decision.attempts_left == case.attempts_left


def test_it_covers_every_action() -> None:
    assert {c.action for c in CASES} == set(planner.ACTIONS)


def test_it_is_pure() -> None:
    given = inputs(budget=SPENT, chain=(NO_CACHE, STATIC))
    assert planner.decide(given) == planner.decide(given)


# --- options -----------------------------------------------------------------------------------------------


def by_action(items: list[planner.Availability]) -> dict[str, list[planner.Availability]]:
    grouped: dict[str, list[planner.Availability]] = {}
    for item in items:
        grouped.setdefault(item.action, []).append(item)
    return grouped


def test_it_lists_every_option_in_order() -> None:
    listed = planner.options(inputs(chain=(OTHER_OPEN, CACHE)))
    assert [a.action for a in listed] == [
        "retry",
        "fallback",
        "fallback",
        "wait",
        "degrade",
        "escalate",
        "abort",
    ]
    assert [a.fallback for a in listed[1:3]] == [OTHER_OPEN, CACHE]
    assert [a.available for a in listed] == [True, False, True, False, False, True, True]
    assert listed[0].why.startswith("policy transient: 2 more attempt(s), next after 1 s; budget: 0 of 3")
    assert listed[0].delay_s == 1.0
    assert listed[4].why == "svc is essential: it may not be skipped; degradation level normal"


@pytest.mark.parametrize(
    ("given", "action", "available", "why"),
    [
        ({"budget": SPENT}, "retry", False, "the retry budget of svc is spent"),
        ({"error_class": "validation"}, "retry", False, "validation errors are never retried"),
        ({"breaker": BreakerInput("open", 4.0)}, "retry", False, "the breaker of svc is open"),
        ({"idempotent": False}, "retry", False, "not idempotent"),
        ({"breaker": BreakerInput("open", 4.0)}, "wait", True, "lets calls through again in 4 s"),
        ({"breaker": BreakerInput("forced_open")}, "wait", False, "forced open with no end set"),
        ({"error_class": "rate_limit", "retry_after_s": 7.0}, "wait", True, "rate limited: wait 7 s"),
        ({"error_class": "rate_limit", "policy": EXHAUSTED}, "wait", False, "exhausted"),
        ({"skipped_at_level": True, "degradation_level": "emergency"}, "degrade", True, "level emergency"),
        ({"chain": (SKIP,)}, "degrade", True, "a skip option (position 3)"),
        ({"operation_critical": False}, "degrade", True, "operation op is non-critical: it may be skipped"),
        ({}, "escalate", True, "a human can always be asked"),
        ({}, "abort", True, "return the error to the caller"),
    ],
)
def test_it_says_why_an_option_is_or_is_not_available(
    given: dict[str, Any], action: str, available: bool, why: str
) -> None:
    [option] = by_action(planner.options(inputs(**given)))[action]
    assert option.available is available
    assert why in option.why

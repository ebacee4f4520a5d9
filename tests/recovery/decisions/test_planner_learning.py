"""The planner with what was learned, as a table: when a proven better action replaces the tree's choice, when
it does not, and how a retry's delay follows the delay that worked. Pure: no database, no Redis."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

import pytest

from recovery.decisions import planner
from recovery.decisions.planner import (
    BreakerInput,
    BudgetInput,
    Inputs,
    LearnedInput,
    OptionInput,
    PolicyInput,
)
from recovery.learning import stats

POLICY = PolicyInput(
    name="transient",
    max_attempts=3,
    deadline_s=None,
    retries_class=True,
    attempts_left=2,
    delay_s=1.0,
    base_delay_s=1.0,
    max_delay_s=16.0,
)
BUDGET = BudgetInput(allowed=True, retries=0, calls=10, limit=3, window_s=10)
CACHE = OptionInput(
    id=1, position=1, kind="cache", available=True, why="a result cached 12 s ago", value={"n": 1}, age_s=12.0
)
NO_CACHE = replace(CACHE, available=False, why="no cached result", value=None, age_s=None)
STATIC = OptionInput(id=2, position=2, kind="static", available=True, why="a static default", value=[])
BACKUP = OptionInput(
    id=3,
    position=1,
    kind="service",
    available=True,
    why="backup/op: breaker closed",
    service="backup",
    operation="op",
)
SKIP = OptionInput(id=4, position=1, kind="skip", available=True, why="non-critical", warning="partial")
MIN_TRIES = 10.0


def learned(
    action: str, successes: float, tries: float, *, scope: str = "pattern", delay_s: float | None = None
) -> LearnedInput:
    low, high = stats.wilson(successes, tries)
    return LearnedInput(
        action=action,
        scope=scope,
        tries=tries,
        successes=successes,
        lower_bound=low,
        upper_bound=high,
        trusted=tries >= MIN_TRIES,
        delay_s=delay_s,
    )


def inputs(*figures: LearnedInput, **changes: Any) -> Inputs:
    base = Inputs(
        service="svc",
        operation="op",
        error_class="transient",
        kind="connection",
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
        chain=(CACHE,),
        learned=figures,
    )
    return replace(base, **changes)


# --- choosing ----------------------------------------------------------------------------------------------


def test_it_switches_to_a_fallback_proven_better_than_retrying() -> None:
    decision = planner.decide(inputs(learned("retry", 0, 12), learned("fallback:cache", 20, 20)))

    assert (decision.action, decision.fallback, decision.delay_s) == ("fallback", CACHE, None)
    assert (decision.attempts_left, decision.retry_refused, decision.chain_exhausted) == (2, None, False)
    assert decision.reason == (
        "a transient error (connection): fall back to the cached result of 12 s ago (position 1): learned for "
        "this pattern, fallback to cache recovered 20 of 20 and retry 0 of 12 (recent results weigh more: "
        "half-life 7 days)"
    )


def test_it_names_both_scopes_when_the_figures_come_from_different_ones() -> None:
    figures = (learned("retry", 0, 12, scope="service"), learned("fallback:cache", 20, 20))

    decision = planner.decide(inputs(*figures, half_life_days=1.0))

    assert decision.action == "fallback"
    assert decision.reason.endswith(
        "learned, fallback to cache recovered 20 of 20 for this pattern and retry 0 of 12 for this service "
        "and error class (recent results weigh more: half-life 1 day)"
    )


def test_it_rounds_decayed_figures_to_whole_numbers() -> None:
    decision = planner.decide(inputs(learned("retry", 0.4, 11.6), learned("fallback:cache", 19.7, 19.8)))

    assert "fallback to cache recovered 20 of 20 and retry 0 of 12" in decision.reason


def test_it_keeps_an_untried_default_however_good_a_candidate() -> None:
    given = inputs(learned("fallback:cache", 500, 500))

    decision = planner.decide(given)

    assert decision == planner.decide(replace(given, learned=()))
    assert (decision.action, decision.delay_s) == ("retry", 1.0)
    assert "learned" not in decision.reason


def test_it_keeps_the_default_when_the_candidate_is_not_proven_better() -> None:
    # cache's lower bound (about 0.84) is not above retry's upper bound (about 0.9): it could be luck.
    retry, cache = learned("retry", 8, 12), learned("fallback:cache", 20, 20)
    assert cache.lower_bound < retry.upper_bound

    decision = planner.decide(inputs(retry, cache))

    assert (decision.action, decision.delay_s) == ("retry", 1.0)
    assert decision.reason == (
        "a transient error (connection): retry in 1 s, attempt 2 of 3 (policy transient); "
        "learned: retry recovered 8 of 12 for this pattern"
    )


def test_it_never_chooses_an_untrusted_candidate() -> None:
    decision = planner.decide(inputs(learned("retry", 0, 12), learned("fallback:cache", 9, 9)))

    assert decision.action == "retry"


def test_it_never_chooses_an_unavailable_fallback() -> None:
    figures = (learned("retry", 0, 12), learned("fallback:cache", 50, 50))

    decision = planner.decide(inputs(*figures, chain=(NO_CACHE, STATIC)))

    assert decision.action == "retry"


def test_it_never_chooses_degrade_as_a_learned_choice() -> None:
    figures = (learned("retry", 0, 20), learned("degrade", 50, 50))

    decision = planner.decide(inputs(*figures, chain=(SKIP,), essential=False))

    assert decision.action == "retry"


def test_it_leaves_a_degrade_of_the_tree_unchanged() -> None:
    given = inputs(
        learned("fallback:static", 50, 50), chain=(SKIP, STATIC), policy=replace(POLICY, attempts_left=0)
    )

    decision = planner.decide(given)

    assert decision == planner.decide(replace(given, learned=()))
    assert decision.action == "degrade"


def test_it_chooses_a_later_chain_option_proven_better_than_the_first() -> None:
    figures = (learned("fallback:service:backup/op", 0, 20), learned("fallback:static", 20, 20))
    exhausted = replace(POLICY, attempts_left=0)

    decision = planner.decide(inputs(*figures, chain=(BACKUP, STATIC), policy=exhausted))

    assert (decision.action, decision.fallback) == ("fallback", STATIC)
    assert (decision.attempts_left, decision.retry_refused) == (0, "attempts")
    assert decision.reason.startswith(
        "a transient error (connection): fall back to the static default (position 2)"
    )
    assert "fallback to static recovered 20 of 20 and fallback to backup/op 0 of 20" in decision.reason


def test_it_chooses_the_candidate_with_the_highest_lower_bound() -> None:
    figures = (learned("retry", 0, 20), learned("fallback:cache", 15, 20), learned("fallback:static", 40, 40))

    decision = planner.decide(inputs(*figures, chain=(CACHE, STATIC)))

    assert decision.fallback == STATIC


def test_it_switches_a_rate_limits_wait_to_a_proven_fallback() -> None:
    figures = (learned("wait", 0, 20), learned("fallback:cache", 20, 20))

    decision = planner.decide(inputs(*figures, error_class="rate_limit", kind="rate_limited"))

    assert (decision.action, decision.fallback, decision.attempts_left) == ("fallback", CACHE, 2)
    assert decision.retry_refused is None
    assert decision.reason.startswith("rate limited: fall back to the cached result")
    assert "learned for this pattern" in decision.reason


def test_it_waits_for_an_open_breaker_rather_than_a_proven_bad_fallback() -> None:
    figures = (learned("fallback:cache", 0, 20), learned("wait", 20, 20))

    decision = planner.decide(inputs(*figures, breaker=BreakerInput("open", 12.5)))

    assert (decision.action, decision.delay_s, decision.fallback) == ("wait", 12.5, None)
    assert (decision.retry_refused, decision.chain_exhausted, decision.attempts_left) == ("breaker", False, 2)
    assert decision.reason == (
        "the breaker of svc is open: wait 12.5 s until a trial call is let through: learned for this pattern, "
        "wait recovered 20 of 20 and fallback to cache 0 of 20 (recent results weigh more: half-life 7 days)"
    )


def test_it_never_retries_with_the_breaker_open_however_well_retries_worked() -> None:
    figures = (learned("fallback:cache", 0, 20), learned("retry", 50, 50))

    decision = planner.decide(inputs(*figures, breaker=BreakerInput("open", 12.5)))

    assert (decision.action, decision.fallback) == ("fallback", CACHE)


@pytest.mark.parametrize(
    "given",
    [
        {"error_class": "fatal", "kind": "configuration"},
        {"error_class": "authentication", "kind": "authentication_failed"},
        {"error_class": "resource", "kind": "quota_exhausted", "needs_human": True},
        {"error_class": "validation", "kind": "invalid_input"},
        {"error_class": "validation", "kind": "unimplemented", "chain": (BACKUP, STATIC)},
    ],
    ids=["fatal", "authentication", "needs a human", "validation", "unimplemented"],
)
def test_it_leaves_the_first_three_steps_untouched(given: dict[str, Any]) -> None:
    figures = (
        learned("retry", 500, 500, delay_s=2.0),
        learned("fallback:static", 500, 500),
        learned("fallback:service:backup/op", 0, 500),
    )
    with_figures = inputs(*figures, **given)

    decision = planner.decide(with_figures)

    assert decision == planner.decide(replace(with_figures, learned=()))
    assert "learned" not in decision.reason


# --- timing ------------------------------------------------------------------------------------------------


def test_it_retries_at_the_delay_that_worked() -> None:
    decision = planner.decide(inputs(learned("retry", 45, 50, delay_s=3.8)))

    assert (decision.action, decision.delay_s) == ("retry", 3.8)
    assert decision.reason == (
        "a transient error (connection): retry in 3.8 s (learned: retries of this pattern worked 3.8 s after the "
        "first failure; policy bounds 1-16 s), attempt 2 of 3 (policy transient); learned: retry recovered 45 "
        "of 50 for this pattern"
    )


def test_it_counts_the_time_already_spent_toward_the_learned_delay() -> None:
    decision = planner.decide(inputs(learned("retry", 45, 50, delay_s=3.8), elapsed_s=2.0))

    assert decision.delay_s == 1.8


@pytest.mark.parametrize(("worked_after_s", "delay_s"), [(40.0, 16.0), (0.2, 1.0)])
def test_it_keeps_a_learned_delay_within_the_policys_bounds(worked_after_s: float, delay_s: float) -> None:
    decision = planner.decide(inputs(learned("retry", 45, 50, delay_s=worked_after_s)))

    assert decision.delay_s == delay_s


def test_it_says_nothing_of_timing_when_the_policys_bounds_leave_no_room() -> None:
    policy = replace(POLICY, base_delay_s=1.0, max_delay_s=1.0)  # a fixed policy: every retry after 1 s

    decision = planner.decide(inputs(learned("retry", 45, 50, delay_s=3.8), policy=policy))

    assert (decision.action, decision.delay_s) == ("retry", 1.0)
    assert "worked" not in decision.reason


def test_it_keeps_the_policys_delay_when_the_learned_one_would_pass_the_deadline() -> None:
    policy = replace(POLICY, deadline_s=10.0)

    decision = planner.decide(inputs(learned("retry", 45, 50, delay_s=16.0), policy=policy, elapsed_s=5.0))

    assert (decision.action, decision.delay_s) == ("retry", 1.0)
    assert "worked" not in decision.reason


def test_it_keeps_the_policys_delay_without_its_bounds() -> None:
    policy = replace(POLICY, base_delay_s=None, max_delay_s=None)

    decision = planner.decide(inputs(learned("retry", 45, 50, delay_s=3.8), policy=policy))

    assert decision.delay_s == 1.0


def test_it_keeps_the_policys_delay_for_an_untrusted_figure() -> None:
    decision = planner.decide(inputs(learned("retry", 5, 5, delay_s=3.8)))

    assert (decision.delay_s, decision.reason) == (
        1.0,
        "a transient error (connection): retry in 1 s, attempt 2 of 3 (policy transient)",
    )


def test_it_times_a_rate_limits_wait_without_retry_after() -> None:
    figures = (learned("wait", 45, 50, delay_s=6.0),)

    decision = planner.decide(inputs(*figures, error_class="rate_limit", kind="rate_limited"))

    assert (decision.action, decision.delay_s) == ("wait", 6.0)
    assert "wait 6 s (learned: waits of this pattern worked 6 s after the first failure" in decision.reason


def test_it_never_overrides_retry_after() -> None:
    figures = (learned("wait", 45, 50, delay_s=6.0),)

    decision = planner.decide(
        inputs(*figures, error_class="rate_limit", kind="rate_limited", retry_after_s=20.0)
    )

    assert (decision.action, decision.delay_s) == ("wait", 20.0)
    assert "(Retry-After)" in decision.reason


# --- options, and replay -----------------------------------------------------------------------------------


def test_it_adds_the_figures_to_the_options() -> None:
    figures = (learned("retry", 45, 50), learned("fallback:cache", 3, 4, scope="service"))

    listed = {
        (o.action, o.fallback.kind if o.fallback else None): o.why for o in planner.options(inputs(*figures))
    }

    assert listed[("retry", None)].endswith("; learned: 45 of 50 recovered for this pattern")
    assert listed[("fallback", "cache")] == (
        "a result cached 12 s ago; learned: 3 of 4 recovered for this service and error class, too few to trust yet"
    )
    assert "learned" not in listed[("wait", None)]


def test_it_keeps_the_learned_figures_in_the_replayable_inputs() -> None:
    figure = learned("retry", 45, 50, delay_s=3.8)

    data = asdict(inputs(figure))

    assert list(data["learned"]) == [asdict(figure)]
    assert data["half_life_days"] == 7.0
    assert (data["policy"]["base_delay_s"], data["policy"]["max_delay_s"]) == (1.0, 16.0)


def test_it_decides_the_same_way_every_time() -> None:
    given = inputs(learned("retry", 0, 12), learned("fallback:cache", 20, 20), learned("wait", 3, 3))

    first = planner.decide(given)

    assert all(planner.decide(given) == first for _ in range(5))

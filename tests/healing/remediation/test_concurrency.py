"""Evaluators racing against the real PostgreSQL: however many evaluate at once, each rule fires once per
event and asks for one run."""

from __future__ import annotations

from typing import Any

import pytest

from healing.actions.models import HealingRun
from healing.remediation import services
from healing.remediation.models import RuleCursor, RuleFiring
from tests.support.races import at_once, raised
from tests.support.remediation import MEDIUM_ACTION, breaker, breaker_goes, check, check_turns, errors, rule

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

THREADS = 8


def run_evaluators(count: int) -> tuple[list[int], list[BaseException]]:
    """`count` evaluators at once: what each one fired, and what any of them raised."""
    results = at_once(count, lambda _: services.evaluate())
    return [r for r in results if not isinstance(r, BaseException)], raised(results)


def test_it_fires_once_per_event_with_evaluators_racing(streams_from_start: Any) -> None:
    # Medium risk: the runs wait for approval, so nothing is enqueued for a worker this test does not run.
    watched = check()
    rule(health_check=watched, act=MEDIUM_ACTION)
    rule("heal-payments", trigger="breaker_open", service="payments", act=MEDIUM_ACTION)
    rule("heal-search", trigger="pattern_count", service="search", threshold=3, act=MEDIUM_ACTION)
    check_turns(watched)
    breaker_goes(breaker("payments"), "open")
    errors("search", 3)

    results, failures = run_evaluators(THREADS)

    assert failures == []
    assert sum(results) == 3
    assert sorted(RuleFiring.objects.values_list("rule__name", "outcome")) == [
        ("heal-db", "created"),
        ("heal-payments", "created"),
        ("heal-search", "created"),
    ]
    assert sorted(HealingRun.objects.values_list("service", "state")) == [
        ("db", "pending_approval"),
        ("payments", "pending_approval"),
        ("search", "pending_approval"),
    ]


def test_it_makes_one_cursor_when_first_evaluations_race() -> None:
    results, failures = run_evaluators(THREADS)

    assert (failures, sum(results)) == ([], 0)
    assert sorted(RuleCursor.objects.values_list("stream", flat=True)) == [
        services.BREAKER_STREAM,
        services.CHECK_STREAM,
    ]

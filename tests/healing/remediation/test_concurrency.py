"""Evaluators racing against the real PostgreSQL: however many evaluate at once, each rule fires once per
event and asks for one run."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection

from healing.actions.models import HealingRun
from healing.remediation import services
from healing.remediation.models import RuleCursor, RuleFiring
from tests.support.remediation import MEDIUM_ACTION, breaker, breaker_goes, check, check_turns, errors, rule

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

THREADS = 8


def run_evaluators(count: int) -> tuple[list[int], list[BaseException]]:
    results: list[int] = []
    failures: list[BaseException] = []
    barrier = threading.Barrier(count)

    def evaluate() -> None:
        try:
            barrier.wait()
            results.append(services.evaluate())
        except BaseException as error:  # asserted on below
            failures.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=evaluate) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results, failures


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

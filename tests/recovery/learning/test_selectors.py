"""Reads of error learning (recovery/learning/selectors.py): the statistics decayed to a moment, their order and
filters, and what the planner is told to trust of each action (pattern row, service row), cached per process."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from recovery.learning import selectors, services
from recovery.learning.models import Effectiveness
from recovery.learning.services import Result
from tests.support.factories import rebound_settings

pytestmark = pytest.mark.django_db

FP = "a" * 40
OTHER_FP = "c" * 40
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
WEEK = timedelta(days=7)


@pytest.fixture(autouse=True)
def three_tries_are_enough() -> Iterator[None]:
    with override_settings(
        REBOUND=rebound_settings(
            LEARNING_HALF_LIFE_DAYS=7.0, LEARNING_MIN_TRIES=3.0, LEARNING_CACHE_SECONDS=60.0
        )
    ):
        yield


def learn(
    action: str, successes: int, failures: int = 0, *, at: datetime | None = None, **fields: Any
) -> None:
    """`successes` and `failures` results of an action, all at `at` (now by default)."""
    values: dict[str, Any] = {
        "service": "search",
        "error_class": "external_service",
        "fingerprint": FP,
        "at": at or timezone.now(),
        **fields,
    }
    outcomes = ["succeeded"] * successes + ["failed"] * failures
    services.record([Result(action=action, outcome=outcome, **values) for outcome in outcomes])  # type: ignore[arg-type]


def planner(fingerprint: str = FP) -> dict[str, selectors.Learned]:
    return selectors.for_planner(fingerprint=fingerprint, service="search", error_class="external_service")


# --- statistics ------------------------------------------------------------------------------------------


def test_it_decays_the_figures_to_now() -> None:
    learn("retry", 2, 2, at=T0)

    [pattern, service] = selectors.statistics(service="search", now=T0 + WEEK)

    for row in (pattern, service):
        assert row.figures.tries == pytest.approx(2.0)
        assert row.figures.successes == pytest.approx(1.0)
        assert row.figures.success_rate == pytest.approx(0.5)
        assert not row.figures.trusted  # 2 decayed tries, fewer than 3
        assert (row.total_tries, row.total_successes, row.total_unknown) == (4, 2, 0)
        assert (row.first_result_at, row.last_result_at) == (T0, T0)
    assert (pattern.scope, pattern.fingerprint) == ("pattern", FP)
    assert (service.scope, service.fingerprint, service.service) == ("service", "", "search")


def test_it_puts_the_best_lower_bound_first_within_each_scope_and_key() -> None:
    learn("retry", 1, 4, at=T0)
    learn("fallback:cache", 5, 0, at=T0)
    learn("wait", 3, 2, at=T0)

    rows = selectors.statistics(service="search", now=T0)

    assert [(r.scope, r.action) for r in rows] == [
        ("pattern", "fallback:cache"),
        ("pattern", "wait"),
        ("pattern", "retry"),
        ("service", "fallback:cache"),
        ("service", "wait"),
        ("service", "retry"),
    ]
    bounds = [r.figures.lower_bound for r in rows[:3]]
    assert bounds == sorted(bounds, reverse=True)


def test_it_filters_by_service_pattern_and_error_class() -> None:
    learn("retry", 1, at=T0)
    learn("retry", 1, at=T0, service="billing", fingerprint=OTHER_FP, error_class="timeout")

    assert {(r.scope, r.service) for r in selectors.statistics(service="billing", now=T0)} == {
        ("pattern", "billing"),
        ("service", "billing"),
    }
    assert [(r.scope, r.fingerprint) for r in selectors.statistics(fingerprint=FP, now=T0)] == [
        ("pattern", FP)
    ]
    assert {r.service for r in selectors.statistics(error_class="timeout", now=T0)} == {"billing"}
    assert len(selectors.statistics(now=T0)) == 4
    assert selectors.statistics(service="nobody", now=T0) == []


def test_it_answers_at_most_limit_rows() -> None:
    learn("retry", 1, at=T0)
    learn("wait", 1, at=T0)

    assert len(selectors.statistics(now=T0, limit=3)) == 3


# --- for_planner -----------------------------------------------------------------------------------------


def test_it_trusts_the_pattern_row_once_it_has_enough_tries() -> None:
    learn("fallback:cache", 3, 1)
    learn("fallback:cache", 0, 5, fingerprint=OTHER_FP)  # the service row now holds 3 of 9

    learned = planner()["fallback:cache"]

    assert (learned.action, learned.scope, learned.figures.trusted) == ("fallback:cache", "pattern", True)
    assert learned.figures.success_rate == pytest.approx(0.75, rel=1e-4)


def test_it_falls_back_to_the_trusted_service_row_for_a_new_pattern() -> None:
    learn("retry", 4, 1, fingerprint=OTHER_FP)
    learn("retry", 0, 1)

    learned = planner()["retry"]

    assert (learned.scope, learned.figures.trusted) == ("service", True)
    assert learned.figures.tries == pytest.approx(6.0, rel=1e-4)


def test_it_takes_the_better_filled_row_when_neither_is_trusted() -> None:
    with override_settings(REBOUND=rebound_settings(LEARNING_MIN_TRIES=10.0, LEARNING_CACHE_SECONDS=0.0)):
        learn("wait", 1, 0)
        # As filled as each other (the pattern's one try is the service's one): the narrower row, the pattern's.
        pattern_wins = planner()["wait"]
        learn("wait", 1, 0, fingerprint=OTHER_FP)
        service_wins = planner()["wait"]

    assert (pattern_wins.scope, pattern_wins.figures.trusted) == ("pattern", False)
    assert pattern_wins.figures.tries == pytest.approx(1.0, rel=1e-4)
    assert (service_wins.scope, service_wins.figures.trusted) == ("service", False)
    assert service_wins.figures.tries == pytest.approx(2.0, rel=1e-4)


def test_it_offers_only_the_actions_the_planner_may_choose_between() -> None:
    for action in (
        "retry",
        "wait",
        "fallback:service:search-b",
        "server_retry",
        "abort",
        "escalate",
        "degrade",
    ):
        learn(action, 1)
    learn("healing:restart", 1, fingerprint="", error_class="")

    assert sorted(planner()) == ["fallback:service:search-b", "retry", "wait"]


def test_it_uses_the_service_row_alone_without_a_fingerprint() -> None:
    learn("retry", 3)

    learned = selectors.for_planner(fingerprint="", service="search", error_class="external_service")

    assert learned["retry"].scope == "service"


def test_it_answers_nothing_for_what_it_never_learned() -> None:
    assert planner() == {}
    assert selectors.for_planner(fingerprint="", service="", error_class="") == {}


def test_it_caches_the_answer_until_forget() -> None:
    learn("retry", 3)
    first = planner()
    Effectiveness.objects.all().delete()

    assert planner() == first

    selectors.forget()
    assert planner() == {}


def test_it_reads_afresh_every_time_when_the_cache_is_off() -> None:
    with override_settings(REBOUND=rebound_settings(LEARNING_MIN_TRIES=3.0, LEARNING_CACHE_SECONDS=0.0)):
        learn("retry", 3)
        assert "retry" in planner()
        Effectiveness.objects.all().delete()
        assert planner() == {}


def test_it_keeps_the_cache_apart_per_error() -> None:
    learn("retry", 3)
    assert "retry" in planner()

    learn("wait", 3, fingerprint=OTHER_FP, error_class="timeout")

    assert sorted(selectors.for_planner(fingerprint=OTHER_FP, service="search", error_class="timeout")) == [
        "wait"
    ]

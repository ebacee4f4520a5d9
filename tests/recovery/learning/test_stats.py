"""The arithmetic of error learning (recovery/learning/stats.py), pure: decay, fold, retract, Wilson, figures."""

from __future__ import annotations

import pytest

from recovery.learning import stats

DAY = stats.DAY_S
WEEK = 7 * DAY


def test_it_halves_a_weight_after_one_half_life() -> None:
    assert stats.decay_factor(0.0, WEEK, WEEK) == pytest.approx(0.5)
    assert stats.decay_factor(0.0, 2 * WEEK, WEEK) == pytest.approx(0.25)


def test_it_never_grows_a_weight_when_the_clock_goes_back() -> None:
    assert stats.decay_factor(100.0, 99.0, WEEK) == 1.0
    sums = stats.Sums(tries=4.0, successes=2.0, as_of_s=100.0)
    back = sums.at(50.0, WEEK)
    assert (back.tries, back.successes, back.as_of_s) == (4.0, 2.0, 100.0)


def test_it_folds_a_success_with_its_times() -> None:
    sums = stats.fold(
        stats.Sums(), at_s=10.0, half_life_s=WEEK, succeeded=True, recover_s=3.0, recovered_after_s=2.0
    )
    assert (sums.tries, sums.successes, sums.recover_s_sum, sums.delay_s_sum, sums.delay_weight) == (
        1.0,
        1.0,
        3.0,
        2.0,
        1.0,
    )
    assert sums.as_of_s == 10.0


def test_it_folds_a_failure_or_an_unknown_as_a_try_without_a_success() -> None:
    sums = stats.fold(stats.Sums(), at_s=10.0, half_life_s=WEEK, succeeded=False, recover_s=5.0)
    assert (sums.tries, sums.successes, sums.recover_s_sum) == (1.0, 0.0, 0.0)


def test_it_decays_the_old_sums_before_adding_a_new_result() -> None:
    old = stats.Sums(tries=2.0, successes=2.0, as_of_s=0.0)
    sums = stats.fold(old, at_s=WEEK, half_life_s=WEEK, succeeded=False)
    assert (sums.tries, sums.successes, sums.as_of_s) == (pytest.approx(2.0), pytest.approx(1.0), WEEK)


def test_it_retracts_a_success_at_its_decayed_weight_and_never_below_zero() -> None:
    sums = stats.Sums(tries=2.0, successes=2.0, as_of_s=0.0)
    retracted = stats.retract(sums, at_s=WEEK, originally_at_s=0.0, half_life_s=WEEK)
    assert retracted.tries == pytest.approx(1.0)
    assert retracted.successes == pytest.approx(0.5)
    none = stats.retract(stats.Sums(tries=1.0, as_of_s=0.0), at_s=0.0, originally_at_s=0.0, half_life_s=WEEK)
    assert none.successes == 0.0


def test_it_answers_the_whole_range_for_no_tries() -> None:
    assert stats.wilson(0.0, 0.0) == (0.0, 1.0)


def test_it_bounds_a_share_tighter_with_more_tries() -> None:
    few_low, few_high = stats.wilson(3.0, 3.0)
    many_low, many_high = stats.wilson(300.0, 300.0)
    assert 0.0 < few_low < many_low < 1.0
    assert few_high == many_high == pytest.approx(1.0)
    low, high = stats.wilson(47.0, 50.0)
    assert low == pytest.approx(0.8378, abs=1e-3) and high == pytest.approx(0.9794, abs=1e-3)


def test_it_gives_figures_decayed_to_now_and_trusted_past_the_minimum() -> None:
    sums = stats.Sums(tries=20.0, successes=10.0, recover_s_sum=40.0, delay_s_sum=6.0, delay_weight=3.0)
    now = stats.figures(sums, now_s=0.0, half_life_s=WEEK, min_tries=10.0)
    assert (now.tries, now.success_rate, now.trusted, now.recover_s, now.delay_s) == (
        20.0,
        0.5,
        True,
        4.0,
        2.0,
    )
    later = stats.figures(sums, now_s=WEEK, half_life_s=WEEK, min_tries=10.0)
    assert later.tries == pytest.approx(10.0) and later.trusted
    assert later.success_rate == pytest.approx(0.5) and later.recover_s == pytest.approx(4.0)
    after_two = stats.figures(sums, now_s=2 * WEEK, half_life_s=WEEK, min_tries=10.0)
    assert not after_two.trusted


def test_it_gives_no_rate_and_no_times_for_an_empty_row() -> None:
    empty = stats.figures(stats.Sums(), now_s=0.0, half_life_s=WEEK, min_tries=10.0)
    assert (empty.success_rate, empty.lower_bound, empty.upper_bound, empty.recover_s, empty.delay_s) == (
        None,
        0.0,
        1.0,
        None,
        None,
    )
    assert not empty.trusted


def test_it_names_action_keys_and_which_the_planner_may_weigh() -> None:
    assert stats.fallback_key("cache") == "fallback:cache"
    assert stats.fallback_key("skip") == stats.DEGRADE
    assert stats.fallback_key("service", "search-b", "query") == "fallback:service:search-b/query"
    assert stats.healing_key("restart") == "healing:restart"
    assert [
        k for k in ("retry", "wait", "fallback:cache", "abort", "server_retry") if stats.choosable(k)
    ] == [
        "retry",
        "wait",
        "fallback:cache",
    ]
    assert stats.words("fallback:service:search-b") == "fallback to search-b"
    assert stats.words("server_retry") == "server retry"

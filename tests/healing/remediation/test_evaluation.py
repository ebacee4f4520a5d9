"""The evaluation of remediation rules: each trigger fires once per event, under the approval policy, and
every firing says what came of it."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from healing.actions.models import HealingRun
from healing.remediation import services
from healing.remediation.models import RuleCursor, RuleFiring
from recovery.breakers import services as breaker_services
from tests.support.healing_runs import run_row
from tests.support.remediation import (
    MEDIUM_ACTION,
    action,
    ago,
    breaker,
    breaker_goes,
    check,
    check_turns,
    critical_action,
    errors,
    rule,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("streams_from_start")]


def cursor(stream: str) -> int:
    return RuleCursor.objects.get(stream=stream).last_id


# --- each trigger fires once per event ---------------------------------------------------------------------


def test_it_fires_once_when_a_check_turns_unhealthy() -> None:
    watched = check()
    heal = rule(health_check=watched)
    transition = check_turns(watched)

    first, second = services.evaluate(), services.evaluate()

    assert (first, second) == (1, 0)
    [firing] = RuleFiring.objects.all()
    [run] = HealingRun.objects.all()
    assert (firing.rule, firing.event_key, firing.outcome, firing.run) == (
        heal,
        f"check_transition:{transition.pk}",
        "created",
        run,
    )
    assert "db-http turned unhealthy" in firing.detail
    assert (run.action.name, run.service, run.trigger, run.requested_by, run.parameters) == (
        "flush_fallback_cache",
        "db",
        "rule",
        "rule:heal-db",
        {},
    )
    assert run.reason.startswith("remediation rule heal-db: health check db-http turned unhealthy")


def test_it_fires_once_when_a_breaker_opens() -> None:
    service = breaker("payments")
    heal = rule("heal-payments", trigger="breaker_open", service="payments")
    transition = breaker_goes(service, "open")

    first, second = services.evaluate(), services.evaluate()

    assert (first, second) == (1, 0)
    [firing] = RuleFiring.objects.all()
    assert (firing.rule, firing.event_key, firing.outcome) == (
        heal,
        f"breaker_transition:{transition.pk}",
        "created",
    )
    [run] = HealingRun.objects.all()
    assert (run.service, run.trigger, run.requested_by) == ("payments", "rule", "rule:heal-payments")


@pytest.mark.redis
def test_it_fires_when_a_health_check_opens_the_breaker() -> None:
    # The breakers' own path (the real store): a failing check's verdict opens the breaker, a transition row.
    heal = rule("heal-payments", trigger="breaker_open", service="payments")
    effect = breaker_services.health_verdict(
        "payments", healthy=False, check="payments-http", reason="refused"
    )

    assert effect == "opened"
    assert services.evaluate() == 1
    assert RuleFiring.objects.get().rule == heal
    assert "breaker of payments went open" in RuleFiring.objects.get().detail


def test_it_fires_a_pattern_rule_once_per_window() -> None:
    heal = rule("heal-search", trigger="pattern_count", service="search", threshold=5, window_s=300)
    # The start of the current 300 s window: `now + 1 s` must fall in the same window whatever the clock says.
    now = timezone.now().replace(microsecond=0)
    now -= timedelta(seconds=int(now.timestamp()) % 300)
    errors("search", 5, at=now)  # still within the window that ends 300 s later

    first, again = services.evaluate(now=now), services.evaluate(now=now + timedelta(seconds=1))
    next_window = services.evaluate(now=now + timedelta(seconds=300))

    assert (first, again, next_window) == (1, 0, 1)
    firings = list(RuleFiring.objects.order_by("id"))
    assert [f.event_key for f in firings] == [
        services.pattern_key(heal, now),
        services.pattern_key(heal, now + timedelta(seconds=300)),
    ]
    # The second window finds the first window's run still open: it joins it, no second run.
    assert [f.outcome for f in firings] == ["created", "joined"]
    assert firings[0].run == firings[1].run
    assert HealingRun.objects.count() == 1
    assert "at least 5 errors from search in the last 300 s" in firings[0].detail


def test_it_counts_only_the_rules_error_class_within_its_window() -> None:
    rule("heal-search", trigger="pattern_count", service="search", error_class="rate_limit", threshold=3)
    errors("search", 2, "rate_limit")
    errors("search", 5, "transient")
    errors("search", 5, "rate_limit", at=ago(3600))  # before the window
    errors("other", 5, "rate_limit")

    assert services.evaluate() == 0
    errors("search", 1, "rate_limit")
    assert services.evaluate() == 1
    assert RuleFiring.objects.get().outcome == "created"


def test_it_fires_every_rule_that_watches_the_event() -> None:
    watched = check()
    rule("flush", health_check=watched)
    rule("reset", health_check=watched, act=MEDIUM_ACTION)
    check_turns(watched)

    assert services.evaluate() == 2
    assert sorted(RuleFiring.objects.values_list("rule__name", "outcome")) == [
        ("flush", "created"),
        ("reset", "created"),
    ]


def test_it_ignores_transitions_that_are_no_trouble() -> None:
    watched = check(state="healthy")
    rule(health_check=watched)
    rule("heal-payments", trigger="breaker_open", service="payments")
    check_turns(watched, "healthy")
    breaker_goes(breaker("payments"), "half_open", from_state="open")
    breaker_goes(breaker("payments"), "forced_open", from_state="half_open")  # an operator's decision

    assert services.evaluate() == 0
    assert RuleFiring.objects.count() == 0


def test_it_ignores_events_of_what_the_rule_does_not_watch() -> None:
    rule(health_check=check())
    rule("heal-payments", trigger="breaker_open", service="payments")
    check_turns(check("cache-http", service="cache"))
    breaker_goes(breaker("search"), "open")

    assert services.evaluate() == 0


def test_it_does_not_fire_a_disabled_rule() -> None:
    watched = check()
    rule(health_check=watched, enabled=False)
    rule("heal-payments", trigger="breaker_open", service="payments", enabled=False)
    rule("heal-search", trigger="pattern_count", service="search", threshold=1, enabled=False)
    check_turns(watched)
    breaker_goes(breaker("payments"), "open")
    errors("search", 3)

    assert services.evaluate() == 0
    assert (RuleFiring.objects.count(), HealingRun.objects.count()) == (0, 0)


def test_it_targets_the_rules_service_over_the_checks() -> None:
    watched = check(service="db")
    rule(health_check=watched, service="db-primary")
    check_turns(watched)

    services.evaluate()

    assert HealingRun.objects.get().service == "db-primary"


def test_it_passes_the_rules_parameters() -> None:
    watched = check()
    rule(health_check=watched, act="replay_dead_letters", parameters={"limit": 50})
    check_turns(watched)

    services.evaluate()

    assert HealingRun.objects.get().parameters == {"limit": 50}


# --- the approval policy and what came of the request --------------------------------------------------------


def test_it_leaves_a_medium_risk_run_waiting_for_approval() -> None:
    watched = check()
    rule(health_check=watched, act=MEDIUM_ACTION)
    check_turns(watched)

    services.evaluate()

    firing = RuleFiring.objects.get()
    assert firing.outcome == "created"
    assert firing.run is not None
    firing.run.refresh_from_db()
    assert (firing.run.state, firing.run.risk, firing.run.approvals_required, firing.run.started_at) == (
        "pending_approval",
        "medium",
        1,
        None,
    )


def test_it_records_a_critical_action_refused() -> None:
    watched = check()
    # Saved past the service's check (which refuses critical actions): the action was raised to critical later.
    rule(health_check=watched, act=critical_action())
    check_turns(watched)

    assert services.evaluate() == 1

    firing = RuleFiring.objects.get()
    assert firing.outcome.startswith("refused: ")
    assert "critical" in firing.outcome
    assert firing.run is None
    assert HealingRun.objects.count() == 0


def test_it_records_a_run_skipped_in_its_cooldown() -> None:
    watched = check()
    heal = rule(health_check=watched)
    # The same action on the same target ended a moment ago: its cooldown (60 s) is running.
    run_row(
        heal.action, "succeeded", service="db", created_at=ago(30), started_at=ago(25), finished_at=ago(20)
    )
    check_turns(watched)

    services.evaluate()

    firing = RuleFiring.objects.get()
    assert firing.outcome.startswith("skipped: ")
    assert firing.run is not None
    assert firing.run.state == "skipped"


def test_it_records_an_open_run_joined() -> None:
    watched = check()
    heal = rule(health_check=watched, act=MEDIUM_ACTION)
    open_run = run_row(
        heal.action, "pending_approval", service="db", approvals_required=1, created_at=ago(10)
    )
    check_turns(watched)

    services.evaluate()

    firing = RuleFiring.objects.get()
    assert (firing.outcome, firing.run) == ("joined", open_run)
    assert HealingRun.objects.count() == 1


def test_it_records_parameters_the_action_no_longer_accepts() -> None:
    watched = check()
    rule(health_check=watched, act=MEDIUM_ACTION, parameters={"force": True})  # reset_breaker takes none
    check_turns(watched)

    services.evaluate()

    firing = RuleFiring.objects.get()
    assert firing.outcome.startswith("invalid: ")
    assert firing.run is None


def test_it_does_not_ask_for_a_run_when_the_check_recovered_before_the_evaluation() -> None:
    watched = check(state="healthy")
    rule(health_check=watched)
    down = check_turns(watched, "unhealthy")
    up = check_turns(watched, "healthy")

    assert services.evaluate() == 1

    firing = RuleFiring.objects.get()
    assert firing.event_key == f"check_transition:{down.pk}"
    assert (
        firing.outcome == f"not requested: recovered before the rule was evaluated (check_transition:{up.pk})"
    )
    assert (firing.run, HealingRun.objects.count()) == (None, 0)


# --- the cursors -----------------------------------------------------------------------------------------------


def test_it_advances_the_cursors_past_settled_events() -> None:
    watched = check()
    rule(health_check=watched)
    old_check = check_turns(watched, at=ago(600))
    old_breaker = breaker_goes(breaker("payments"), "open", at=ago(600))

    services.evaluate()

    assert (cursor(services.CHECK_STREAM), cursor(services.BREAKER_STREAM)) == (old_check.pk, old_breaker.pk)


def test_it_keeps_the_cursor_behind_events_that_may_still_have_company() -> None:
    watched = check()
    rule(health_check=watched)
    settled = check_turns(watched, "healthy", at=ago(600))
    recent = check_turns(watched, "unhealthy")

    assert services.evaluate() == 1
    # The recent one is read again next time (a transition with a lower id may still commit), yet fires once.
    assert cursor(services.CHECK_STREAM) == settled.pk
    assert services.evaluate() == 0
    assert RuleFiring.objects.get().event_key == f"check_transition:{recent.pk}"


def test_it_moves_the_cursor_by_compare_and_set(monkeypatch: pytest.MonkeyPatch) -> None:
    watched = check()
    first = check_turns(watched, at=ago(600))
    second = check_turns(watched, at=ago(590))
    real_read = services.STREAMS[0].read

    def read_then_lose_the_race(after_id: int, limit: int) -> Any:
        events = real_read(after_id, limit)
        # Another evaluator moves the cursor while this one reads: this one's move finds it elsewhere.
        RuleCursor.objects.filter(stream=services.CHECK_STREAM).update(last_id=first.pk)
        return events

    racing = dataclasses.replace(services.STREAMS[0], read=read_then_lose_the_race)
    monkeypatch.setattr(services, "STREAMS", (racing, services.STREAMS[1]))

    services.evaluate()

    assert second.pk > first.pk
    assert cursor(services.CHECK_STREAM) == first.pk  # not overwritten by the loser


def test_it_starts_a_new_stream_after_the_events_already_written() -> None:
    RuleCursor.objects.all().delete()
    watched = check()
    rule(health_check=watched)
    history = check_turns(watched, at=ago(3600))

    assert services.evaluate() == 0  # history is not acted on
    assert cursor(services.CHECK_STREAM) == history.pk

    check_turns(watched)
    assert services.evaluate() == 1


# --- a firing its evaluator left half done -----------------------------------------------------------------------


def test_it_asks_again_for_a_firing_left_without_an_outcome() -> None:
    watched = check()
    heal = rule(health_check=watched)
    transition = check_turns(watched, at=ago(900))
    # The evaluator that inserted it was killed before it asked for the run.
    left = RuleFiring.objects.create(
        rule=heal,
        event_key=f"check_transition:{transition.pk}",
        detail="db-http turned unhealthy",
        created_at=ago(900),
    )

    assert services.evaluate() == 0  # no new firing: the event has one, and it is asked for again

    left.refresh_from_db()
    assert left.outcome == "created"
    assert left.run is not None
    assert HealingRun.objects.count() == 1


def test_it_leaves_a_fresh_firing_without_an_outcome_to_its_evaluator() -> None:
    heal = rule(health_check=check())
    fresh = RuleFiring.objects.create(rule=heal, event_key="check_transition:999", created_at=ago(5))

    services.evaluate()

    fresh.refresh_from_db()
    assert (fresh.outcome, fresh.run) == ("", None)


def test_it_does_not_ask_again_for_a_firing_of_a_rule_disabled_since() -> None:
    heal = rule(health_check=check(), enabled=False)
    left = RuleFiring.objects.create(rule=heal, event_key="check_transition:7", created_at=ago(900))

    services.evaluate()

    left.refresh_from_db()
    assert left.outcome.startswith("not requested: the rule was disabled")
    assert HealingRun.objects.count() == 0
    assert action().runs.count() == 0

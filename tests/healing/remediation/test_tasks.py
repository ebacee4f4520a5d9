"""The evaluation's task and the receivers that enqueue it once a watched event is committed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import OperationalError
from django.dispatch import Signal

from healing.checks import signals as check_signals
from healing.remediation import receivers, selectors, tasks
from healing.remediation.models import RuleFiring
from recovery.breakers import signals as breaker_signals
from recovery.breakers.models import BreakerTransition
from tests.support.remediation import breaker, breaker_goes, check, check_turns, rule

pytestmark = pytest.mark.django_db


@pytest.fixture
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The evaluations enqueued (no broker: the task's delay records its calls)."""
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(tasks.evaluate_rules, "delay", lambda *args: calls.append(args))
    return calls


def uids(signal: Signal) -> set[Any]:
    return {lookup_key[0] for lookup_key, *_ in signal.receivers}


WIRING: list[tuple[Signal, Callable[..., Any], str]] = [
    (check_signals.state_changed, receivers.on_check_state_changed, receivers.CHECKS_UID),
    (breaker_signals.transitions_committed, receivers.on_breaker_transitions, receivers.BREAKERS_UID),
]


@pytest.fixture
def connected() -> Iterator[None]:
    """The receivers connected as HealingConfig.ready() connects them, whether it has or not yet; what this
    fixture connected it disconnects, so that the wiring test below sees only ready()'s."""
    added = []
    for signal, receiver, uid in WIRING:
        if uid not in uids(signal):
            signal.connect(receiver, dispatch_uid=uid)
            added.append((signal, uid))
    yield
    for signal, uid in added:
        signal.disconnect(dispatch_uid=uid)


def test_it_runs_the_evaluation_as_a_thin_safe_task() -> None:
    task = tasks.evaluate_rules
    assert task.name == "healing.remediation.tasks.evaluate_rules"
    assert (task.acks_late, task.reject_on_worker_lost) == (True, True)
    assert (task.soft_time_limit, task.time_limit) == (50, 60)

    watched = check()
    rule(health_check=watched)
    tasks.evaluate_rules()  # the first evaluation places the cursors after what exists
    check_turns(watched)

    assert tasks.evaluate_rules() == 1
    assert RuleFiring.objects.count() == 1


def test_it_enqueues_an_evaluation_once_a_watched_check_turning_unhealthy_is_committed(
    enqueued: list[tuple[Any, ...]], connected: None, django_capture_on_commit_callbacks: Any
) -> None:
    watched = check()
    rule(health_check=watched)
    transition = check_turns(watched)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        check_signals.state_changed.send_robust(sender=type(transition), transition_id=transition.pk)
    assert enqueued == []  # nothing before the commit
    for callback in callbacks:
        callback()

    assert enqueued == [()]


def test_it_enqueues_an_evaluation_once_a_watched_breaker_opening_is_committed(
    enqueued: list[tuple[Any, ...]], connected: None, django_capture_on_commit_callbacks: Any
) -> None:
    rule("heal-payments", trigger="breaker_open", service="payments")
    row = breaker_goes(breaker("payments"), "open")

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        breaker_signals.transitions_committed.send(sender=BreakerTransition, rows=[row])
    assert enqueued == []
    for callback in callbacks:
        callback()

    assert enqueued == [()]


def test_it_leaves_to_beat_what_no_rule_watches(
    enqueued: list[tuple[Any, ...]], connected: None, django_capture_on_commit_callbacks: Any
) -> None:
    watched = check()
    rule(health_check=watched)
    rule("heal-payments", trigger="breaker_open", service="payments")
    rule("off", trigger="breaker_open", service="search", enabled=False)
    healthy = check_turns(watched, "healthy")
    unwatched = check_turns(check("cache-http", service="cache"))
    rows = [
        breaker_goes(breaker("payments"), "half_open", from_state="open"),
        breaker_goes(breaker("search"), "open"),
        breaker_goes(breaker("cache"), "open"),
    ]

    with django_capture_on_commit_callbacks(execute=True):
        check_signals.state_changed.send_robust(sender=type(healthy), transition_id=healthy.pk)
        check_signals.state_changed.send_robust(sender=type(unwatched), transition_id=unwatched.pk)
        breaker_signals.transitions_committed.send(sender=BreakerTransition, rows=rows)

    assert enqueued == []


def test_it_survives_a_broker_that_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks.evaluate_rules, "delay", refuse)

    tasks.evaluate_soon()  # logged, not raised: beat evaluates within 15 s


def test_a_receiver_that_cannot_ask_the_database_does_not_fail_the_breakers(
    enqueued: list[tuple[Any, ...]], connected: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = breaker_goes(breaker("payments"), "open")

    def unreachable(_: set[str]) -> bool:
        raise OperationalError("the database went away")

    monkeypatch.setattr(selectors, "watches_breakers_of", unreachable)

    breaker_signals.transitions_committed.send(sender=BreakerTransition, rows=[row])  # does not raise

    assert enqueued == []  # beat's evaluation reads the transition from its table


def test_it_is_connected_when_the_app_is_ready() -> None:
    # HealingConfig.ready() connects the receivers (healing/apps.py); Django ran it when the suite started.
    assert receivers.CHECKS_UID in uids(check_signals.state_changed)
    assert receivers.BREAKERS_UID in uids(breaker_signals.transitions_committed)

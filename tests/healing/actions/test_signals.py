"""run_changed and hold_placed: every change of a run's state (its creation included) is announced once committed,
with the transition's reason; a hold put on a looping action is announced; a failing receiver never fails the
run."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings

from healing.actions import services, signals
from healing.actions.models import HealingAction, HealingHold
from tests.support.factories import rebound_settings
from tests.support.healing_runs import ask, check_result, execute, health_check, operator_actor
from tests.support.http_target import Answer

pytestmark = pytest.mark.django_db

Heard = list[dict[str, Any]]


@pytest.fixture
def heard() -> Iterator[Heard]:
    calls: Heard = []

    def receiver(sender: object, signal: Any, **kwargs: Any) -> None:
        calls.append({"signal": "hold" if signal is signals.hold_placed else "run", **kwargs})

    signals.run_changed.connect(receiver, dispatch_uid="test-run-heard")
    signals.hold_placed.connect(receiver, dispatch_uid="test-hold-heard")
    yield calls
    signals.run_changed.disconnect(dispatch_uid="test-run-heard")
    signals.hold_placed.disconnect(dispatch_uid="test-hold-heard")


@pytest.fixture
def committed(django_capture_on_commit_callbacks: Any) -> Callable[[], Any]:
    return lambda: django_capture_on_commit_callbacks(execute=True)


def moves(heard: Heard) -> list[tuple[str, str]]:
    return [(h["from_state"], h["to_state"]) for h in heard if h["signal"] == "run"]


def test_it_announces_a_run_waiting_for_approval_and_each_move_after(
    webhook: Callable[..., HealingAction], target: Any, enqueued: list[int], heard: Heard, committed: Any
) -> None:
    webhook(risk="medium")
    with committed():
        run, _ = ask("restart-pods", "agent")
    assert heard == [
        {
            "signal": "run",
            "run_id": run.pk,
            "action": "restart-pods",
            "service": "web-search",
            "from_state": "",
            "to_state": "pending_approval",
            "state_reason": "medium risk: one operator approves",
        }
    ]
    with committed():
        services.approve(run_id=run.pk, actor=operator_actor(), reason="seen it too")
    with committed():
        execute(run)
    assert moves(heard) == [
        ("", "pending_approval"),
        ("pending_approval", "approved"),
        ("approved", "running"),
        ("running", "succeeded"),
    ]


def test_it_announces_a_failed_run_with_what_failed(
    webhook: Callable[..., HealingAction], target: Any, enqueued: list[int], heard: Heard, committed: Any
) -> None:
    webhook()
    target.script(Answer(503, {"error": "deploy tool down"}))
    with committed():
        run, _ = ask("restart-pods", "agent")
        assert execute(run) == "failed"
    last = heard[-1]
    assert (last["from_state"], last["to_state"], last["run_id"]) == ("running", "failed", run.pk)
    assert last["state_reason"] == run.state_reason and "webhook failed: HTTP 503" in last["state_reason"]


def test_it_announces_nothing_before_the_commit(
    webhook: Callable[..., HealingAction],
    target: Any,
    enqueued: list[int],
    heard: Heard,
    django_capture_on_commit_callbacks: Any,
) -> None:
    webhook(risk="medium")
    with django_capture_on_commit_callbacks(execute=False) as pending:
        ask("restart-pods", "agent")
    assert heard == []
    for callback in pending:
        callback()
    assert moves(heard) == [("", "pending_approval")]


def test_it_announces_a_hold_on_an_action_whose_verifications_keep_failing(
    webhook: Callable[..., HealingAction], target: Any, enqueued: list[int], heard: Heard, committed: Any
) -> None:
    check = health_check()
    webhook(verify_check=check, verify_within_s=1)
    with override_settings(REBOUND=rebound_settings(HEALING_HOLD_AFTER_FAILED_VERIFICATIONS=1)), committed():
        run, _ = ask("restart-pods", "agent")
        execute(run)
        check_result(check, ok=False)
        assert run.verify_deadline is not None
        services.maintain_runs(run.verify_deadline + timedelta(seconds=1))
    hold = HealingHold.objects.get()
    assert moves(heard)[-1] == ("verifying", "failed")
    assert heard[-2]["state_reason"].startswith("verification_failed")
    assert heard[-1] == {
        "signal": "hold",
        "hold_id": hold.pk,
        "action": "restart-pods",
        "service": "web-search",
    }


def test_a_failing_receiver_never_fails_the_run(
    webhook: Callable[..., HealingAction],
    target: Any,
    enqueued: list[int],
    committed: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def explode(sender: object, **_: Any) -> None:
        raise RuntimeError("the queue is down")

    webhook()
    signals.run_changed.connect(explode, dispatch_uid="test-run-explode")
    try:
        with caplog.at_level(logging.ERROR), committed():
            run, _ = ask("restart-pods", "agent")
            assert execute(run) == "succeeded"
    finally:
        signals.run_changed.disconnect(dispatch_uid="test-run-explode")
    assert "run_changed receiver" in caplog.text and "the queue is down" in caplog.text

"""The escalation queue's event triggers (healing/escalations/event_triggers.py) connected to the signals they
listen to, with the dispatch_uids healing/apps.py connects them with: connecting here when apps.py already did is
one receiver, and the fixture gives back only what it connected itself.

The worker processes of the slow tests connect them too: tests/support/escalation_worker.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.dispatch import Signal

from healing.actions import signals as action_signals
from healing.checks import signals as check_signals
from healing.escalations import event_triggers, selectors
from recovery.breakers import signals as breaker_signals
from recovery.checkpoints import signals as checkpoint_signals
from recovery.decisions import signals as decision_signals
from recovery.retries import signals as retry_signals
from recovery.sagas import signals as saga_signals

CONNECTIONS: list[tuple[Signal, Any, str]] = [
    (decision_signals.plan_decided, event_triggers.on_plan_decided, event_triggers.PLANS_UID),
    (retry_signals.job_finished, event_triggers.on_job_finished, event_triggers.JOBS_UID),
    (saga_signals.transaction_ended, event_triggers.on_transaction_ended, event_triggers.TRANSACTIONS_UID),
    (checkpoint_signals.tasks_went_stale, event_triggers.on_tasks_went_stale, event_triggers.STALE_TASKS_UID),
    (
        breaker_signals.transitions_committed,
        event_triggers.on_breaker_transitions,
        event_triggers.BREAKERS_UID,
    ),
    (check_signals.state_changed, event_triggers.on_check_state_changed, event_triggers.CHECKS_UID),
    (action_signals.run_changed, event_triggers.on_run_changed, event_triggers.RUNS_UID),
    (action_signals.hold_placed, event_triggers.on_hold_placed, event_triggers.HOLDS_UID),
]


def connected(signal: Signal, uid: str) -> bool:
    return any(lookup[0] == uid for lookup, *_ in signal.receivers)


def connect() -> list[tuple[Signal, str]]:
    """Connect every event trigger; answers the connections that were not there before."""
    added = []
    for signal, receiver, uid in CONNECTIONS:
        if not connected(signal, uid):
            signal.connect(receiver, dispatch_uid=uid)
            added.append((signal, uid))
    return added


@pytest.fixture
def escalation_receivers() -> Iterator[None]:
    """The event triggers connected for the test, with the triggers read afresh (an edit of a trigger's row in
    the test is in force at once)."""
    selectors.clear_trigger_cache()
    added = connect()
    yield
    for signal, uid in added:
        signal.disconnect(dispatch_uid=uid)
    selectors.clear_trigger_cache()

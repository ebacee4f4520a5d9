"""Receivers that make a rule fire within seconds of its event rather than at the next beat: they enqueue an
evaluation once the event is committed. Connected in HealingConfig.ready() (healing/apps.py).

They only enqueue; the evaluation reads the events from their tables, so a signal lost (a process that died,
a broker down, a database that did not answer the receiver's question) costs a delay of one beat, never a
firing. For the same reason they never raise: the breakers send their signal with send(), from the request
that made the transition, and a remediation rule must not fail an agent's call."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.db import transaction

from healing.remediation import selectors, tasks

log = logging.getLogger(__name__)

# The dispatch_uid of each connection (healing/apps.py): connecting twice is one receiver.
CHECKS_UID = "remediation-check-state-changed"
BREAKERS_UID = "remediation-breaker-transitions"


def on_check_state_changed(sender: object, transition_id: int | None = None, **_: Any) -> None:
    """healing.checks.signals.state_changed: a check changed state (sent on commit)."""
    if transition_id is None:
        return
    try:
        watched = selectors.turned_unhealthy_with_rules(int(transition_id))
    except Exception as error:
        log.warning("remediation: could not look at check transition %s: %s", transition_id, error)
        return
    if watched:
        # The signal comes after the commit; on_commit still waits if a caller wrapped it in a transaction.
        transaction.on_commit(tasks.evaluate_soon)


def on_breaker_transitions(sender: object, rows: Iterable[Any] = (), **_: Any) -> None:
    """recovery.breakers.signals.transitions_committed: a batch of breaker transitions was committed."""
    try:
        opened = {row.service.name for row in rows if row.to_state == "open"}
        watched = bool(opened) and selectors.watches_breakers_of(opened)
    except Exception as error:
        log.warning("remediation: could not look at committed breaker transitions: %s", error)
        return
    if watched:
        transaction.on_commit(tasks.evaluate_soon)

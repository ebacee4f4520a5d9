"""Fixtures of the escalation tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.dispatch import Signal

from core.infra import caches
from healing.escalations import error_triggers, selectors
from recovery.breakers import signals as breaker_signals
from recovery.breakers import traffic
from recovery.errors import signals as error_signals


def _connected(signal: Signal, uid: str) -> bool:
    return any(lookup[0] == uid for lookup, *_ in signal.receivers)


def _default_traffic() -> None:
    traffic.use_store(None)


@pytest.fixture
def error_triggers_connected() -> Iterator[None]:
    """The error triggers' receivers connected as healing/apps.py connects them (the same dispatch_uids: where
    apps.py already did, this adds nothing and takes nothing away), with this process's memory fresh."""
    wiring: list[tuple[Signal, Any, str]] = [
        (error_signals.errors_stored, error_triggers.on_errors_stored, error_triggers.ERRORS_UID),
        (breaker_signals.outcomes_recorded, error_triggers.on_outcomes, error_triggers.OUTCOMES_UID),
    ]
    ours = [(signal, receiver, uid) for signal, receiver, uid in wiring if not _connected(signal, uid)]
    for signal, receiver, uid in ours:
        signal.connect(receiver, dispatch_uid=uid)
    caches.register(error_triggers.forget, selectors.clear_trigger_cache, _default_traffic)
    error_triggers.forget()
    selectors.clear_trigger_cache()
    yield
    for signal, _, uid in ours:
        signal.disconnect(dispatch_uid=uid)
    error_triggers.forget()
    selectors.clear_trigger_cache()
    traffic.use_store(None)

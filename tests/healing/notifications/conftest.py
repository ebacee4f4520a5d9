"""Fixtures of the notification tests: a real loopback HTTP receiver that apprise's json:// URLs post to
(allowlisted by the outbound guard), channels on it, escalations raised through the queue's service, and the
send tasks the services enqueue, recorded instead of sent. Helpers live in helpers.py beside this file."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.dispatch import Signal

from healing.escalations import signals as escalation_signals
from healing.notifications import receivers, services
from tests.support.factories import rebound_settings
from tests.support.http_target import Target, running_target


@pytest.fixture
def receiver(settings: Any) -> Iterator[Target]:
    """The HTTP service the channels' json:// URLs post to: real, on 127.0.0.1, the only allowlisted host. Tests
    change other settings with `settings.REBOUND = rebound_settings(...)`, which keeps this allowlist."""
    with running_target() as server:
        settings.REBOUND = rebound_settings(OUTBOUND_ALLOWED_HOSTS=[server.host])
        yield server


@pytest.fixture
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """(delivery id, task id) of each send the services enqueued (recorded, not sent to the broker)."""
    sent: list[tuple[int, str]] = []
    monkeypatch.setattr(
        services, "enqueue_send", lambda delivery_id, task_id: sent.append((delivery_id, task_id))
    )
    return sent


def _connected(signal: Signal, uid: str) -> bool:
    return any(lookup[0] == uid for lookup, *_ in signal.receivers)


@pytest.fixture
def notice_receiver() -> Iterator[None]:
    """on_notice_due connected as healing/apps.py connects it (the same dispatch_uid: where apps.py already did,
    this adds nothing and takes nothing away)."""
    ours = not _connected(escalation_signals.notice_due, receivers.NOTICE_UID)
    if ours:
        escalation_signals.notice_due.connect(receivers.on_notice_due, dispatch_uid=receivers.NOTICE_UID)
    yield
    if ours:
        escalation_signals.notice_due.disconnect(dispatch_uid=receivers.NOTICE_UID)

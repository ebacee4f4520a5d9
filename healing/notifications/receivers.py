"""The receiver that turns an escalation's notice into notifications: it enqueues the notify task once the
notice is committed. Connected in HealingConfig.ready() (healing/apps.py) to
healing.escalations.signals.notice_due, with dispatch_uid NOTICE_UID.

It only enqueues, and never raises (the signal is sent with send_robust; an escalation's raise must not fail
because the broker did). A notice whose task was lost is planned by the beat within a minute or two
(services.replan_missed)."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from healing.notifications import tasks

log = logging.getLogger(__name__)

NOTICE_UID = "notifications-notice-due"


def _enqueue(escalation_id: int, notice: int) -> None:
    try:
        tasks.notify_escalation.delay(escalation_id, notice)
    except Exception as error:
        log.warning("could not enqueue the notice %s of escalation %s: %s", notice, escalation_id, error)


def on_notice_due(sender: object, *, escalation_id: int, notice: int, level: str = "", **_: Any) -> None:
    """healing.escalations.signals.notice_due: a change that must be told was committed."""
    escalation_id, notice = int(escalation_id), int(notice)
    # Sent after the commit already; on_commit still waits if a caller wrapped it in a longer transaction.
    transaction.on_commit(lambda: _enqueue(escalation_id, notice))

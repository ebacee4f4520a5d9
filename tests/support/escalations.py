"""Helpers of the escalation tests (tests/healing/escalations/ and the rooms that raise or notify): raising one,
the users and actors who work the queue, and the notices the queue sends (signals.notice_due), captured."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from core.access.roles import REVIEWERS
from core.audit.services import Actor
from healing.escalations import selectors, services, signals
from healing.escalations.models import Escalation
from tests.support import factories


def raise_one(key: str = "k", level: str = "warning", trigger: str = "agent", **kw: Any) -> Escalation:
    """raise_escalation by the system (or `actor=`), title and everything else defaulted; the escalation."""
    actor = kw.pop("actor", None)
    kw.setdefault("title", f"{trigger} {key}")
    return services.raise_escalation(
        services.Raise(trigger=trigger, dedup_key=key, level=level, **kw), actor=actor
    ).escalation


def raised(key: str = "k", level: str = "warning", trigger: str = "agent", **kw: Any) -> services.Raised:
    """Like raise_one, answering the outcome too."""
    actor = kw.pop("actor", None)
    kw.setdefault("title", f"{trigger} {key}")
    return services.raise_escalation(
        services.Raise(trigger=trigger, dedup_key=key, level=level, **kw), actor=actor
    )


def reviewer(**kwargs: Any) -> Any:
    """A user in the reviewers group (works the queue, is no operator)."""
    return factories.UserFactory(role=REVIEWERS, **kwargs)


def reviewer_actor(user: Any = None) -> Actor:
    return Actor(user=user or reviewer())


@dataclass(frozen=True)
class Notice:
    escalation_id: int
    notice: int
    level: str


@contextmanager
def captured_notices() -> Iterator[list[Notice]]:
    """The notices the queue sends (notice_due, on commit) while the block runs. Tests that are not
    transactional run the commit callbacks with django_capture_on_commit_callbacks(execute=True)."""
    seen: list[Notice] = []

    def receive(sender: Any, escalation_id: int, notice: int, level: str, **_: Any) -> None:
        seen.append(Notice(escalation_id, notice, level))

    signals.notice_due.connect(receive, dispatch_uid="tests.support.escalations.captured_notices", weak=False)
    try:
        yield seen
    finally:
        signals.notice_due.disconnect(dispatch_uid="tests.support.escalations.captured_notices")


def fresh_triggers() -> None:
    """Forget the triggers each process caches (after a test changes a trigger row)."""
    selectors.clear_trigger_cache()

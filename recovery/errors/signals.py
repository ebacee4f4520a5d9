"""What error intake tells the rooms above it (the escalation triggers in healing/), which connect in their
AppConfig.ready(): recovery never imports healing.

errors_stored: sent once error events are committed, from both write paths (the synchronous write of
services.record_errors, and the buffer's drain, intake.write_entries), with sightings (list[Sighting]): one
per pattern that got events, counting only the events actually inserted (a redelivered batch inserts nothing
and sends nothing). Sent with send_robust: a receiver's error is logged, never the intake's failure. It is
the intake path: receivers must be cheap when nothing concerns them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from django.db import connection, transaction
from django.dispatch import Signal

errors_stored = Signal()


@dataclass(frozen=True)
class Sighting:
    """Errors of one pattern just stored: what a trigger needs without asking the database again."""

    pattern_id: int
    fingerprint: str
    service: str
    operation: str
    error_class: str
    severity: str
    kind: str
    count: int  # events of this pattern inserted by this write
    message: str  # one of their messages (the pattern's sample)
    total: int = 0  # the pattern's count of all time, this write included (0: unknown)


def listened() -> bool:
    """Is anyone listening? The senders build no sightings when not (the intake's hot path)."""
    return bool(errors_stored.receivers)


def send_when_committed(sightings: list[Sighting]) -> None:
    """Send errors_stored once the events are committed: at commit inside a transaction, at once outside
    one (on_commit would ask the connection for its autocommit state on a path that need not touch it)."""
    if not sightings:
        return
    if connection.in_atomic_block:
        transaction.on_commit(partial(send, sightings))
    else:
        send(sightings)


def send(sightings: list[Sighting]) -> None:
    """Send errors_stored now (the caller knows the events are committed)."""
    if sightings:
        errors_stored.send_robust(sender=Sighting, sightings=sightings)

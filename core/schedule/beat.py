"""The beat scheduler: django-celery-beat's, sending an entry only when its tick is claimed (services.claim).

Several beat processes may run at once (two replicas, a rolling update, a second one started by mistake):
each still ticks on its own clock, but an entry is sent by one of them per period. An entry without a fixed
period (a crontab) is claimed for CRONTAB_PERIOD: no two beats send it within that long.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta
from typing import Any

from celery.schedules import schedule as interval
from django_celery_beat.schedulers import DatabaseScheduler

from core.schedule import services

log = logging.getLogger(__name__)
CRONTAB_PERIOD = timedelta(seconds=30)


def period_of(entry: Any) -> timedelta:
    """An entry's period: its interval, or CRONTAB_PERIOD for any other schedule."""
    every = entry.schedule.run_every if isinstance(entry.schedule, interval) else None
    return every if isinstance(every, timedelta) and every > timedelta(0) else CRONTAB_PERIOD


class ClaimingScheduler(DatabaseScheduler):  # type: ignore[misc]
    @property
    def beat_name(self) -> str:
        # Read at each claim: the pid is this process's, whichever process imported the class.
        return f"{socket.gethostname()}:{os.getpid()}"

    def apply_entry(self, entry: Any, producer: Any = None) -> None:
        try:
            claimed = services.claim(entry.name, period_of(entry), self.beat_name)
        except Exception:  # the database is away: send nothing rather than risk sending twice
            log.exception("beat: could not claim %s; not sent this tick", entry.name)
            return
        if not claimed:
            log.debug("beat: %s was sent by another beat this tick", entry.name)
            return
        super().apply_entry(entry, producer=producer)

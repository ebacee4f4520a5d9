"""Claiming a periodic entry's tick: a compare-and-set on its PeriodicClaim row.

Every beat process sends an entry when its own clock says it is due. A beat may send only if no beat (itself
included) sent that entry within the last CLAIM_FRACTION of its period: the UPDATE's condition. Zero rows updated
means another beat has this tick, and this one leaves it. Two beats whose clocks are out of phase therefore settle
on one sender: the first to claim keeps it, and a standby takes over within a period of the sender stopping.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from core.schedule.models import PeriodicClaim

# A beat's ticks wander by a few milliseconds to tens; a whole period would leave them racing at every tick.
CLAIM_FRACTION = 0.8


def claim(name: str, period: timedelta, beat: str, now: datetime | None = None) -> bool:
    """True when this beat may send `name` now (and the claim is recorded); False when another beat sent it less
    than CLAIM_FRACTION of `period` ago (the skip is counted)."""
    now = now or timezone.now()
    since = now - period * CLAIM_FRACTION
    with transaction.atomic():
        # The row first (once per entry): the compare-and-set below then has something to compare.
        PeriodicClaim.objects.bulk_create(
            [PeriodicClaim(name=name, sent_at=since - period, sent_by="")], ignore_conflicts=True
        )
        won = PeriodicClaim.objects.filter(name=name, sent_at__lte=since).update(
            sent_at=now, sent_by=beat[:200], sends=F("sends") + 1
        )
        if not won:
            PeriodicClaim.objects.filter(name=name).update(skips=F("skips") + 1)
    return bool(won)

"""A periodic entry's tick is claimed once (core/schedule/services.py): the compare-and-set every beat makes
before it sends."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from core.schedule import services
from core.schedule.models import PeriodicClaim
from tests.support.races import at_once

SECOND = timedelta(seconds=1)


@pytest.mark.django_db
def test_it_claims_an_entry_no_beat_has_sent() -> None:
    now = timezone.now()
    assert services.claim("dispatch", SECOND, "host:1", now)
    row = PeriodicClaim.objects.get(name="dispatch")
    assert (row.sent_at, row.sent_by, row.sends, row.skips) == (now, "host:1", 1, 0)


@pytest.mark.django_db
def test_it_leaves_a_tick_another_beat_has_sent() -> None:
    now = timezone.now()
    services.claim("dispatch", SECOND, "host:1", now)
    assert not services.claim("dispatch", SECOND, "host:2", now + timedelta(milliseconds=600))
    row = PeriodicClaim.objects.get(name="dispatch")
    assert (row.sent_at, row.sent_by, row.sends, row.skips) == (now, "host:1", 1, 1)


@pytest.mark.django_db
def test_it_claims_the_next_tick_once_most_of_the_period_has_passed() -> None:
    now = timezone.now()
    services.claim("dispatch", SECOND, "host:1", now)
    later = now + timedelta(milliseconds=850)
    assert services.claim("dispatch", SECOND, "host:2", later)
    row = PeriodicClaim.objects.get(name="dispatch")
    assert (row.sent_at, row.sent_by, row.sends) == (later, "host:2", 2)


@pytest.mark.django_db
def test_it_claims_each_entry_on_its_own() -> None:
    now = timezone.now()
    services.claim("dispatch", SECOND, "host:1", now)
    assert services.claim("drain", SECOND, "host:2", now)
    assert set(PeriodicClaim.objects.values_list("name", "sends")) == {("dispatch", 1), ("drain", 1)}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_lets_one_of_many_racing_beats_send_a_tick() -> None:
    now = timezone.now()
    won = at_once(8, lambda i: services.claim("dispatch", SECOND, f"host:{i}", now))
    assert won.count(True) == 1
    row = PeriodicClaim.objects.get(name="dispatch")
    assert (row.sends, row.skips) == (1, 7)

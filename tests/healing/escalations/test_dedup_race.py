"""Races with real threads against PostgreSQL: fifty raisers of one key at once make one escalation that counts
fifty occurrences, told once; fifty raisers of a key resolved moments ago reopen it once."""

from __future__ import annotations

from typing import Any

import pytest

from healing.escalations import services
from healing.escalations.models import Escalation, EscalationEvent
from tests.support.escalations import captured_notices, raise_one, raised, reviewer_actor
from tests.support.races import at_once
from tests.support.races import raised as errors_of

# Fifty threads, each with a database connection of its own, racing: about a second each; `make test` runs them.
pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True), pytest.mark.slow]

RAISERS = 50


def test_fifty_raisers_of_one_key_make_one_escalation_with_fifty_occurrences() -> None:
    key = "repeated_pattern:f00d"
    with captured_notices() as notices:
        results = at_once(
            RAISERS, lambda i: raised(key, "warning", "repeated_pattern", context={"raiser": i})
        )
    assert errors_of(results) == []
    row = Escalation.objects.get()
    assert (row.dedup_key, row.state, row.occurrences, row.notice) == (key, "open", RAISERS, 1)
    assert {r.escalation.pk for r in results} == {row.pk}
    assert sorted(r.outcome for r in results) == ["raised"] + ["repeated"] * (RAISERS - 1)
    kinds = list(EscalationEvent.objects.filter(escalation=row).values_list("kind", flat=True))
    assert (kinds.count("raised"), kinds.count("repeated"), len(kinds)) == (1, RAISERS - 1, RAISERS)
    assert [(n.escalation_id, n.notice) for n in notices] == [(row.pk, 1)]


def test_fifty_raisers_at_rising_levels_leave_the_highest_told_once_per_rise() -> None:
    key = "security:auth:x"
    levels = ["info", "warning", "critical", "emergency"]
    with captured_notices() as notices:
        results = at_once(RAISERS, lambda i: raised(key, levels[i % 4], "security"))
    assert errors_of(results) == []
    row = Escalation.objects.get()
    assert (row.level, row.occurrences) == ("emergency", RAISERS)
    changes = EscalationEvent.objects.filter(escalation=row, kind="level_changed").count()
    # Told when raised and at every rise, never twice for one: notices 1..n, each once.
    assert row.notice == 1 + changes
    assert sorted(n.notice for n in notices) == list(range(1, row.notice + 1))


def test_fifty_raisers_of_a_key_resolved_moments_ago_reopen_it_once() -> None:
    row = raise_one("k", "warning")
    services.resolve(escalation_id=row.pk, resolution="thought so", actor=reviewer_actor())
    results: list[Any] = at_once(RAISERS, lambda i: raised("k", "warning"))
    assert errors_of(results) == []
    assert Escalation.objects.count() == 1
    row.refresh_from_db()
    assert (row.state, row.occurrences) == ("open", 1 + RAISERS)
    assert sorted(r.outcome for r in results) == ["reopened"] + ["repeated"] * (RAISERS - 1)
    assert EscalationEvent.objects.filter(escalation=row, kind="reopened").count() == 1

"""The healing side's demo data (`make run`): the console's queue has something to show, and a second run
changes nothing."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from healing.actions.models import HealingRun
from healing.escalations.models import Escalation

pytestmark = pytest.mark.django_db


def test_it_fills_the_queue_with_escalations_and_a_run_waiting_for_approval() -> None:
    call_command("seed_healing_demo", stdout=io.StringIO())
    demo = Escalation.objects.filter(dedup_key__startswith="demo:")
    assert sorted(demo.values_list("level", flat=True)) == ["critical", "info", "warning"]
    run = HealingRun.objects.get()
    assert (run.state, run.service, run.action.name) == ("pending_approval", "stripe", "reset_breaker")


def test_it_changes_nothing_the_second_time() -> None:
    call_command("seed_healing_demo", stdout=io.StringIO())
    call_command("seed_healing_demo", stdout=io.StringIO())
    assert Escalation.objects.filter(dedup_key__startswith="demo:").count() == 3
    assert HealingRun.objects.count() == 1
    assert Escalation.objects.get(dedup_key="demo:stripe:card-declined-storm").occurrences == 1

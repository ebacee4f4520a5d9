"""The escalation policy's timers (data: warning -> critical after 30 minutes, critical -> emergency after 15) and
the snoozes that end, moved in time by passing `now`; and the beat task that runs both."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from healing.escalations import services, tasks
from healing.escalations.models import Escalation, EscalationPolicy
from tests.support.escalations import captured_notices, raise_one, reviewer_actor

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

MINUTE = timedelta(minutes=1)


def test_an_unacknowledged_warning_becomes_critical_after_30_minutes(
    django_capture_on_commit_callbacks: Any,
) -> None:
    row = raise_one("k", "warning")
    start = row.level_changed_at
    assert services.apply_policy(start + 29 * MINUTE) == 0
    with captured_notices() as notices, django_capture_on_commit_callbacks(execute=True):
        assert services.apply_policy(start + 30 * MINUTE) == 1
    row.refresh_from_db()
    assert (row.level, row.notice, row.level_changed_at) == ("critical", 2, start + 30 * MINUTE)
    change = row.events.get(kind="level_changed")
    assert (change.actor, change.from_level, change.to_level) == ("policy", "warning", "critical")
    assert [(n.notice, n.level) for n in notices] == [(2, "critical")]


def test_a_critical_becomes_emergency_15_minutes_later_one_step_a_pass() -> None:
    row = raise_one("k", "warning")
    start = row.level_changed_at
    # Long overdue: one pass moves it one step, and the next step's timer starts then.
    assert services.apply_policy(start + 120 * MINUTE) == 1
    row.refresh_from_db()
    assert row.level == "critical"
    assert services.apply_policy(start + 134 * MINUTE) == 0
    assert services.apply_policy(start + 135 * MINUTE) == 1
    row.refresh_from_db()
    assert (row.level, row.notice) == ("emergency", 3)
    assert services.apply_policy(start + 600 * MINUTE) == 0  # no step from emergency
    assert list(row.events.filter(kind="level_changed").values_list("from_level", "to_level")) == [
        ("warning", "critical"),
        ("critical", "emergency"),
    ]


def test_an_acknowledged_escalation_is_not_escalated() -> None:
    row = raise_one("k", "warning")
    services.acknowledge(escalation_id=row.pk, actor=reviewer_actor())
    assert services.apply_policy(row.level_changed_at + 120 * MINUTE) == 0
    row.refresh_from_db()
    assert (row.level, row.notice) == ("warning", 1)


def test_a_snoozed_or_resolved_escalation_is_not_escalated() -> None:
    snoozed = raise_one("a", "critical")
    resolved = raise_one("b", "critical")
    actor = reviewer_actor()
    services.snooze(escalation_id=snoozed.pk, until=timezone.now() + 60 * MINUTE, reason="r", actor=actor)
    services.resolve(escalation_id=resolved.pk, resolution="done", actor=actor)
    assert services.apply_policy(timezone.now() + 59 * MINUTE) == 0


def test_the_policy_steps_are_data() -> None:
    EscalationPolicy.objects.filter(from_level="warning").update(after_s=60)
    EscalationPolicy.objects.filter(from_level="critical").update(enabled=False)
    EscalationPolicy.objects.create(from_level="info", to_level="warning", after_s=10)
    warning = raise_one("w", "warning")
    critical = raise_one("c", "critical")
    info = raise_one("i", "info")
    assert services.apply_policy(timezone.now() + 2 * MINUTE) == 2
    levels = dict(Escalation.objects.values_list("pk", "level"))
    assert levels == {warning.pk: "critical", critical.pk: "critical", info.pk: "warning"}


def test_a_step_that_would_lower_a_level_is_skipped() -> None:
    EscalationPolicy.objects.create(from_level="emergency", to_level="info", after_s=1)
    row = raise_one("k", "emergency")
    assert services.apply_policy(timezone.now() + 10 * MINUTE) == 0
    row.refresh_from_db()
    assert row.level == "emergency"


def test_a_snooze_that_ended_opens_it_again_and_tells_it_again(
    django_capture_on_commit_callbacks: Any,
) -> None:
    row = raise_one("k", "warning")
    until = timezone.now() + 60 * MINUTE
    services.snooze(escalation_id=row.pk, until=until, reason="after the deploy", actor=reviewer_actor())
    assert services.wake_snoozed(until - MINUTE) == 0
    with captured_notices() as notices, django_capture_on_commit_callbacks(execute=True):
        assert services.wake_snoozed(until) == 1
    row.refresh_from_db()
    assert (row.state, row.snoozed_until, row.notice, row.level_changed_at) == ("open", None, 2, until)
    woke = row.events.get(kind="woke")
    assert (woke.actor, woke.data) == ("system", {"until": until.isoformat()})
    assert [(n.notice, n.level) for n in notices] == [(2, "warning")]
    assert services.wake_snoozed(until + MINUTE) == 0


def test_the_policy_timer_restarts_when_a_snooze_ends() -> None:
    row = raise_one("k", "warning")
    until = row.level_changed_at + 60 * MINUTE
    services.snooze(escalation_id=row.pk, until=until, reason="r", actor=reviewer_actor())
    services.wake_snoozed(until)
    assert services.apply_policy(until + 29 * MINUTE) == 0
    assert services.apply_policy(until + 30 * MINUTE) == 1


def test_the_beat_task_wakes_then_applies_the_policy() -> None:
    stale = raise_one("stale", "warning")
    Escalation.objects.filter(pk=stale.pk).update(level_changed_at=timezone.now() - 31 * MINUTE)
    snoozed = raise_one("snoozed", "warning")
    services.snooze(
        escalation_id=snoozed.pk, until=timezone.now() + MINUTE, reason="r", actor=reviewer_actor()
    )
    Escalation.objects.filter(pk=snoozed.pk).update(snoozed_until=timezone.now() - MINUTE)
    assert tasks.apply_escalation_policy.apply().get() == {"woke": 1, "escalated": 1}
    stale.refresh_from_db()
    snoozed.refresh_from_db()
    assert (stale.level, snoozed.state, snoozed.level) == ("critical", "open", "warning")


@pytest.mark.redis
def test_the_sweep_task_runs_the_time_based_triggers() -> None:
    # Nothing to find on an empty queue: each sweep answers how many it raised or resolved.
    done = tasks.sweep_triggers.apply().get()
    assert done and all(isinstance(n, int) for n in done.values())
    assert not Escalation.objects.exists()

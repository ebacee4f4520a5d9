"""Raising escalations: a new one, repeats counted into the one not resolved, the level raised only upward and
told only when it rose, reopening within the window, runbooks, agents' namespaced keys, automatic resolution and
the events written by other rooms."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone
from prometheus_client import REGISTRY

from core.api.errors import Forbidden, InvalidInput
from core.audit.services import Actor
from healing.escalations import services
from healing.escalations.models import Escalation, EscalationEvent, EscalationTrigger, Runbook
from tests.support import factories
from tests.support.escalations import captured_notices, fresh_triggers, raise_one, raised, reviewer_actor

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def kinds(escalation: Escalation) -> list[str]:
    return list(escalation.events.order_by("created_at", "id").values_list("kind", flat=True))


def test_it_raises_a_new_escalation_with_an_event_and_one_notice(
    django_capture_on_commit_callbacks: Any,
) -> None:
    with captured_notices() as notices, django_capture_on_commit_callbacks(execute=True):
        answer = raised(
            "rollback_failed:7",
            "emergency",
            "rollback_failed",
            title="Rollback of transaction 7 failed",
            summary="step 2 could not be compensated",
            service="payments",
            context={"step": 2},
        )
    row = Escalation.objects.get()
    assert answer.outcome == "raised"
    assert (row.state, row.level, row.occurrences, row.notice) == ("open", "emergency", 1, 1)
    assert (row.trigger, row.dedup_key, row.service, row.raised_by) == (
        "rollback_failed",
        "rollback_failed:7",
        "payments",
        "trigger:rollback_failed",
    )
    assert row.first_seen_at == row.last_seen_at == row.level_changed_at == row.created_at
    assert row.context == {"step": 2}
    event = row.events.get()
    assert (event.kind, event.actor, event.to_level) == ("raised", "trigger:rollback_failed", "emergency")
    assert [(n.escalation_id, n.notice, n.level) for n in notices] == [(row.pk, 1, "emergency")]


def test_it_cuts_the_title_to_200_characters() -> None:
    row = raise_one(title="x" * 500)
    assert len(row.title) == 200


def test_it_refuses_an_unknown_level_or_trigger_and_a_key_too_long() -> None:
    with pytest.raises(InvalidInput) as level:
        raise_one(level="dire")
    with pytest.raises(InvalidInput) as trigger:
        raise_one(trigger="gut_feeling")
    with pytest.raises(InvalidInput) as key:
        raise_one(key="k" * 301)
    assert (level.value.field, trigger.value.field, key.value.field) == ("level", "trigger", "dedup_key")
    assert not Escalation.objects.exists()


def test_it_links_what_is_behind_the_escalation() -> None:
    task = factories.task()
    row = raise_one("heartbeat_missed:1", trigger="heartbeat_missed", links={"task_id": task.pk})
    assert row.task_id == task.pk
    with pytest.raises(ValueError, match="unknown escalation links"):
        raise_one("x", links={"ticket_id": 3})


def test_a_repeat_refreshes_the_links_it_names() -> None:
    first, later = factories.task(task_id="job-1"), factories.task(task_id="job-2")
    raise_one("heartbeat_missed:x", trigger="heartbeat_missed", links={"task_id": first.pk}, context={"n": 1})
    row = raise_one("heartbeat_missed:x", trigger="heartbeat_missed", links={"task_id": later.pk})
    assert (row.task_id, row.context, row.occurrences) == (later.pk, {"n": 1}, 2)


def test_it_counts_a_repeat_into_the_open_one_without_telling_again(
    django_capture_on_commit_callbacks: Any,
) -> None:
    first = raise_one("security:auth:abc", "warning", "security")
    with captured_notices() as notices, django_capture_on_commit_callbacks(execute=True):
        answer = raised("security:auth:abc", "warning", "security", context={"attempt": 2})
        again = raised("security:auth:abc", "info", "security")
    first.refresh_from_db()
    assert (answer.outcome, again.outcome) == ("repeated", "repeated")
    assert answer.escalation.pk == again.escalation.pk == first.pk
    # The escalation answered is the row as written, loaded as the ORM loads it.
    assert (answer.escalation.occurrences, answer.escalation.context, again.escalation.occurrences) == (
        2,
        {"attempt": 2},
        3,
    )
    assert again.escalation.last_seen_at.tzinfo is not None
    assert (first.occurrences, first.level, first.notice) == (3, "warning", 1)
    assert first.last_seen_at > first.first_seen_at
    assert first.context == {"attempt": 2}
    assert kinds(first) == ["raised", "repeated", "repeated"]
    assert notices == []
    assert Escalation.objects.count() == 1


def test_it_raises_the_level_of_the_open_one_and_tells_it_once(
    django_capture_on_commit_callbacks: Any,
) -> None:
    first = raise_one("security:auth:abc", "warning", "security")
    with captured_notices() as notices, django_capture_on_commit_callbacks(execute=True):
        answer = raised("security:auth:abc", "critical", "security")
    first.refresh_from_db()
    assert answer.outcome == "repeated"
    assert (first.level, first.notice, first.occurrences) == ("critical", 2, 2)
    assert first.level_changed_at == first.last_seen_at
    change = first.events.get(kind="level_changed")
    assert (change.from_level, change.to_level, change.actor) == ("warning", "critical", "trigger:security")
    assert [(n.notice, n.level) for n in notices] == [(2, "critical")]


def test_it_never_lowers_the_level_on_a_repeat() -> None:
    raise_one("k", "critical")
    row = raise_one("k", "info")
    assert (row.level, row.notice, row.occurrences) == ("critical", 1, 2)
    assert not row.events.filter(kind="level_changed").exists()


def test_a_sweep_that_finds_the_condition_again_changes_nothing() -> None:
    raise_one("error_rate:search", "critical", "error_rate")
    answer = raised("error_rate:search", "critical", "error_rate", count_repeat=False)
    row = Escalation.objects.get()
    assert answer.outcome == "unchanged"
    assert row.occurrences == 1
    assert kinds(row) == ["raised"]


def test_it_reopens_one_resolved_within_the_window_and_tells_it_again(
    django_capture_on_commit_callbacks: Any,
) -> None:
    first = raise_one("retry_needs_human:svc:op", "warning", "retry_needs_human")
    services.resolve(escalation_id=first.pk, resolution="retried by hand", actor=reviewer_actor())
    with captured_notices() as notices, django_capture_on_commit_callbacks(execute=True):
        answer = raised("retry_needs_human:svc:op", "critical", "retry_needs_human")
    first.refresh_from_db()
    assert (answer.outcome, answer.escalation.pk) == ("reopened", first.pk)
    assert (first.state, first.level, first.occurrences, first.notice) == ("open", "critical", 2, 2)
    assert (first.resolved_at, first.resolved_by_id, first.resolution) == (None, None, "")
    assert kinds(first) == ["raised", "resolved", "reopened", "level_changed"]
    assert first.events.get(kind="reopened").data["resolution"] == "retried by hand"
    assert [(n.escalation_id, n.notice, n.level) for n in notices] == [(first.pk, 2, "critical")]
    assert Escalation.objects.count() == 1


def test_it_raises_a_new_one_once_the_window_has_passed() -> None:
    first = raise_one("k")
    services.auto_resolve(["k"], reason="cleared")
    Escalation.objects.filter(pk=first.pk).update(resolved_at=timezone.now() - timedelta(seconds=3601))
    answer = raised("k")
    assert answer.outcome == "raised"
    assert answer.escalation.pk != first.pk
    assert list(Escalation.objects.order_by("id").values_list("state", flat=True)) == ["resolved", "open"]


@override_settings(REBOUND=factories.rebound_settings(ESCALATION_REOPEN_WINDOW_SECONDS=0))
def test_it_never_reopens_with_a_window_of_zero() -> None:
    first = raise_one("k")
    services.auto_resolve(["k"], reason="cleared")
    assert raised("k").escalation.pk != first.pk


def test_it_matches_the_most_specific_runbook() -> None:
    Runbook.objects.create(
        name="payments-integrity", service="payments", trigger="data_integrity", steps="call Ann"
    )
    Runbook.objects.create(name="payments-any", service="payments", priority=1, steps="look at payments")
    row = raise_one("data_integrity:payments:f", "critical", "data_integrity", service="payments")
    other = raise_one("data_integrity:search:f", "critical", "data_integrity", service="search")
    assert (row.runbook.name, row.recommended_action) == ("payments-integrity", "call Ann")
    assert other.runbook.name == "data-integrity"  # the built-in one for the trigger
    assert raise_one("x", trigger="agent").runbook.name == "general"


def test_an_agent_raises_under_its_own_namespace() -> None:
    agent = factories.AgentFactory(name="billing-bot")
    actor = Actor(agent=agent)
    answer = services.raise_by_agent(
        level="critical",
        title="Invoices stuck",
        summary="",
        dedup_key="stuck",
        service="billing",
        context={"n": 3},
        actor=actor,
    )
    row = answer.escalation
    assert (row.trigger, row.dedup_key, row.raised_by, row.raised_by_agent) == (
        "agent",
        "agent:billing-bot:stuck",
        "agent:billing-bot",
        agent,
    )
    assert row.events.get().actor == "agent:billing-bot"


def test_two_agents_with_the_same_key_raise_two_escalations() -> None:
    for name in ("a1", "a2"):
        services.raise_by_agent(
            level="warning",
            title="t",
            summary="",
            dedup_key="same",
            service="",
            context={},
            actor=Actor(agent=factories.AgentFactory(name=name)),
        )
    assert sorted(Escalation.objects.values_list("dedup_key", flat=True)) == [
        "agent:a1:same",
        "agent:a2:same",
    ]


def test_a_viewer_may_not_raise_one() -> None:
    with pytest.raises(Forbidden):
        services.raise_by_agent(
            level="info",
            title="t",
            summary="",
            dedup_key="k",
            service="",
            context={},
            actor=Actor(user=factories.viewer()),
        )


def test_nothing_is_raised_through_the_api_while_the_agent_trigger_is_off() -> None:
    EscalationTrigger.objects.filter(kind="agent").update(enabled=False)
    fresh_triggers()
    with pytest.raises(Forbidden):
        services.raise_by_agent(
            level="info",
            title="t",
            summary="",
            dedup_key="k",
            service="",
            context={},
            actor=Actor(agent=factories.AgentFactory()),
        )
    fresh_triggers()
    assert not Escalation.objects.exists()


def test_it_resolves_by_the_system_the_escalations_whose_condition_cleared() -> None:
    kept = raise_one("breaker_open_too_long:search", "critical", "breaker_open_too_long")
    gone = raise_one("breaker_open_too_long:payments", "critical", "breaker_open_too_long")
    assert (
        services.auto_resolve(["breaker_open_too_long:payments", "nothing:here"], reason="breaker closed")
        == 1
    )
    assert services.auto_resolve(["breaker_open_too_long:payments"], reason="breaker closed") == 0
    gone.refresh_from_db()
    kept.refresh_from_db()
    assert (gone.state, gone.auto_resolved, gone.resolution, gone.resolved_by_id) == (
        "resolved",
        True,
        "breaker closed",
        None,
    )
    assert gone.resolved_at is not None
    event = gone.events.get(kind="resolved")
    assert (event.actor, event.text) == ("system", "breaker closed")
    assert kept.state == "open"


def test_it_counts_raised_escalations_by_trigger_and_level(django_capture_on_commit_callbacks: Any) -> None:
    labels = {"trigger": "heartbeat_missed", "level": "warning"}
    before = REGISTRY.get_sample_value("escalations_raised_total", labels) or 0.0
    with django_capture_on_commit_callbacks(execute=True):
        raise_one("heartbeat_missed:1", trigger="heartbeat_missed")
        raise_one("heartbeat_missed:1", trigger="heartbeat_missed")  # a repeat: not counted
        raise_one("heartbeat_missed:2", trigger="heartbeat_missed")
    assert REGISTRY.get_sample_value("escalations_raised_total", labels) == before + 2


def test_other_rooms_record_events_in_the_history() -> None:
    row = raise_one()
    event = services.record_event(
        row.pk, "notified", actor="channel:ops-slack", text="ops-slack", data={"n": 1}
    )
    assert (event.kind, event.actor, event.text, event.data) == (
        "notified",
        "channel:ops-slack",
        "ops-slack",
        {"n": 1},
    )
    assert kinds(row) == ["raised", "notified"]
    with pytest.raises(ValueError):
        services.record_event(row.pk, "poked", actor="x")
    assert EscalationEvent.objects.count() == 2

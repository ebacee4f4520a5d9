"""The human acts on the queue: acknowledge, assign, comment, snooze, resolve, reopen. Each is a compare-and-set
with an event row and an audit row; reviewers and operators only; a 409 naming the state for an act the
escalation's state does not allow (acting on a resolved one, or twice)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from prometheus_client import REGISTRY

from core.api.errors import Conflict, Forbidden, InvalidInput, NotFound
from core.audit.models import AuditEvent
from core.audit.services import Actor
from healing.escalations import services
from healing.escalations.models import Escalation
from tests.support import factories
from tests.support.escalations import captured_notices, raise_one, reviewer, reviewer_actor

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def audits(row: Escalation, action: str) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(target_type="healing.escalation", target_id=str(row.pk), action=action)
    )


def test_a_reviewer_acknowledges_an_open_escalation(django_capture_on_commit_callbacks: Any) -> None:
    row = raise_one("k", "critical")
    user = reviewer()
    before = (
        REGISTRY.get_sample_value("escalation_time_to_acknowledge_seconds_count", {"level": "critical"}) or 0
    )
    with django_capture_on_commit_callbacks(execute=True):
        done = services.acknowledge(escalation_id=row.pk, actor=Actor(user=user))
    row.refresh_from_db()
    assert (done.state, row.state, row.acknowledged_by, row.level) == (
        "acknowledged",
        "acknowledged",
        user,
        "critical",
    )
    assert row.acknowledged_at is not None
    event = row.events.get(kind="acknowledged")
    assert (event.actor, event.user) == (f"user:{user.username}", user)
    [audit] = audits(row, "escalation.acknowledge")
    assert (audit.actor_user, audit.before, audit.after) == (
        user,
        {"state": "open"},
        {"state": "acknowledged"},
    )
    after = REGISTRY.get_sample_value("escalation_time_to_acknowledge_seconds_count", {"level": "critical"})
    assert after == before + 1


def test_acknowledging_twice_is_a_conflict_naming_the_state() -> None:
    row = raise_one()
    services.acknowledge(escalation_id=row.pk, actor=reviewer_actor())
    with pytest.raises(Conflict) as twice:
        services.acknowledge(escalation_id=row.pk, actor=reviewer_actor())
    assert twice.value.field == "state"
    assert f"Escalation {row.pk} is acknowledged" in twice.value.message
    assert row.events.filter(kind="acknowledged").count() == 1
    assert len(audits(row, "escalation.acknowledge")) == 1


def test_acknowledging_a_snoozed_one_ends_the_snooze() -> None:
    row = raise_one()
    actor = reviewer_actor()
    services.snooze(
        escalation_id=row.pk, until=timezone.now() + timedelta(hours=1), reason="lunch", actor=actor
    )
    services.acknowledge(escalation_id=row.pk, actor=actor)
    row.refresh_from_db()
    assert (row.state, row.snoozed_until) == ("acknowledged", None)


def test_every_act_on_a_resolved_one_but_reopen_is_a_conflict() -> None:
    row = raise_one()
    actor = reviewer_actor()
    other = reviewer()
    services.resolve(escalation_id=row.pk, resolution="fixed", actor=actor)
    acts = [
        lambda: services.acknowledge(escalation_id=row.pk, actor=actor),
        lambda: services.assign(escalation_id=row.pk, username=other.username, actor=actor),
        lambda: services.comment(escalation_id=row.pk, text="late", actor=actor),
        lambda: services.snooze(
            escalation_id=row.pk, until=timezone.now() + timedelta(hours=1), reason="r", actor=actor
        ),
        lambda: services.resolve(escalation_id=row.pk, resolution="again", actor=actor),
    ]
    for act in acts:
        with pytest.raises(Conflict) as refused:
            act()
        assert refused.value.field == "state"
        assert f"Escalation {row.pk} is resolved" in refused.value.message
    assert [e for e in row.events.values_list("kind", flat=True)] == ["raised", "resolved"]


def test_it_assigns_to_a_reviewer_without_changing_the_state() -> None:
    row = raise_one()
    bob = reviewer(username="bob")
    actor = reviewer_actor()
    done = services.assign(escalation_id=row.pk, username="bob", actor=actor)
    assert (done.assignee, done.state) == (bob, "open")
    event = row.events.get(kind="assigned")
    assert (event.text, event.data) == ("bob", {"from": None})
    [audit] = audits(row, "escalation.assign")
    assert (audit.before, audit.after) == ({"assignee": None}, {"assignee": "bob"})
    with pytest.raises(Conflict):
        services.assign(escalation_id=row.pk, username="bob", actor=actor)


def test_it_assigns_only_to_an_existing_reviewer_or_operator() -> None:
    row = raise_one()
    factories.viewer(username="vic")
    factories.operator(username="olga")
    actor = reviewer_actor()
    for name in ("nobody", "vic"):
        with pytest.raises(InvalidInput) as refused:
            services.assign(escalation_id=row.pk, username=name, actor=actor)
        assert refused.value.field == "user"
    assert services.assign(escalation_id=row.pk, username="olga", actor=actor).assignee.username == "olga"


def test_a_comment_is_an_event_and_an_audit_row() -> None:
    row = raise_one()
    user = reviewer()
    event = services.comment(escalation_id=row.pk, text="  looking at the logs  ", actor=Actor(user=user))
    assert (event.kind, event.text, event.user) == ("commented", "looking at the logs", user)
    [audit] = audits(row, "escalation.comment")
    assert audit.reason == "looking at the logs"
    with pytest.raises(InvalidInput) as empty:
        services.comment(escalation_id=row.pk, text="   ", actor=Actor(user=user))
    assert empty.value.field == "text"


def test_it_snoozes_until_a_time_with_a_reason() -> None:
    row = raise_one()
    until = timezone.now() + timedelta(hours=2)
    done = services.snooze(
        escalation_id=row.pk, until=until, reason="deploy in progress", actor=reviewer_actor()
    )
    assert (done.state, done.snoozed_until) == ("snoozed", until)
    event = row.events.get(kind="snoozed")
    assert (event.text, event.data) == ("deploy in progress", {"until": until.isoformat()})
    [audit] = audits(row, "escalation.snooze")
    assert (audit.reason, audit.after["state"]) == ("deploy in progress", "snoozed")


def test_a_snooze_ends_in_the_future_within_30_days_and_says_why() -> None:
    row = raise_one()
    actor = reviewer_actor()
    now = timezone.now()
    cases = [
        (now - timedelta(seconds=1), "r", "until"),
        (now + timedelta(days=31), "r", "until"),
        (now + timedelta(hours=1), "  ", "reason"),
    ]
    for until, reason, field in cases:
        with pytest.raises(InvalidInput) as refused:
            services.snooze(escalation_id=row.pk, until=until, reason=reason, actor=actor)
        assert refused.value.field == field
    row.refresh_from_db()
    assert row.state == "open"


def test_a_reviewer_resolves_with_a_resolution(django_capture_on_commit_callbacks: Any) -> None:
    row = raise_one("k", "warning")
    user = reviewer()
    before = REGISTRY.get_sample_value("escalation_time_to_resolve_seconds_count", {"level": "warning"}) or 0
    with django_capture_on_commit_callbacks(execute=True):
        done = services.resolve(escalation_id=row.pk, resolution="rotated the key", actor=Actor(user=user))
    assert (done.state, done.resolved_by, done.resolution, done.auto_resolved) == (
        "resolved",
        user,
        "rotated the key",
        False,
    )
    [audit] = audits(row, "escalation.resolve")
    assert (audit.reason, audit.before, audit.after) == (
        "rotated the key",
        {"state": "open"},
        {"state": "resolved"},
    )
    assert (
        REGISTRY.get_sample_value("escalation_time_to_resolve_seconds_count", {"level": "warning"})
        == before + 1
    )
    with pytest.raises(InvalidInput) as blank:
        services.resolve(escalation_id=raise_one("other").pk, resolution="", actor=Actor(user=user))
    assert blank.value.field == "resolution"


def test_a_reopen_opens_it_again_and_tells_it_again(django_capture_on_commit_callbacks: Any) -> None:
    row = raise_one("k", "critical")
    actor = reviewer_actor()
    services.acknowledge(escalation_id=row.pk, actor=actor)
    services.resolve(escalation_id=row.pk, resolution="restarted", actor=actor)
    with captured_notices() as notices, django_capture_on_commit_callbacks(execute=True):
        done = services.reopen(escalation_id=row.pk, reason="it is back", actor=actor)
    assert (done.state, done.notice, done.resolution, done.resolved_at, done.acknowledged_at) == (
        "open",
        2,
        "",
        None,
        None,
    )
    assert row.events.get(kind="reopened").text == "it is back"
    [audit] = audits(row, "escalation.reopen")
    assert audit.before == {"state": "resolved", "resolution": "restarted"}
    assert [(n.notice, n.level) for n in notices] == [(2, "critical")]


def test_reopening_an_open_one_is_a_conflict() -> None:
    row = raise_one()
    with pytest.raises(Conflict) as refused:
        services.reopen(escalation_id=row.pk, reason="", actor=reviewer_actor())
    assert f"Escalation {row.pk} is open" in refused.value.message


def test_reopening_while_another_one_with_the_key_is_open_is_a_conflict() -> None:
    old = raise_one("k")
    services.auto_resolve(["k"], reason="cleared")
    Escalation.objects.filter(pk=old.pk).update(resolved_at=timezone.now() - timedelta(days=1))
    new = raise_one("k")
    assert new.pk != old.pk
    with pytest.raises(Conflict) as refused:
        services.reopen(escalation_id=old.pk, reason="", actor=reviewer_actor())
    assert f"Escalation {new.pk}" in refused.value.message
    old.refresh_from_db()
    assert old.state == "resolved"
    assert not old.events.filter(kind="reopened").exists()


@pytest.mark.parametrize("who", ["viewer", "agent", "nobody"])
def test_only_reviewers_and_operators_work_the_queue(who: str) -> None:
    row = raise_one()
    actor = {
        "viewer": lambda: Actor(user=factories.viewer()),
        "agent": lambda: Actor(agent=factories.AgentFactory()),
        "nobody": lambda: Actor(),
    }[who]()
    with pytest.raises(Forbidden):
        services.acknowledge(escalation_id=row.pk, actor=actor)
    with pytest.raises(Forbidden):
        services.resolve(escalation_id=row.pk, resolution="x", actor=actor)
    with pytest.raises(Forbidden):
        services.comment(escalation_id=row.pk, text="x", actor=actor)
    row.refresh_from_db()
    assert row.state == "open"
    assert not AuditEvent.objects.filter(target_type="healing.escalation").exists()


def test_an_operator_works_the_queue_too() -> None:
    row = raise_one()
    done = services.acknowledge(escalation_id=row.pk, actor=Actor(user=factories.operator()))
    assert done.state == "acknowledged"


def test_an_unknown_escalation_is_not_found() -> None:
    with pytest.raises(NotFound):
        services.acknowledge(escalation_id=999_999, actor=reviewer_actor())

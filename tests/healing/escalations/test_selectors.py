"""Reads of the queue: its order and filters, an agent's own escalations, one with its history, the triggers in
force (cached), the keys a trigger auto-resolves, runbooks and the open counts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from core.api.errors import InvalidInput, NotFound
from core.audit.services import Actor
from healing.escalations import selectors, services
from healing.escalations.models import Escalation, EscalationTrigger, Runbook
from tests.support import factories
from tests.support.escalations import raise_one, reviewer, reviewer_actor

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def aged(row: Escalation, minutes: int) -> Escalation:
    Escalation.objects.filter(pk=row.pk).update(first_seen_at=timezone.now() - timedelta(minutes=minutes))
    return row


def test_the_queue_puts_what_is_not_resolved_first_then_the_highest_level_then_the_oldest() -> None:
    old_warning = aged(raise_one("a", "warning"), 50)
    new_warning = aged(raise_one("b", "warning"), 5)
    emergency = aged(raise_one("c", "emergency"), 1)
    info = aged(raise_one("d", "info"), 90)
    acked_critical = aged(raise_one("e", "critical"), 3)
    done = aged(raise_one("f", "emergency"), 100)
    actor = reviewer_actor()
    services.acknowledge(escalation_id=acked_critical.pk, actor=actor)
    services.resolve(escalation_id=done.pk, resolution="fixed", actor=actor)
    assert [e.pk for e in selectors.queue()] == [
        emergency.pk,
        acked_critical.pk,
        old_warning.pk,
        new_warning.pk,
        info.pk,
        done.pk,
    ]


def test_the_queue_filters_by_state_level_service_and_assignee() -> None:
    bob = reviewer(username="bob")
    a = raise_one("a", "warning", service="search")
    b = raise_one("b", "critical", service="payments")
    services.assign(escalation_id=b.pk, username="bob", actor=reviewer_actor())
    services.acknowledge(escalation_id=a.pk, actor=reviewer_actor())
    assert [e.pk for e in selectors.queue(state="acknowledged")] == [a.pk]
    assert [e.pk for e in selectors.queue(level="critical")] == [b.pk]
    assert [e.pk for e in selectors.queue(service="search")] == [a.pk]
    assert [e.pk for e in selectors.queue(assignee="bob")] == [b.pk]
    assert [e.pk for e in selectors.queue(mine=bob)] == [b.pk]
    assert [e.pk for e in selectors.queue(mine=reviewer())] == []


def test_the_queue_refuses_an_unknown_state_or_level() -> None:
    with pytest.raises(InvalidInput) as state:
        selectors.queue(state="closed")
    with pytest.raises(InvalidInput) as level:
        selectors.queue(level="severe")
    assert (state.value.field, level.value.field) == ("state", "level")


def test_an_agent_reads_only_the_escalations_it_raised() -> None:
    agent = factories.AgentFactory(name="bot")
    mine = services.raise_by_agent(
        level="info", title="t", summary="", dedup_key="k", service="", context={}, actor=Actor(agent=agent)
    ).escalation
    theirs = raise_one("system-one")
    assert [e.pk for e in selectors.queue(agent=agent)] == [mine.pk]
    assert selectors.get_escalation(mine.pk, agent=agent).pk == mine.pk
    with pytest.raises(NotFound):
        selectors.get_escalation(theirs.pk, agent=agent)
    with pytest.raises(NotFound):
        selectors.detail(theirs.pk, agent=agent)


def test_an_id_that_is_no_number_is_not_found() -> None:
    for text in ("abc", "", "1" * 30):
        with pytest.raises(NotFound):
            selectors.get_escalation(text)


def test_the_detail_carries_the_events_oldest_first_and_the_deliveries() -> None:
    row = raise_one()
    services.comment(escalation_id=row.pk, text="on it", actor=reviewer_actor())
    found = selectors.detail(str(row.pk))
    assert [e.kind for e in found.events.all()] == ["raised", "commented"]
    assert list(found.deliveries.all()) == []


def test_a_disabled_trigger_is_none_and_the_cache_is_cleared_on_demand() -> None:
    selectors.clear_trigger_cache()
    assert selectors.trigger("security").level == "warning"
    EscalationTrigger.objects.filter(kind="security").update(enabled=False)
    assert selectors.trigger("security") is not None  # cached a few seconds in this process
    selectors.clear_trigger_cache()
    assert selectors.trigger("security") is None
    assert selectors.trigger("no_such_kind") is None
    selectors.clear_trigger_cache()


def test_a_trigger_saved_in_this_process_is_in_force_at_once() -> None:
    selectors.clear_trigger_cache()
    assert selectors.trigger("error_rate").rate_percent == 50.0
    row = EscalationTrigger.objects.get(kind="error_rate")
    row.rate_percent = 25.0
    row.save()
    selectors.on_trigger_change(EscalationTrigger)
    assert selectors.trigger("error_rate").rate_percent == 25.0
    selectors.clear_trigger_cache()


def test_open_keys_and_escalations_of_a_trigger() -> None:
    raise_one("error_rate:search", "critical", "error_rate", service="search")
    raise_one("error_rate:payments", "critical", "error_rate", service="payments")
    raise_one("other", "critical", "security")
    services.auto_resolve(["error_rate:payments"], reason="back under")
    assert selectors.open_keys(trigger="error_rate") == ["error_rate:search"]
    assert selectors.open_keys(trigger="error_rate", service="payments") == []
    assert [e.dedup_key for e in selectors.open_escalations(trigger="security")] == ["other"]


def test_the_most_specific_runbook_wins_then_the_lowest_priority() -> None:
    Runbook.objects.create(name="svc", service="payments", priority=5, steps="s")
    Runbook.objects.create(
        name="svc-class", service="payments", error_class="validation", priority=50, steps="s"
    )
    Runbook.objects.create(
        name="off", service="payments", error_class="validation", trigger="agent", enabled=False, steps="s"
    )
    pick = selectors.runbook_for
    assert pick(service="payments", error_class="validation", trigger="agent").name == "svc-class"
    assert pick(service="payments", error_class="network", trigger="agent").name == "svc"
    assert pick(service="search", error_class="validation", trigger="agent").name == "validation"
    assert pick(service="search", error_class="", trigger="rollback_failed").name == "deployment"
    assert pick(service="", error_class="", trigger="agent").name == "general"


def test_open_counts_every_level_of_what_is_not_resolved() -> None:
    raise_one("a", "warning")
    raise_one("b", "warning")
    acked = raise_one("c", "emergency")
    services.acknowledge(escalation_id=acked.pk, actor=reviewer_actor())
    raise_one("d", "info")
    services.auto_resolve(["d"], reason="gone")
    assert selectors.open_counts() == {"info": 0, "warning": 2, "critical": 0, "emergency": 1}

"""The escalation admin: the queue in its order with levels in colour, its filters, Acknowledge and Resolve in
bulk (reviewers and operators, through the services: audited), and the rules behind the queue (triggers,
policy steps, runbooks) edited with a reason, audited."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from core.access.roles import REVIEWERS
from core.audit.models import AuditEvent
from core.audit.services import Actor
from healing.escalations import services
from healing.escalations.models import Escalation, EscalationPolicy, EscalationTrigger, Runbook
from tests.support import factories
from tests.support.admin_helpers import confirmed, login, run_action, url

pytestmark = pytest.mark.django_db
QUEUE = "healing_escalation_changelist"


@pytest.fixture
def reviewer() -> Client:
    """A Django test client logged in to the admin as a reviewer."""
    return login(factories.UserFactory(role=REVIEWERS))


def escalate(key: str, level: str = "critical", **fields: Any) -> Escalation:
    fields.setdefault("service", "billing")
    raised = services.raise_escalation(
        services.Raise(
            trigger="rollback_failed", dedup_key=key, level=level, title=f"title of {key}", **fields
        )
    )
    return raised.escalation


def listed(client: Client, **query: str) -> list[int]:
    response = client.get(url(QUEUE), query)
    assert response.status_code == 200
    return [row.pk for row in response.context["cl"].result_list]


def test_it_shows_every_escalation_page(operator: Client, viewer: Client, reviewer: Client) -> None:
    escalation = escalate("rollback_failed:1")
    services.comment(escalation_id=escalation.pk, text="on it", actor=Actor(user=factories.operator()))
    trigger = EscalationTrigger.objects.get(kind="security")
    step = EscalationPolicy.objects.get(from_level="warning")
    runbook = Runbook.objects.get(name="general")
    for client in (operator, viewer, reviewer):
        for page in (
            url(QUEUE),
            url("healing_escalation_change", escalation.pk),
            url("healing_escalationtrigger_changelist"),
            url("healing_escalationtrigger_change", trigger.pk),
            url("healing_escalationpolicy_changelist"),
            url("healing_escalationpolicy_change", step.pk),
            url("healing_runbook_changelist"),
            url("healing_runbook_change", runbook.pk),
        ):
            assert client.get(page).status_code == 200, page
    page = reviewer.get(url("healing_escalation_change", escalation.pk)).content.decode()
    assert "acknowledge_escalations" in page and "resolve_escalations" in page
    assert "on it" in page  # the events inline


def test_it_lists_the_queue_in_its_order_with_levels_in_colour(viewer: Client) -> None:
    warning = escalate("rollback_failed:w", "warning")
    emergency = escalate("rollback_failed:e", "emergency")
    done = escalate("rollback_failed:d", "emergency")
    services.resolve(escalation_id=done.pk, resolution="fixed", actor=Actor(user=factories.operator()))

    assert listed(viewer) == [emergency.pk, warning.pk, done.pk]
    page = viewer.get(url(QUEUE)).content.decode()
    assert "rebound-level-emergency" in page and "rebound-level-warning" in page


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"level__exact": "warning"}, ["w"]),
        ({"state__exact": "acknowledged"}, ["c"]),
        ({"service__exact": "auth"}, ["w"]),
        ({"trigger__exact": "rollback_failed"}, ["c", "w"]),
        ({"q": "title of rollback_failed:w"}, ["w"]),
        ({"q": "rollback_failed:c"}, ["c"]),
    ],
)
def test_it_filters_and_searches_the_queue(
    query: dict[str, str], expected: list[str], viewer: Client
) -> None:
    made = {
        "c": escalate("rollback_failed:c", "critical"),
        "w": escalate("rollback_failed:w", "warning", service="auth"),
    }
    services.acknowledge(escalation_id=made["c"].pk, actor=Actor(user=factories.operator()))

    assert listed(viewer, **query) == [made[name].pk for name in expected]


def test_a_reviewer_acknowledges_escalations_in_bulk(reviewer: Client) -> None:
    first, second = escalate("rollback_failed:1"), escalate("rollback_failed:2")

    response = run_action(reviewer, QUEUE, "acknowledge_escalations", [first.pk, second.pk])

    assert response.status_code == 302
    user = reviewer.user  # type: ignore[attr-defined]
    for escalation in (first, second):
        escalation.refresh_from_db()
        assert (escalation.state, escalation.acknowledged_by_id) == ("acknowledged", user.pk)
    events = AuditEvent.objects.filter(action="escalation.acknowledge")
    assert sorted(events.values_list("target_id", flat=True)) == sorted([str(first.pk), str(second.pk)])
    assert {e.source for e in events} == {"admin"}


def test_bulk_acknowledge_leaves_the_acknowledged_and_resolved_ones(reviewer: Client) -> None:
    acked, done, fresh = (escalate(f"rollback_failed:{n}") for n in (1, 2, 3))
    operator = Actor(user=factories.operator())
    services.acknowledge(escalation_id=acked.pk, actor=operator)
    services.resolve(escalation_id=done.pk, resolution="fixed", actor=operator)

    run_action(reviewer, QUEUE, "acknowledge_escalations", [acked.pk, done.pk, fresh.pk])

    states = dict(Escalation.objects.values_list("pk", "state"))
    assert states == {acked.pk: "acknowledged", done.pk: "resolved", fresh.pk: "acknowledged"}
    assert AuditEvent.objects.filter(action="escalation.acknowledge", source="admin").count() == 1


def test_a_reviewer_resolves_escalations_with_a_resolution(reviewer: Client) -> None:
    first, second = escalate("rollback_failed:1"), escalate("rollback_failed:2")

    asked = run_action(reviewer, QUEUE, "resolve_escalations", [first.pk, second.pk])

    assert asked.status_code == 200 and "reason" in asked.content.decode()
    first.refresh_from_db()
    assert first.state == "open"  # nothing happens before the resolution
    done = run_action(
        reviewer, QUEUE, "resolve_escalations", [first.pk, second.pk], **confirmed("refunds issued (CHG-88)")
    )
    assert done.status_code == 302
    for escalation in (first, second):
        escalation.refresh_from_db()
        assert (escalation.state, escalation.resolution, escalation.resolved_by_id) == (
            "resolved",
            "refunds issued (CHG-88)",
            reviewer.user.pk,  # type: ignore[attr-defined]
        )
    assert AuditEvent.objects.filter(action="escalation.resolve", source="admin").count() == 2


def test_a_viewer_cannot_work_the_queue_in_the_admin(viewer: Client) -> None:
    escalation = escalate("rollback_failed:1")

    assert "acknowledge_escalations" not in viewer.get(url(QUEUE)).content.decode()
    run_action(viewer, QUEUE, "acknowledge_escalations", [escalation.pk])
    run_action(viewer, QUEUE, "resolve_escalations", [escalation.pk], **confirmed("no"))

    escalation.refresh_from_db()
    assert escalation.state == "open"
    assert not AuditEvent.objects.filter(target_id=str(escalation.pk)).exists()


# --- the rules behind the queue ----------------------------------------------------------------------------------


def trigger_form(trigger: EscalationTrigger, **changes: str) -> dict[str, str]:
    form = {
        "description": trigger.description,
        "enabled": "on" if trigger.enabled else "",
        "level": trigger.level,
        "repeat_level": trigger.repeat_level,
        "count": "" if trigger.count is None else str(trigger.count),
        "window_s": "" if trigger.window_s is None else str(trigger.window_s),
        "rate_percent": "" if trigger.rate_percent is None else str(trigger.rate_percent),
        "min_calls": "" if trigger.min_calls is None else str(trigger.min_calls),
        "duration_s": "" if trigger.duration_s is None else str(trigger.duration_s),
        "audit_reason": "too noisy at 5 (INC-70)",
        **changes,
    }
    return {k: v for k, v in form.items() if not (k == "enabled" and v == "")}


def test_an_operator_changes_a_triggers_threshold_with_a_reason_audited(operator: Client) -> None:
    trigger = EscalationTrigger.objects.get(kind="repeated_pattern")

    response = operator.post(
        url("healing_escalationtrigger_change", trigger.pk), trigger_form(trigger, count="20")
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    trigger.refresh_from_db()
    assert (trigger.count, trigger.kind) == (20, "repeated_pattern")
    event = AuditEvent.objects.get(action="escalation_trigger.update")
    assert (event.reason, event.source, event.before["count"], event.after["count"]) == (
        "too noisy at 5 (INC-70)",
        "admin",
        5,
        20,
    )


def test_a_trigger_is_turned_off_and_its_kind_stays(operator: Client) -> None:
    trigger = EscalationTrigger.objects.get(kind="approval_waiting")
    form = trigger_form(trigger, kind="agent")
    form.pop("enabled")

    operator.post(url("healing_escalationtrigger_change", trigger.pk), form)

    trigger.refresh_from_db()
    assert (trigger.enabled, trigger.kind) == (False, "approval_waiting")


def test_the_admin_refuses_a_threshold_out_of_range_and_keeps_the_trigger(operator: Client) -> None:
    trigger = EscalationTrigger.objects.get(kind="error_rate")

    response = operator.post(
        url("healing_escalationtrigger_change", trigger.pk), trigger_form(trigger, rate_percent="150")
    )

    assert response.status_code == 200
    trigger.refresh_from_db()
    assert trigger.rate_percent == 50.0
    assert not AuditEvent.objects.filter(action="escalation_trigger.update").exists()


def test_triggers_are_neither_added_nor_deleted(operator: Client) -> None:
    trigger = EscalationTrigger.objects.get(kind="security")

    assert operator.get(url("healing_escalationtrigger_add")).status_code == 403
    assert (
        operator.post(url("healing_escalationtrigger_delete", trigger.pk), {"post": "yes"}).status_code == 403
    )
    assert EscalationTrigger.objects.filter(pk=trigger.pk).exists()


def test_a_reviewer_reads_the_triggers_but_does_not_change_them(reviewer: Client) -> None:
    trigger = EscalationTrigger.objects.get(kind="repeated_pattern")

    reviewer.post(url("healing_escalationtrigger_change", trigger.pk), trigger_form(trigger, count="99"))

    trigger.refresh_from_db()
    assert trigger.count == 5


def test_an_operator_changes_a_policy_step_audited(operator: Client) -> None:
    step = EscalationPolicy.objects.get(from_level="warning")
    form = {
        "from_level": "warning",
        "to_level": "critical",
        "after_s": "600",
        "enabled": "on",
        "audit_reason": "30 minutes is too long",
    }

    response = operator.post(url("healing_escalationpolicy_change", step.pk), form)

    assert response.status_code == 302, response.content.decode()[:2000]
    step.refresh_from_db()
    assert step.after_s == 600
    assert AuditEvent.objects.get(action="escalation_policy.update").after["after_s"] == 600


def test_a_policy_step_never_lowers_a_level(operator: Client) -> None:
    step = EscalationPolicy.objects.get(from_level="critical")
    form = {
        "from_level": "critical",
        "to_level": "warning",
        "after_s": "60",
        "enabled": "on",
        "audit_reason": "x",
    }

    response = operator.post(url("healing_escalationpolicy_change", step.pk), form)

    assert response.status_code == 200
    assert "choose a level above" in response.content.decode()
    step.refresh_from_db()
    assert step.to_level == "emergency"


def test_an_operator_adds_a_runbook_audited(operator: Client) -> None:
    form = {
        "name": "billing-refunds",
        "service": "billing",
        "error_class": "",
        "trigger": "rollback_failed",
        "priority": "5",
        "steps": "1. Issue the refunds by hand\n2. Tell finance",
        "enabled": "on",
        "audit_reason": "INC-88 taught us",
    }

    response = operator.post(url("healing_runbook_add"), form)

    assert response.status_code == 302, response.content.decode()[:2000]
    runbook = Runbook.objects.get(name="billing-refunds")
    assert (runbook.service, runbook.trigger, runbook.builtin) == ("billing", "rollback_failed", False)
    assert AuditEvent.objects.get(action="runbook.create").reason == "INC-88 taught us"
    escalation = escalate("rollback_failed:9", service="billing")
    assert escalation.recommended_action.startswith("1. Issue the refunds by hand")

"""The admin pages of the remediation rules: rules edited through the service with a reason (audited),
refused with the field named when they cannot work; firings read-only, with the run each asked for."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from core.audit.models import AuditEvent
from healing.actions.models import HealingRun
from healing.remediation import services
from healing.remediation.models import RemediationRule, RuleFiring
from tests.support.admin_helpers import url
from tests.support.remediation import MEDIUM_ACTION, action, check, check_turns, critical_action, rule

pytestmark = pytest.mark.django_db


def form(**changes: Any) -> dict[str, Any]:
    data = {
        "name": "heal-db",
        "description": "",
        "enabled": "on",
        "trigger": "check_unhealthy",
        "health_check": "",
        "service": "",
        "error_class": "",
        "threshold": "10",
        "window_s": "300",
        "action": str(action(MEDIUM_ACTION).pk),
        "parameters": "{}",
        "audit_reason": "the db pool wedges",
    }
    return {**data, **changes}


def errors_of(response: Any) -> dict[str, list[str]]:
    found = response.context["adminform"].form.errors
    return {name: list(messages) for name, messages in found.items()}


def test_it_adds_a_rule_with_a_reason(operator: Client) -> None:
    watched = check()

    response = operator.post(url("healing_remediationrule_add"), form(health_check=str(watched.pk)))

    assert response.status_code == 302
    saved = RemediationRule.objects.get()
    assert (saved.name, saved.trigger, saved.health_check, saved.action.name, saved.parameters) == (
        "heal-db",
        "check_unhealthy",
        watched,
        MEDIUM_ACTION,
        {},
    )
    [audit] = AuditEvent.objects.filter(action="remediation_rule.create")
    assert (audit.source, audit.reason, audit.target_id) == ("admin", "the db pool wedges", str(saved.pk))


def test_it_edits_a_rule_only_with_a_reason(operator: Client) -> None:
    heal = rule(health_check=check(), act=MEDIUM_ACTION)
    data = form(health_check=str(heal.health_check_id), enabled="")

    refused = operator.post(url("healing_remediationrule_change", heal.pk), {**data, "audit_reason": ""})
    saved = operator.post(url("healing_remediationrule_change", heal.pk), data)

    assert (refused.status_code, saved.status_code) == (200, 302)
    heal.refresh_from_db()
    assert heal.enabled is False
    [audit] = AuditEvent.objects.filter(action="remediation_rule.update")
    assert (audit.before["enabled"], audit.after["enabled"]) == (True, False)  # type: ignore[index]


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"trigger": "check_unhealthy"}, "health_check", "names the health check"),
        ({"trigger": "breaker_open"}, "service", "names the service"),
        (
            {"trigger": "pattern_count", "service": "search", "error_class": "nonsense"},
            "error_class",
            "Unknown",
        ),
        (
            {"trigger": "breaker_open", "service": "db", "error_class": "transient"},
            "error_class",
            "Only pattern",
        ),
        ({"trigger": "breaker_open", "service": "db", "parameters": "[1]"}, "parameters", "JSON object"),
        ({"trigger": "breaker_open", "service": "db", "parameters": '{"x": 1}'}, "parameters", "x"),
    ],
)
def test_it_refuses_a_rule_that_cannot_work_naming_the_field(
    operator: Client, changes: dict[str, str], field: str, words: str
) -> None:
    response = operator.post(url("healing_remediationrule_add"), form(**changes))

    assert response.status_code == 200
    problems = errors_of(response)
    assert field in problems, problems
    assert any(words in message for message in problems[field]), problems
    assert RemediationRule.objects.count() == 0
    assert not AuditEvent.objects.filter(action__startswith="remediation_rule").exists()


def test_it_refuses_a_rule_with_a_critical_action(operator: Client) -> None:
    critical = critical_action()

    response = operator.post(
        url("healing_remediationrule_add"),
        form(trigger="breaker_open", service="db", action=str(critical.pk)),
    )

    assert response.status_code == 200
    assert any("never started by a rule" in m for m in errors_of(response)["action"])
    assert RemediationRule.objects.count() == 0


def test_the_service_refuses_what_the_form_would(operator_user: Any) -> None:
    from core.api.errors import InvalidInput
    from core.audit.services import Actor

    with pytest.raises(InvalidInput) as refused:
        services.create_rule(
            data={"name": "x", "trigger": "breaker_open", "action": action(), "parameters": {"a": 1}},
            actor=Actor(user=operator_user),
            reason="why not",
        )

    assert {e["field"] for e in refused.value.errors} == {"service", "parameters"}


def test_rules_are_disabled_not_deleted(operator: Client) -> None:
    heal = rule(health_check=check())

    response = operator.post(url("healing_remediationrule_delete", heal.pk), {"post": "yes"})

    assert response.status_code == 403
    assert RemediationRule.objects.filter(pk=heal.pk).exists()


def test_a_viewer_reads_rules_and_firings_but_cannot_edit(viewer: Client) -> None:
    heal = rule(health_check=check())

    listed = viewer.get(url("healing_remediationrule_changelist"))
    edit = viewer.post(
        url("healing_remediationrule_change", heal.pk), form(health_check=str(heal.health_check_id))
    )
    firings = viewer.get(url("healing_rulefiring_changelist"))

    assert (listed.status_code, edit.status_code, firings.status_code) == (200, 403, 200)
    assert "heal-db" in listed.content.decode()
    heal.refresh_from_db()
    assert heal.enabled is True


def test_it_shows_what_each_firing_did_with_its_run(operator: Client, streams_from_start: Any) -> None:
    watched = check()
    rule(health_check=watched, act=MEDIUM_ACTION)
    transition = check_turns(watched)
    services.evaluate()
    firing = RuleFiring.objects.get()
    run = HealingRun.objects.get()

    listed = operator.get(url("healing_rulefiring_changelist")).content.decode()
    page = operator.get(url("healing_rulefiring_change", firing.pk)).content.decode()
    add = operator.get(url("healing_rulefiring_add"))
    change = operator.post(url("healing_rulefiring_change", firing.pk), {"outcome": "edited"})

    rules_page = operator.get(url("healing_remediationrule_changelist")).content.decode()
    own = operator.get(f"{url('healing_rulefiring_changelist')}?rule__id__exact={firing.rule_id}")

    assert f"?rule__id__exact={firing.rule_id}" in rules_page
    assert own.status_code == 200 and f"check_transition:{transition.pk}" in own.content.decode()
    assert f"check_transition:{transition.pk}" in listed
    assert f"run {run.pk}" in listed and "pending_approval" in listed
    assert "db-http turned unhealthy" in page and "created" in page
    assert add.status_code == 403
    firing.refresh_from_db()
    assert (change.status_code, firing.outcome) == (403, "created")

"""Actions taken anywhere appear in the admin's history: core.audit.services.record writes Django's LogEntry beside
a person's audit event (once, also for the admin's own saves), never for agents or the system; the admin's front
page shows the audit trail's recent changes and the way to the console."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.test import Client

from core.access.models import Agent
from core.audit import services as audit
from core.audit.models import AuditEvent
from core.audit.services import Actor
from recovery.breakers.models import Service
from recovery.errors.models import ClassificationRule
from tests.support import factories
from tests.support.admin_helpers import confirmed, login, run_action, url

pytestmark = pytest.mark.django_db


def entries_for(obj: Any) -> list[LogEntry]:
    kind = ContentType.objects.get_for_model(obj, for_concrete_model=False)
    return list(LogEntry.objects.filter(content_type=kind, object_id=str(obj.pk)).order_by("id"))


def test_it_logs_an_operators_api_call_once_for_that_user_and_object(operator_client: Any) -> None:
    service = Service.objects.create(name="svc")

    response = operator_client.post(
        "/api/v1/breakers/svc/override", {"mode": "forced_open", "reason": "provider incident"}, format="json"
    )

    assert response.status_code == 200, response.json()
    [entry] = entries_for(service)
    assert (entry.user_id, entry.action_flag, entry.object_repr) == (operator_client.user.pk, CHANGE, "svc")
    assert entry.change_message == "breaker.override via api: provider incident"


def test_it_shows_the_api_call_in_the_objects_admin_history(operator_client: Any) -> None:
    service = Service.objects.create(name="svc")
    operator_client.post(
        "/api/v1/breakers/svc/override", {"mode": "forced_open", "reason": "provider incident"}, format="json"
    )

    page = login(operator_client.user).get(url("recovery_service_history", service.pk))

    assert page.status_code == 200
    assert "breaker.override via api: provider incident" in page.content.decode()


def test_it_logs_an_admin_add_once_as_an_addition(operator: Client) -> None:
    response = operator.post(url("core_agent_add"), {"name": "researcher", "description": "reads papers"})

    assert response.status_code == 302
    [entry] = entries_for(Agent.objects.get(name="researcher"))
    assert (entry.action_flag, entry.user_id) == (ADDITION, operator.user.pk)  # type: ignore[attr-defined]
    assert entry.change_message == "agent.create via admin"


def test_it_logs_an_admin_change_once(operator: Client) -> None:
    agent = Agent.objects.create(name="researcher")

    response = operator.post(
        url("core_agent_change", agent.pk),
        {
            "name": "researcher",
            "description": "reads more papers",
            "reason": "new scope",
            "keys-TOTAL_FORMS": "0",
            "keys-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 302
    [entry] = entries_for(agent)
    assert (entry.action_flag, entry.change_message) == (CHANGE, "agent.update via admin: new scope")


def test_it_logs_an_admin_delete_once_as_a_deletion(operator: Client) -> None:
    rule: ClassificationRule = factories.RuleFactory()  # type: ignore[assignment]

    response = operator.post(url("recovery_classificationrule_delete", rule.pk), {"reason": "superseded"})

    assert response.status_code == 302
    assert not ClassificationRule.objects.filter(pk=rule.pk).exists()
    [entry] = entries_for(rule)
    assert (entry.action_flag, entry.change_message) == (DELETION, "rule.delete via admin: superseded")


def test_it_logs_an_admin_action_once(operator: Client) -> None:
    service = Service.objects.create(name="svc")

    run_action(operator, "recovery_service_changelist", "force_open", [service.pk], **confirmed("drill"))

    [entry] = entries_for(service)
    assert entry.change_message == "breaker.override via admin: drill"


def test_it_writes_no_log_entry_for_an_agents_action() -> None:
    agent = Agent.objects.create(name="crawler")

    audit.record(Actor(agent=agent), "agent.update", agent, reason="self-report")

    assert AuditEvent.objects.filter(action="agent.update").count() == 1
    assert LogEntry.objects.count() == 0


def test_it_writes_no_log_entry_for_the_systems_action() -> None:
    agent = Agent.objects.create(name="crawler")

    audit.record(Actor(source=AuditEvent.Source.SYSTEM), "agent.update", agent, reason="expired")

    assert LogEntry.objects.count() == 0


@pytest.mark.parametrize(
    ("action", "flag"),
    [("agent.create", ADDITION), ("rule.delete", DELETION), ("breaker.override", CHANGE)],
)
def test_it_names_the_kind_of_log_entry_by_the_actions_ending(action: str, flag: int) -> None:
    assert audit.log_flag(action) == flag


def test_it_shows_the_audit_trails_recent_changes_on_the_admin_index(operator: Client) -> None:
    agent = Agent.objects.create(name="crawler")
    audit.record(Actor(agent=agent), "agent.update", agent, reason="self-report")
    event = AuditEvent.objects.get(action="agent.update")

    page = operator.get(url("index")).content.decode()

    assert "Recent changes" in page
    assert "Recent actions" not in page
    assert f'data-audit-event="{event.pk}"' in page
    assert url("core_auditevent_change", event.pk) in page
    assert "agent:crawler" in page


def test_it_links_the_console_from_the_admin_index(viewer: Client) -> None:
    page = viewer.get(url("index")).content.decode()

    assert 'id="console-link"' in page
    assert 'href="/console/"' in page

"""The Django admin: every operator action goes through a service, asks why, and is audited once."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from core.access import keys
from core.access.models import Agent, ApiKey
from core.api.errors import InvalidInput
from core.audit.models import AuditEvent
from recovery.errors import services as error_services
from recovery.errors.classification import ErrorReport
from recovery.errors.models import ClassificationRule, ErrorEvent, ErrorPattern
from tests.support import factories
from tests.support.admin_helpers import confirmed, login, run_action, url

pytestmark = pytest.mark.django_db

PLAINTEXT = re.compile(r"rb_[0-9a-f]{8}_[A-Za-z0-9_-]+")


@pytest.fixture
def superuser() -> Client:
    return login(factories.UserFactory(is_superuser=True))


@pytest.fixture
def reported() -> ErrorPattern:
    """One agent with a key, and one error it reported: a pattern with an event."""
    agent, _ = factories.agent_key()
    report = ErrorReport(service="openai", type_name="httpx.ConnectTimeout", message="timed out after 30 s")
    error_services.record_errors([report], agent=agent)
    return ErrorPattern.objects.get()


def make_rule(**fields: Any) -> ClassificationRule:
    return factories.RuleFactory(**fields)  # type: ignore[return-value]


def make_agent(**fields: Any) -> Agent:
    return factories.AgentFactory(**fields)  # type: ignore[return-value]


def audit_events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def changes(event: AuditEvent) -> tuple[dict[str, Any], dict[str, Any]]:
    return event.before or {}, event.after or {}


def rule_data(rule: ClassificationRule, **changes: Any) -> dict[str, Any]:
    """The rule's change form as a browser posts it: unchecked boxes are left out."""
    values = {
        "name": rule.name,
        "description": rule.description,
        "enabled": rule.enabled,
        "priority": rule.priority,
        "type_names": ", ".join(rule.type_names),
        "status_min": rule.status_min or "",
        "status_max": rule.status_max or "",
        "message_regex": rule.message_regex,
        "service": rule.service,
        "error_class": rule.error_class,
        "severity": rule.severity,
        "kind": rule.kind,
        "retryable": rule.retryable,
        "counts_toward_breaker": rule.counts_toward_breaker,
        "needs_human": rule.needs_human,
        **changes,
    }
    return {k: ("on" if v is True else v) for k, v in values.items() if v is not False}


# --- every page renders ----------------------------------------------------------------------------------

CHANGELISTS = [
    "core_agent_changelist",
    "core_apikey_changelist",
    "recovery_classificationrule_changelist",
    "recovery_errorpattern_changelist",
    "recovery_errorevent_changelist",
    "core_auditevent_changelist",
]


@pytest.mark.parametrize("name", CHANGELISTS)
@pytest.mark.parametrize("role", ["superuser", "operator", "viewer"])
def test_it_renders_each_changelist(name: str, role: str, reported: ErrorPattern, request: Any) -> None:
    client = request.getfixturevalue(role)
    response = client.get(url(name))
    assert response.status_code == 200
    assert "Rebound" in response.content.decode()


@pytest.mark.parametrize(
    ("name", "query"),
    [
        ("core_agent_changelist", {"q": "agent", "is_active__exact": "1"}),
        ("core_apikey_changelist", {"status": "live", "owner": "agent", "q": "agent"}),
        ("recovery_classificationrule_changelist", {"q": "timeout", "error_class__exact": "transient"}),
        ("recovery_errorpattern_changelist", {"service": "openai", "q": "timed", "kind__exact": "unknown"}),
        ("recovery_errorevent_changelist", {"service": "openai", "severity__exact": "medium"}),
        ("core_auditevent_changelist", {"q": "agent", "source__exact": "cli", "action": "apikey.issue"}),
        ("core_auditevent_changelist", {"target_type": "recovery.apikey", "target_id": "1"}),
    ],
)
def test_it_filters_and_searches_each_changelist(
    name: str, query: dict[str, str], operator: Client, reported: ErrorPattern
) -> None:
    assert operator.get(url(name), query).status_code == 200


def test_it_renders_each_detail_page(operator: Client, reported: ErrorPattern) -> None:
    agent = Agent.objects.get()
    pages = [
        url("core_agent_change", agent.pk),
        url("core_agent_add"),
        url("core_apikey_change", ApiKey.objects.get().pk),
        url("recovery_classificationrule_change", ClassificationRule.objects.first().pk),  # type: ignore[union-attr]
        url("recovery_classificationrule_add"),
        url("recovery_errorpattern_change", reported.pk),
        url("recovery_errorevent_change", ErrorEvent.objects.get().pk),
        url("core_auditevent_change", AuditEvent.objects.first().pk),  # type: ignore[union-attr]
    ]
    for page in pages:
        assert operator.get(page).status_code == 200, page


def test_it_links_a_pattern_to_its_events_and_to_a_dry_run(operator: Client, reported: ErrorPattern) -> None:
    page = operator.get(url("recovery_errorpattern_change", reported.pk)).content.decode()
    assert f"pattern__id__exact={reported.pk}" in page
    assert url("recovery_classificationrule_dry_run") in page
    events = operator.get(url("recovery_errorevent_changelist"), {"pattern__id__exact": reported.pk})
    assert events.status_code == 200
    assert "timed out after 30 s" in events.content.decode()


# --- agents and keys -------------------------------------------------------------------------------------


def test_it_issues_a_key_and_shows_it_once(operator: Client) -> None:
    agent = make_agent()

    response = run_action(operator, "core_agent_changelist", "issue_api_key", [agent.pk])
    assert response.status_code == 302
    page = operator.get(response.url).content.decode()

    found = PLAINTEXT.search(page)
    assert found is not None
    assert "will not be shown again" in page
    api_key = ApiKey.objects.get(agent=agent)
    assert keys.matches(found.group(0), api_key.key_hash)
    assert api_key.revoked_at is None
    [event] = audit_events("apikey.issue")
    assert (event.source, event.actor_user, event.target_id) == ("admin", operator.user, str(api_key.pk))  # type: ignore[attr-defined]
    assert event.after == {"prefix": api_key.prefix, "owner": f"agent:{agent.name}", "name": ""}
    # Shown once: the next page no longer has it.
    assert found.group(0) not in operator.get(url("core_agent_changelist")).content.decode()


def test_it_revokes_a_key_with_a_reason(operator: Client) -> None:
    agent, plaintext = factories.agent_key()
    api_key = ApiKey.objects.get(agent=agent)

    asked = run_action(operator, "core_apikey_changelist", "revoke_keys", [api_key.pk])
    assert asked.status_code == 200
    assert "reason" in asked.content.decode()
    assert ApiKey.objects.get(pk=api_key.pk).revoked_at is None

    response = run_action(
        operator, "core_apikey_changelist", "revoke_keys", [api_key.pk], **confirmed("leaked in CI logs")
    )
    assert response.status_code == 302
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    [event] = audit_events("apikey.revoke")
    assert (event.reason, event.source, event.actor_user) == ("leaked in CI logs", "admin", operator.user)  # type: ignore[attr-defined]
    assert event.target_id == str(api_key.pk)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert api.get("/api/v1/me").status_code == 401


def test_it_refuses_to_revoke_without_a_reason(operator: Client) -> None:
    agent, _ = factories.agent_key()
    api_key = ApiKey.objects.get(agent=agent)

    response = run_action(operator, "core_apikey_changelist", "revoke_keys", [api_key.pk], **confirmed("  "))

    assert response.status_code == 200
    assert "This field is required" in response.content.decode()
    api_key.refresh_from_db()
    assert api_key.revoked_at is None
    assert audit_events("apikey.revoke") == []


def test_it_finds_a_key_by_its_pasted_plaintext(operator: Client) -> None:
    agent, plaintext = factories.agent_key()
    factories.agent_key()
    response = operator.get(url("core_apikey_changelist"), {"q": plaintext})
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [ApiKey.objects.get(agent=agent)]


def test_it_deactivates_and_activates_an_agent_with_a_reason(operator: Client) -> None:
    agent = make_agent()

    refused = run_action(operator, "core_agent_changelist", "deactivate_agents", [agent.pk], **confirmed(""))
    assert refused.status_code == 200
    agent.refresh_from_db()
    assert agent.is_active

    run_action(
        operator, "core_agent_changelist", "deactivate_agents", [agent.pk], **confirmed("runaway loop")
    )
    agent.refresh_from_db()
    assert not agent.is_active
    run_action(operator, "core_agent_changelist", "activate_agents", [agent.pk], **confirmed("fixed"))
    agent.refresh_from_db()
    assert agent.is_active

    [off] = audit_events("agent.deactivate")
    [on] = audit_events("agent.activate")
    assert (off.reason, off.source, off.before, off.after) == (
        "runaway loop",
        "admin",
        {"is_active": True},
        {"is_active": False},
    )
    assert (on.reason, on.actor_user) == ("fixed", operator.user)  # type: ignore[attr-defined]


def test_it_creates_an_agent_through_the_service(operator: Client) -> None:
    response = operator.post(url("core_agent_add"), {"name": "researcher", "description": "reads papers"})

    assert response.status_code == 302
    agent = Agent.objects.get(name="researcher")
    [event] = audit_events("agent.create")
    assert (event.source, event.actor_user, event.target_id) == ("admin", operator.user, str(agent.pk))  # type: ignore[attr-defined]
    assert changes(event)[1]["description"] == "reads papers"


def test_it_changes_an_agent_only_with_a_reason(operator: Client) -> None:
    agent = make_agent(name="old-name")
    factories.agent_key(agent)
    change = url("core_agent_change", agent.pk)
    data = {"name": "new-name", "description": "renamed", "keys-TOTAL_FORMS": "1", "keys-INITIAL_FORMS": "1"}

    refused = operator.post(change, data)
    assert refused.status_code == 200
    assert "This field is required" in refused.content.decode()
    agent.refresh_from_db()
    assert agent.name == "old-name"

    assert operator.post(change, {**data, "reason": "team convention"}).status_code == 302
    agent.refresh_from_db()
    assert (agent.name, agent.description) == ("new-name", "renamed")
    [event] = audit_events("agent.update")
    assert event.before == {"name": "old-name", "description": "test agent"}
    assert event.after == {"name": "new-name", "description": "renamed"}
    assert (event.reason, event.source) == ("team convention", "admin")


def test_it_offers_an_agents_actions_on_its_page(operator: Client, viewer: Client) -> None:
    agent = make_agent()
    page = operator.get(url("core_agent_change", agent.pk)).content.decode()
    assert "Issue a new API key" in page
    assert "Deactivate" in page
    assert "Activate (asks" not in page
    assert "Issue a new API key" not in viewer.get(url("core_agent_change", agent.pk)).content.decode()


def test_it_never_deletes_agents_or_keys(operator: Client) -> None:
    agent, _ = factories.agent_key()
    api_key = ApiKey.objects.get()
    assert operator.post(url("core_agent_delete", agent.pk), {"post": "yes"}).status_code == 403
    assert operator.post(url("core_apikey_delete", api_key.pk), {"post": "yes"}).status_code == 403
    assert operator.get(url("core_apikey_add")).status_code == 403
    assert Agent.objects.filter(pk=agent.pk).exists()
    assert ApiKey.objects.filter(pk=api_key.pk).exists()


# --- classification rules --------------------------------------------------------------------------------


def test_it_refuses_a_rule_change_without_an_audit_reason(operator: Client) -> None:
    rule = make_rule(priority=50)

    response = operator.post(url("recovery_classificationrule_change", rule.pk), rule_data(rule, priority=45))

    assert response.status_code == 200
    assert "This field is required" in response.content.decode()
    rule.refresh_from_db()
    assert rule.priority == 50
    assert audit_events("rule.update") == []


def test_it_changes_a_rule_with_an_audit_reason(operator: Client) -> None:
    rule = make_rule(priority=50)
    data = rule_data(
        rule, priority=45, type_names="ConnectTimeout, httpx.ReadTimeout,", audit_reason="too late"
    )

    response = operator.post(url("recovery_classificationrule_change", rule.pk), data)

    assert response.status_code == 302
    rule.refresh_from_db()
    assert (rule.priority, rule.type_names) == (45, ["ConnectTimeout", "httpx.ReadTimeout"])
    [event] = audit_events("rule.update")
    assert (event.reason, event.source, event.actor_user) == ("too late", "admin", operator.user)  # type: ignore[attr-defined]
    before, after = changes(event)
    assert (before["priority"], after["priority"]) == (50, 45)
    assert (before["type_names"], after["type_names"]) == (
        [],
        ["ConnectTimeout", "httpx.ReadTimeout"],
    )


def test_it_shows_type_names_comma_separated(operator: Client) -> None:
    rule = make_rule(type_names=["ConnectTimeout", "ReadTimeout"])
    page = operator.get(url("recovery_classificationrule_change", rule.pk)).content.decode()
    assert 'value="ConnectTimeout, ReadTimeout"' in page


def test_it_creates_a_rule_through_the_service(operator: Client) -> None:
    rule = ClassificationRule(
        name="pinecone overloaded",
        priority=150,
        message_regex="index (is )?overloaded",
        service="pinecone",
        error_class="resource",
        severity="medium",
        kind="temporary_resource",
        retryable=True,
        counts_toward_breaker=True,
    )
    data = rule_data(rule, audit_reason="Pinecone reports overload as a 400")

    assert operator.post(url("recovery_classificationrule_add"), data).status_code == 302

    created = ClassificationRule.objects.get(name="pinecone overloaded")
    assert (created.service, created.type_names, created.builtin) == ("pinecone", [], False)
    [event] = audit_events("rule.create")
    assert (event.target_id, event.reason, event.source) == (
        str(created.pk),
        "Pinecone reports overload as a 400",
        "admin",
    )


def test_it_shows_model_validation_as_form_errors(operator: Client) -> None:
    rule = make_rule()
    data = rule_data(rule, message_regex="", audit_reason="broaden")  # no criterion left

    response = operator.post(url("recovery_classificationrule_change", rule.pk), data)

    assert response.status_code == 200
    assert "A rule needs at least one of" in response.content.decode()
    assert audit_events("rule.update") == []


@pytest.mark.parametrize(
    ("changes", "shown"),
    [
        ({"message_regex": r"(over)\1loaded"}, "RE2 cannot take this pattern"),
        ({"priority": 2**40}, "less than or equal to 1000000"),
    ],
)
def test_it_shows_what_classification_cannot_take_on_its_field(
    operator: Client, changes: dict[str, Any], shown: str
) -> None:
    rule = make_rule(message_regex="overloaded")
    data = rule_data(rule, audit_reason="try", **changes)

    response = operator.post(url("recovery_classificationrule_change", rule.pk), data)

    assert response.status_code == 200
    assert shown in response.content.decode()
    rule.refresh_from_db()
    assert rule.message_regex == "overloaded"
    assert audit_events("rule.update") == []


def test_it_shows_a_service_refusal_as_a_form_error(operator: Client, monkeypatch: Any) -> None:
    rule = make_rule(priority=50)

    def refuse(**_: Any) -> None:
        ClassificationRule.objects.filter(pk=rule.pk).update(priority=1)  # a write the refusal must undo
        raise InvalidInput("Priority 45 is reserved.", field="priority")

    monkeypatch.setattr(error_services, "update_rule", refuse)
    data = rule_data(rule, priority=45, audit_reason="try")

    response = operator.post(url("recovery_classificationrule_change", rule.pk), data)

    assert response.status_code == 200
    page = response.content.decode()
    assert "Priority 45 is reserved." in page
    assert 'value="45"' in page  # the operator's input is kept
    rule.refresh_from_db()
    assert rule.priority == 50


def _ask_to_delete(operator: Client) -> tuple[Any, str]:
    rule = make_rule()
    return rule, url("recovery_classificationrule_delete", rule.pk)


def test_it_asks_for_a_reason_before_deleting_a_rule(operator: Client) -> None:
    rule, delete = _ask_to_delete(operator)

    asked = operator.get(delete)
    assert asked.status_code == 200
    assert rule.name in asked.content.decode()
    assert 'name="reason"' in asked.content.decode()


def test_it_keeps_a_rule_when_the_reason_is_empty(operator: Client) -> None:
    rule, delete = _ask_to_delete(operator)

    refused = operator.post(delete, {"reason": ""})
    assert refused.status_code == 200
    assert "This field is required" in refused.content.decode()
    assert ClassificationRule.objects.filter(pk=rule.pk).exists()


def test_it_deletes_a_rule_with_a_reason_and_audits_it(operator: Client) -> None:
    rule, delete = _ask_to_delete(operator)

    response = operator.post(delete, {"reason": "superseded by the service rule"})

    assert response.status_code == 302
    assert not ClassificationRule.objects.filter(pk=rule.pk).exists()
    [event] = audit_events("rule.delete")
    assert (event.reason, event.source, event.target_id) == (
        "superseded by the service rule",
        "admin",
        str(rule.pk),
    )
    assert changes(event)[0]["name"] == rule.name


def test_it_deletes_selected_rules_with_one_reason(operator: Client) -> None:
    rules = [make_rule(), make_rule()]
    pks = [r.pk for r in rules]

    asked = run_action(operator, "recovery_classificationrule_changelist", "delete_rules", pks)
    assert asked.status_code == 200
    assert ClassificationRule.objects.filter(pk__in=pks).count() == 2

    run_action(
        operator, "recovery_classificationrule_changelist", "delete_rules", pks, **confirmed("cleanup")
    )

    assert not ClassificationRule.objects.filter(pk__in=pks).exists()
    assert sorted(e.target_id for e in audit_events("rule.delete")) == sorted(str(pk) for pk in pks)
    assert {e.reason for e in audit_events("rule.delete")} == {"cleanup"}


def test_it_offers_no_unaudited_delete(operator: Client) -> None:
    response = operator.get(url("recovery_classificationrule_changelist"))
    choices = [name for name, _ in response.context["action_form"].fields["action"].choices]
    assert "delete_selected" not in choices
    assert "delete_rules" in choices


# --- the dry run -----------------------------------------------------------------------------------------


def test_it_classifies_in_a_dry_run_without_recording(operator: Client) -> None:
    response = operator.get(
        url("recovery_classificationrule_dry_run"), {"type": "httpx.ConnectTimeout", "message": "timed out"}
    )

    assert response.status_code == 200
    page = response.content.decode()
    rule = ClassificationRule.objects.get(name="connection timeout (type)")
    assert response.context["classified"].verdict.error_class == "transient"
    assert response.context["classified"].verdict.rule.name == "connection timeout (type)"
    assert url("recovery_classificationrule_change", rule.pk) in page
    assert "is one of the rule&#x27;s types" in page
    assert ErrorEvent.objects.count() == 0
    assert ErrorPattern.objects.count() == 0


def test_it_reads_retry_after_in_a_dry_run(operator: Client) -> None:
    response = operator.get(
        url("recovery_classificationrule_dry_run"), {"status_code": "429", "retry_after": "20"}
    )
    classified = response.context["classified"]
    assert (classified.verdict.error_class, classified.report.retry_after_s) == ("rate_limit", 20.0)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"status_code": "99"}, "greater than or equal to 100"),
        ({"status_code": "abc"}, "valid integer"),
        ({"service": "Not A Slug", "type": "X"}, "should match pattern"),
        ({"service": "openai"}, "give at least one of type, status_code or message"),
        ({"type": "X", "retry_after": "soon"}, "must be seconds or an HTTP date"),
    ],
)
def test_it_shows_invalid_dry_run_input_as_form_errors(
    operator: Client, query: dict[str, str], message: str
) -> None:
    response = operator.get(url("recovery_classificationrule_dry_run"), query)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert response.context["classified"] is None


def test_it_links_the_dry_run_from_the_rules(operator: Client) -> None:
    page = operator.get(url("recovery_classificationrule_changelist")).content.decode()
    assert url("recovery_classificationrule_dry_run") in page


# --- read-only records -----------------------------------------------------------------------------------


def test_it_never_changes_audit_events(superuser: Client) -> None:
    factories.agent_key()
    event = AuditEvent.objects.get()

    assert superuser.post(url("core_auditevent_change", event.pk), {"reason": "rewritten"}).status_code == 403
    assert superuser.post(url("core_auditevent_delete", event.pk), {"post": "yes"}).status_code == 403
    assert superuser.get(url("core_auditevent_add")).status_code == 403
    event.refresh_from_db()
    assert event.reason == ""
    assert AuditEvent.objects.count() == 1


def test_it_shows_an_audit_events_change_as_json(operator: Client) -> None:
    rule = make_rule(priority=50)
    operator.post(
        url("recovery_classificationrule_change", rule.pk), rule_data(rule, priority=45, audit_reason="x")
    )
    [event] = audit_events("rule.update")

    page = operator.get(url("core_auditevent_change", event.pk)).content.decode()

    assert "<pre" in page
    assert "&quot;priority&quot;: 45" in page
    assert "<code>priority</code>: 50 → 45" in page
    assert url("recovery_classificationrule_change", rule.pk) in page


def test_it_never_changes_error_patterns_or_events(superuser: Client, reported: ErrorPattern) -> None:
    event = ErrorEvent.objects.get()
    assert (
        superuser.post(url("recovery_errorpattern_change", reported.pk), {"service": "x"}).status_code == 403
    )
    assert (
        superuser.post(url("recovery_errorpattern_delete", reported.pk), {"post": "yes"}).status_code == 403
    )
    assert superuser.get(url("recovery_errorpattern_add")).status_code == 403
    assert superuser.post(url("recovery_errorevent_change", event.pk), {"service": "x"}).status_code == 403
    reported.refresh_from_db()
    assert reported.service == "openai"


# --- viewers ---------------------------------------------------------------------------------------------


def test_it_lets_a_viewer_look_but_not_act(viewer: Client) -> None:
    agent, _ = factories.agent_key()
    api_key = ApiKey.objects.get()
    rule = make_rule(priority=50)

    changelist = viewer.get(url("core_agent_changelist"))
    assert changelist.status_code == 200
    assert changelist.context["action_form"] is None  # no actions offered at all

    run_action(viewer, "core_agent_changelist", "issue_api_key", [agent.pk])
    run_action(viewer, "core_agent_changelist", "deactivate_agents", [agent.pk], **confirmed("x"))
    run_action(viewer, "core_apikey_changelist", "revoke_keys", [api_key.pk], **confirmed("x"))
    run_action(viewer, "recovery_classificationrule_changelist", "delete_rules", [rule.pk], **confirmed("x"))
    change = viewer.post(
        url("recovery_classificationrule_change", rule.pk), rule_data(rule, audit_reason="x")
    )
    delete = viewer.post(url("recovery_classificationrule_delete", rule.pk), {"reason": "x"})
    add = viewer.post(url("core_agent_add"), {"name": "sneaky"})

    assert (change.status_code, delete.status_code, add.status_code) == (403, 403, 403)
    assert ApiKey.objects.count() == 1
    api_key.refresh_from_db()
    agent.refresh_from_db()
    assert api_key.revoked_at is None
    assert agent.is_active
    assert ClassificationRule.objects.filter(pk=rule.pk).exists()
    assert not Agent.objects.filter(name="sneaky").exists()
    assert AuditEvent.objects.filter(source="admin").count() == 0


def test_it_lets_a_viewer_read_rules_and_dry_run(viewer: Client) -> None:
    rule = make_rule()
    page = viewer.get(url("recovery_classificationrule_change", rule.pk))
    assert page.status_code == 200
    assert "Why are you changing this rule?" not in page.content.decode()
    dry_run = viewer.get(url("recovery_classificationrule_dry_run"), {"type": "TimeoutError"})
    assert dry_run.context["classified"].verdict.error_class == "transient"

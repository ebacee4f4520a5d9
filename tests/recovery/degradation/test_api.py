"""The degradation API and admin: every principal reads the level and what to skip; only operators force and
clear, with a reason, audited; bad input is a 4xx naming the field."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from core.admin_helpers import CONFIRMED
from core.audit.models import AuditEvent
from core.audit.services import Actor
from recovery.breakers import services as breaker_services
from recovery.breakers.models import Service
from recovery.degradation import services as degradation_services
from recovery.degradation.models import DegradationEvent, DegradationRule, DegradationState
from tests.support import factories
from tests.support.admin_helpers import run_action as post_action
from tests.support.admin_helpers import url

pytestmark = [pytest.mark.django_db, pytest.mark.redis]
URL = "/api/v1/degradation"


def skip_fleet() -> None:
    """Services of each kind: essential or not, with and without their own skip level."""
    Service.objects.create(name="a-essential", criticality="essential")
    Service.objects.create(name="b-tool")  # non-critical: skipped from minimal by default
    Service.objects.create(name="c-tool", skip_from_level="degraded")
    Service.objects.create(name="d-db", criticality="essential", skip_from_level="emergency")
    Service.objects.create(name="e-tool", skip_from_level="never")


def force(scope: str, level: str, reason: str = "drill") -> None:
    degradation_services.force(scope=scope, level=level, reason=reason, expires_at=None, actor=Actor())


def skipped(client: APIClient) -> list[tuple[str, str]]:
    return [(s["service"], s["level"]) for s in client.get(URL).json()["skip"]]


# --- reading ---------------------------------------------------------------------------------------------


def test_it_answers_normal_when_nothing_is_degraded(agent_client: APIClient) -> None:
    response = agent_client.get(URL)

    assert response.status_code == 200
    assert response.json() == {
        "scope": "*",
        "level": "normal",
        "source": "automatic",
        "reason": "",
        "since": None,
        "until": None,
        "services": [],
        "skip": [],
    }


def test_agents_read_the_level_from_a_tripped_essential_breaker(agent_client: APIClient) -> None:
    Service.objects.create(
        name="openai", criticality="essential", minimum_calls=2, consecutive_failures=0, wait_duration_s=30
    )
    Service.objects.create(name="web-search", skip_from_level="degraded")
    failure = breaker_services.OutcomeReport("openai", "chat", False, 100, None, "")
    breaker_services.record_outcomes([failure, failure], actor=Actor())
    now = timezone.now()
    degradation_services.evaluate(now=now)

    body = agent_client.get(URL).json()

    since = now.isoformat().replace("+00:00", "Z")
    assert body == {
        "scope": "*",
        "level": "degraded",
        "source": "automatic",
        "reason": "rule “essential breaker open” (degraded): 1 essential breaker(s) open (openai), threshold 1",
        "since": since,
        "until": None,
        "services": [
            {
                "scope": "openai",
                "level": "degraded",
                "source": "automatic",
                "reason": "rule “service breaker open” (degraded): the breaker of openai is open, threshold 1",
                "since": since,
                "until": None,
            }
        ],
        "skip": [
            {
                "service": "web-search",
                "criticality": "non_critical",
                "level": "degraded",
                "skip_from": "degraded",
            }
        ],
    }


def test_the_skip_list_puts_non_critical_services_first(agent_client: APIClient) -> None:
    skip_fleet()
    assert skipped(agent_client) == []

    force("c-tool", "degraded")
    force("b-tool", "degraded")
    assert skipped(agent_client) == [("c-tool", "degraded")]  # b-tool is skipped only from minimal

    force("*", "minimal")
    force("c-tool", "emergency")
    assert skipped(agent_client) == [("c-tool", "emergency"), ("b-tool", "minimal")]

    force("*", "emergency")
    assert skipped(agent_client) == [("b-tool", "emergency"), ("c-tool", "emergency"), ("d-db", "emergency")]


def test_it_answers_one_services_level(agent_client: APIClient) -> None:
    skip_fleet()
    force("*", "degraded")
    force("b-tool", "minimal", reason="quota")

    tool = agent_client.get(URL, {"service": "b-tool"}).json()
    essential = agent_client.get(URL, {"service": "a-essential"}).json()

    assert {k: tool[k] for k in ("service", "scope", "level", "source", "reason", "skip", "skip_from")} == {
        "service": "b-tool",
        "scope": "b-tool",
        "level": "minimal",
        "source": "operator",
        "reason": "quota",
        "skip": True,
        "skip_from": "minimal",
    }
    assert (essential["scope"], essential["level"], essential["skip"], essential["skip_from"]) == (
        "*",
        "degraded",
        False,
        "never",
    )


@pytest.mark.parametrize(
    ("service", "status", "field"), [("nope", 404, "service"), ("Bad Name", 400, "service")]
)
def test_it_refuses_an_unknown_service(
    agent_client: APIClient, service: str, status: int, field: str
) -> None:
    response = agent_client.get(URL, {"service": service})

    assert response.status_code == status
    assert [e["field"] for e in response.json()["errors"]] == [field]


def test_the_fleet_status_shows_the_level(agent_client: APIClient) -> None:
    force("*", "minimal", reason="drill")

    status = agent_client.get("/api/v1/status").json()

    assert {k: status["degradation"][k] for k in ("scope", "level", "source", "reason")} == {
        "scope": "*",
        "level": "minimal",
        "source": "operator",
        "reason": "drill",
    }


def test_it_requires_a_key(db: Any) -> None:
    assert APIClient().get(URL).status_code == 401


# --- forcing and clearing --------------------------------------------------------------------------------


def test_an_operator_forces_a_level_for_a_while(operator_client: APIClient) -> None:
    before = timezone.now()

    response = operator_client.post(
        URL, {"scope": "*", "level": "minimal", "reason": "INC-42", "ttl_s": 3600}, format="json"
    )

    assert response.status_code == 200, response.json()
    body = response.json()
    state = DegradationState.objects.get(scope="*")
    assert before + timedelta(seconds=3600) <= state.forced_until <= timezone.now() + timedelta(seconds=3600)  # type: ignore[operator]
    assert (state.forced_level, state.forced_reason, state.forced_by) == (
        "minimal",
        "INC-42",
        operator_client.user,  # type: ignore[attr-defined]
    )  # type: ignore[attr-defined]
    username = operator_client.user.username  # type: ignore[attr-defined]
    assert {k: body[k] for k in ("scope", "level", "source", "reason")} == {
        "scope": "*",
        "level": "minimal",
        "source": "operator",
        "reason": "INC-42",
    }
    assert body["automatic"] == {
        "level": "normal",
        "reason": "",
        "pending_level": None,
        "pending_since": None,
    }
    assert (body["forced"]["level"], body["forced"]["by"], body["forced"]["in_force"]) == (
        "minimal",
        username,
        True,
    )
    [event] = DegradationEvent.objects.all()
    assert (event.from_level, event.to_level, event.source, event.actor_user) == (
        "normal",
        "minimal",
        "operator",
        operator_client.user,  # type: ignore[attr-defined]
    )
    assert event.expires_at == state.forced_until
    [audit] = AuditEvent.objects.filter(action="degradation.force")
    assert (audit.source, audit.reason, audit.before["level"], audit.after["level"]) == (  # type: ignore[index]
        "api",
        "INC-42",
        "normal",
        "minimal",
    )


def test_an_operator_forces_a_service_until_a_time_and_clears_it(operator_client: APIClient) -> None:
    Service.objects.create(name="search")
    until = (timezone.now() + timedelta(hours=2)).replace(microsecond=0)

    forced = operator_client.post(
        URL,
        {"scope": "search", "level": "emergency", "reason": "quota", "expires_at": until.isoformat()},
        format="json",
    )
    cleared = operator_client.post(f"{URL}/clear", {"scope": "search", "reason": "quota back"}, format="json")

    assert (forced.status_code, cleared.status_code) == (200, 200)
    assert forced.json()["until"] == until.isoformat().replace("+00:00", "Z")
    assert (cleared.json()["level"], cleared.json()["forced"]) == ("normal", None)
    assert [(e.from_level, e.to_level, e.source) for e in DegradationEvent.objects.order_by("id")] == [
        ("normal", "emergency", "operator"),
        ("emergency", "normal", "operator"),
    ]
    assert list(
        AuditEvent.objects.filter(action__startswith="degradation.")
        .order_by("id")
        .values_list("action", "reason")
    ) == [("degradation.force", "quota"), ("degradation.clear", "quota back")]


@pytest.mark.parametrize("principal", ["agent_client", "viewer_client"])
def test_agents_and_viewers_cannot_force_or_clear(principal: str, request: Any) -> None:
    client = request.getfixturevalue(principal)

    forced = client.post(URL, {"scope": "*", "level": "emergency", "reason": "x"}, format="json")
    cleared = client.post(f"{URL}/clear", {"scope": "*", "reason": "x"}, format="json")

    assert (forced.status_code, cleared.status_code) == (403, 403)
    assert not DegradationState.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="degradation.").exists()


PAST = "2020-01-01T00:00:00Z"
FUTURE = "2099-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"scope": "*", "level": "apocalypse", "reason": "x"}, 400, "level"),
        ({"scope": "*", "level": "minimal"}, 400, "reason"),
        ({"scope": "*", "level": "minimal", "reason": "   "}, 400, "reason"),
        ({"scope": "nope", "level": "minimal", "reason": "x"}, 404, "scope"),
        ({"scope": "Not A Slug", "level": "minimal", "reason": "x"}, 400, "scope"),
        ({"scope": "*", "level": "minimal", "reason": "x", "expires_at": PAST}, 400, "expires_at"),
        (
            {"scope": "*", "level": "minimal", "reason": "x", "expires_at": "2099-01-01T00:00:00"},
            400,
            "expires_at",
        ),
        ({"scope": "*", "level": "minimal", "reason": "x", "ttl_s": 0}, 400, "ttl_s"),
        ({"scope": "*", "level": "minimal", "reason": "x", "ttl_s": 60, "expires_at": FUTURE}, 400, "ttl_s"),
        ({"scope": "*", "level": "minimal", "reason": "x", "color": "red"}, 400, "color"),
    ],
)
def test_it_refuses_bad_input_naming_the_field(
    operator_client: APIClient, body: dict[str, Any], status: int, field: str
) -> None:
    response = operator_client.post(URL, body, format="json")

    assert response.status_code == status, response.json()
    assert [e["field"] for e in response.json()["errors"]] == [field]
    assert not DegradationState.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="degradation.").exists()


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [({"scope": "*"}, 400, "reason"), ({"scope": "nope", "reason": "x"}, 404, "scope"), ([], 400, "body")],
)
def test_clearing_refuses_bad_input(operator_client: APIClient, body: Any, status: int, field: str) -> None:
    response = operator_client.post(f"{URL}/clear", body, format="json")

    assert response.status_code == status
    assert [e["field"] for e in response.json()["errors"]] == [field]


# --- history ---------------------------------------------------------------------------------------------


def test_the_history_is_paginated_and_filtered_by_scope(agent_client: APIClient) -> None:
    Service.objects.create(name="search")
    operator = factories.operator()
    degradation_services.force(
        scope="*", level="minimal", reason="one", expires_at=None, actor=Actor(user=operator)
    )
    degradation_services.force(scope="search", level="degraded", reason="two", expires_at=None, actor=Actor())

    everything = agent_client.get(f"{URL}/events", {"page_size": 1}).json()
    fleet = agent_client.get(f"{URL}/events", {"scope": "*"}).json()

    assert everything["count"] == 2
    assert [e["scope"] for e in everything["results"]] == ["search"]  # newest first
    assert everything["next"] is not None
    [event] = fleet["results"]
    stored = DegradationEvent.objects.get(scope="*")
    assert event == {
        "id": stored.pk,
        "scope": "*",
        "from_level": "normal",
        "to_level": "minimal",
        "source": "operator",
        "reason": f"forced to minimal by user:{operator.username}: one",
        "actor": operator.username,
        "expires_at": None,
        "signals": {},
        "created_at": stored.created_at.isoformat().replace("+00:00", "Z"),
    }
    bad = agent_client.get(f"{URL}/events", {"scope": "Not A Scope"})
    assert (bad.status_code, [e["field"] for e in bad.json()["errors"]]) == (400, ["scope"])


# --- the admin -------------------------------------------------------------------------------------------


def admin_url(name: str, *args: Any) -> str:
    return url(f"recovery_{name}", *args)


def run_action(client: Client, action: str, pks: list[int], **extra: str) -> Any:
    return post_action(client, "recovery_degradationstate_changelist", action, pks, **extra)


def test_the_admin_lists_levels_and_forces_one_with_a_reason_and_an_end(operator: Client) -> None:
    force("*", "degraded")
    state = DegradationState.objects.get()
    until = timezone.localtime(timezone.now() + timedelta(hours=2)).replace(second=0, microsecond=0)

    page = operator.get(admin_url("degradationstate_changelist")).content.decode()
    asked = run_action(operator, "force_level", [state.pk]).content.decode()
    done = run_action(
        operator,
        "force_level",
        [state.pk],
        **{
            CONFIRMED: "yes",
            "reason": "drill",
            "level": "emergency",
            "expires_at": until.strftime("%Y-%m-%dT%H:%M"),
        },
    )

    assert "rebound-level-degraded" in page and "the fleet (*)" in page
    assert 'name="reason"' in asked and 'name="level"' in asked and 'name="expires_at"' in asked
    assert done.status_code == 302
    state.refresh_from_db()
    assert (state.forced_level, state.forced_reason, state.forced_until, state.forced_by) == (
        "emergency",
        "drill",
        until,
        operator.user,  # type: ignore[attr-defined]
    )
    audit = AuditEvent.objects.filter(action="degradation.force").latest("id")
    assert (audit.source, audit.reason, audit.actor_user) == ("admin", "drill", operator.user)  # type: ignore[attr-defined]
    assert DegradationEvent.objects.latest("id").to_level == "emergency"


def test_the_admin_refuses_a_force_without_a_reason_or_with_a_past_end(operator: Client) -> None:
    force("*", "degraded")
    state = DegradationState.objects.get()
    past = timezone.localtime(timezone.now() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")

    blank = run_action(
        operator, "force_level", [state.pk], **{CONFIRMED: "yes", "reason": " ", "level": "minimal"}
    )
    late = run_action(
        operator,
        "force_level",
        [state.pk],
        **{CONFIRMED: "yes", "reason": "x", "level": "minimal", "expires_at": past},
    )

    assert (blank.status_code, late.status_code) == (200, 200)
    assert "Must be in the future." in late.content.decode()
    state.refresh_from_db()
    assert state.forced_level == "degraded"
    assert AuditEvent.objects.filter(action="degradation.force").count() == 1  # the set-up's


def test_the_admin_clears_a_forced_level(operator: Client) -> None:
    force("*", "minimal")
    state = DegradationState.objects.get()

    response = run_action(operator, "clear_forced", [state.pk], **{CONFIRMED: "yes", "reason": "over"})

    assert response.status_code == 302
    state.refresh_from_db()
    assert state.forced_level == ""
    audit = AuditEvent.objects.get(action="degradation.clear")
    assert (audit.source, audit.reason) == ("admin", "over")


def test_the_admin_add_page_forces_a_level_on_any_scope(operator: Client) -> None:
    Service.objects.create(name="search")

    form = operator.get(admin_url("degradationstate_add")).content.decode()
    response = operator.post(
        admin_url("degradationstate_add"),
        {"scope": "search", "level": "minimal", "reason": "quota", "expires_at": ""},
    )

    assert 'value="search"' in form
    assert response.status_code == 302
    state = DegradationState.objects.get(scope="search")
    assert (state.forced_level, state.forced_reason, state.forced_until) == ("minimal", "quota", None)
    assert AuditEvent.objects.get(action="degradation.force").source == "admin"
    page = operator.get(admin_url("degradationstate_change", state.pk)).content.decode()
    assert "Clear the forced level" in page and "rebound-level-minimal" in page


def test_the_admin_edits_rules_with_a_reason(operator: Client) -> None:
    rule = DegradationRule.objects.get(name="essential breaker open")
    data = {
        "name": rule.name,
        "description": rule.description,
        "enabled": "on",
        "signal": rule.signal,
        "threshold": "2",
        "level": "minimal",
        "service": "",
    }

    refused = operator.post(admin_url("degradationrule_change", rule.pk), {**data, "audit_reason": ""})
    saved = operator.post(admin_url("degradationrule_change", rule.pk), {**data, "audit_reason": "too eager"})

    assert (refused.status_code, saved.status_code) == (200, 302)
    rule.refresh_from_db()
    assert (rule.threshold, rule.level) == (2, "minimal")
    [audit] = AuditEvent.objects.filter(action="degradation_rule.update")
    assert (audit.source, audit.reason, audit.before["level"], audit.after["level"]) == (  # type: ignore[index]
        "admin",
        "too eager",
        "degraded",
        "minimal",
    )


def test_a_viewer_looks_but_cannot_act(viewer: Client) -> None:
    force("*", "minimal")
    state = DegradationState.objects.get()
    rule = DegradationRule.objects.get(name="essential breaker open")

    listed = viewer.get(admin_url("degradationstate_changelist"))
    run_action(viewer, "clear_forced", [state.pk], **{CONFIRMED: "yes", "reason": "x"})
    add = viewer.post(admin_url("degradationstate_add"), {"scope": "*", "level": "normal", "reason": "x"})
    edit = viewer.post(admin_url("degradationrule_change", rule.pk), {"threshold": "9", "audit_reason": "x"})
    events = viewer.get(admin_url("degradationevent_changelist"))

    assert (listed.status_code, add.status_code, edit.status_code, events.status_code) == (200, 403, 403, 200)
    assert listed.context["action_form"] is None
    state.refresh_from_db()
    rule.refresh_from_db()
    assert (state.forced_level, rule.threshold) == ("minimal", 1)
    assert AuditEvent.objects.filter(source="admin").count() == 0


def test_the_admin_shows_an_events_signals(viewer: Client) -> None:
    force("*", "minimal", reason="drill")
    event = DegradationEvent.objects.get()
    DegradationEvent.objects.filter(pk=event.pk).update(signals={"breakers_open": 7})

    page = viewer.get(admin_url("degradationevent_change", event.pk)).content.decode()

    assert "&quot;breakers_open&quot;: 7" in page
    assert "rebound-level-minimal" in viewer.get(admin_url("degradationevent_changelist")).content.decode()


def test_the_admin_adds_a_rule_with_a_reason(operator: Client) -> None:
    Service.objects.create(name="search")
    data = {
        "name": "search errors",
        "description": "",
        "enabled": "on",
        "signal": "errors_per_minute",
        "threshold": "30",
        "level": "degraded",
        "service": str(Service.objects.get().pk),
        "audit_reason": "search floods us when it fails",
    }

    response = operator.post(admin_url("degradationrule_add"), data)

    assert response.status_code == 302
    rule = DegradationRule.objects.get(name="search errors")
    assert (rule.signal, rule.threshold, rule.level, rule.service, rule.builtin) == (
        "errors_per_minute",
        30,
        "degraded",
        Service.objects.get(),
        False,
    )
    [audit] = AuditEvent.objects.filter(action="degradation_rule.create")
    assert (audit.source, audit.reason, audit.target_id) == (
        "admin",
        "search floods us when it fails",
        str(rule.pk),
    )

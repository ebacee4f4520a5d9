"""The escalation API: the queue (filters, its order, agents see their own), an agent raising an escalation
(new, repeated, refused naming the field), one escalation with its events and deliveries, and the humans' acts
on it (reviewers and operators only; a 409 naming the state when it is resolved or the act is done already).
Every answer matches /api/schema/."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from core.access.roles import REVIEWERS
from core.audit.models import AuditEvent
from core.audit.services import Actor
from healing.escalations import selectors, services
from healing.escalations.models import Escalation, EscalationEvent, EscalationTrigger
from healing.notifications.models import Delivery, NotificationChannel
from tests.support import factories
from tests.support.openapi import conforms

pytestmark = pytest.mark.django_db
URL = "/api/v1/escalations"
ONE = f"{URL}/{{escalation_id}}"
ACTS = ("ack", "assign", "comment", "snooze", "resolve", "reopen")


def reviewer_account(**fields: Any) -> Any:
    return factories.UserFactory(role=REVIEWERS, **fields)


@pytest.fixture
def reviewer_user(db: Any) -> Any:
    return reviewer_account()


@pytest.fixture
def reviewer_client(reviewer_user: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {factories.user_key(reviewer_user)}")
    client.user = reviewer_user  # type: ignore[attr-defined]
    return client


def escalate(key: str = "rollback_failed:1", level: str = "critical", **fields: Any) -> Escalation:
    """An escalation raised by the system, as a trigger raises it."""
    fields.setdefault("trigger", key.split(":", 1)[0] if ":" in key else "rollback_failed")
    fields.setdefault("title", f"Something needs a human ({key})")
    raised = services.raise_escalation(services.Raise(dedup_key=key, level=level, **fields))
    return raised.escalation


def by_agent(agent: Any, key: str = "export-empty", level: str = "warning") -> Escalation:
    raised = services.raise_by_agent(
        level=level,
        title="The export wrote nothing",
        summary="",
        dedup_key=key,
        service="warehouse",
        context={},
        actor=Actor(agent=agent),
    )
    return raised.escalation


def act_body(act: str, user: Any = None) -> dict[str, Any]:
    """A valid body for each act (assign: to `user`)."""
    return {
        "ack": {},
        "assign": {"user": user.get_username() if user is not None else "nobody"},
        "comment": {"text": "looking"},
        "snooze": {
            "until": (timezone.now() + timedelta(hours=1)).isoformat(),
            "reason": "vendor fix at 13:00",
        },
        "resolve": {"resolution": "refunded by hand"},
        "reopen": {"reason": "not over"},
    }[act]


def age(escalation: Escalation, minutes: int) -> None:
    """Make an escalation first seen `minutes` ago (the queue orders by age within a level)."""
    Escalation.objects.filter(pk=escalation.pk).update(
        first_seen_at=timezone.now() - timedelta(minutes=minutes)
    )


def ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.json()
    return [row["id"] for row in response.json()["results"]]


def field_at_fault(response: Any) -> str:
    assert response.status_code == 400, response.json()
    return str(response.json()["errors"][0]["field"])


# --- the queue ---------------------------------------------------------------------------------------------------


def test_it_lists_the_queue_not_resolved_first_then_by_level_then_oldest_first(
    viewer_client: APIClient,
) -> None:
    old_warning = escalate("security:a", "warning")
    new_emergency = escalate("rollback_failed:1", "emergency")
    old_critical = escalate("data_integrity:a", "critical")
    new_critical = escalate("data_integrity:b", "critical")
    done = escalate("rollback_failed:2", "emergency")
    for escalation, minutes in ((old_warning, 60), (old_critical, 30), (new_critical, 5), (done, 90)):
        age(escalation, minutes)
    services.resolve(escalation_id=done.pk, resolution="fixed", actor=Actor(user=factories.operator()))

    response = viewer_client.get(URL)

    conforms(response, "get", URL)
    assert ids(response) == [new_emergency.pk, old_critical.pk, new_critical.pk, old_warning.pk, done.pk]


def test_it_shows_an_escalation_in_the_queue_with_the_fields_of_the_issue(viewer_client: APIClient) -> None:
    escalation = escalate("rollback_failed:9", "emergency", service="billing", context={"step": "charge"})

    row = viewer_client.get(URL).json()["results"][0]

    assert (row["id"], row["level"], row["state"], row["trigger"], row["dedup_key"]) == (
        escalation.pk,
        "emergency",
        "open",
        "rollback_failed",
        "rollback_failed:9",
    )
    assert (row["service"], row["occurrences"], row["context"], row["raised_by"]) == (
        "billing",
        1,
        {"step": "charge"},
        "trigger:rollback_failed",
    )
    assert row["links"] == dict.fromkeys(
        ("pattern", "task", "transaction", "retry_job", "healing_run", "breaker_transition", "plan")
    )
    assert row["assignee"] is None and row["resolution"] is None and row["auto_resolved"] is False
    assert row["recommended_action"]  # the built-in runbook "deployment" matches rollback_failed


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"state": "acknowledged"}, ["b"]),
        ({"level": "warning"}, ["c"]),
        ({"service": "billing"}, ["a", "b"]),
        ({"service": "billing", "state": "open"}, ["a"]),
    ],
)
def test_it_filters_the_queue(
    query: dict[str, str], expected: list[str], viewer_client: APIClient, reviewer_user: Any
) -> None:
    made = {
        "a": escalate("rollback_failed:a", "critical", service="billing"),
        "b": escalate("rollback_failed:b", "critical", service="billing"),
        "c": escalate("security:c", "warning", service="auth"),
    }
    services.acknowledge(escalation_id=made["b"].pk, actor=Actor(user=reviewer_user))

    response = viewer_client.get(URL, query)

    conforms(response, "get", URL)
    assert ids(response) == [made[name].pk for name in expected]


def test_it_filters_the_queue_by_assignee_and_mine(reviewer_client: APIClient, reviewer_user: Any) -> None:
    other = reviewer_account()
    mine = escalate("security:1", "warning")
    theirs = escalate("security:2", "warning")
    escalate("security:3", "warning")
    actor = Actor(user=reviewer_user)
    services.assign(escalation_id=mine.pk, username=reviewer_user.get_username(), actor=actor)
    services.assign(escalation_id=theirs.pk, username=other.get_username(), actor=actor)

    assert ids(reviewer_client.get(URL, {"mine": "true"})) == [mine.pk]
    assert ids(reviewer_client.get(URL, {"assignee": other.get_username()})) == [theirs.pk]
    assert len(ids(reviewer_client.get(URL, {"mine": "false"}))) == 3


def test_it_pages_the_queue(viewer_client: APIClient) -> None:
    made = [escalate(f"security:{n}", "warning") for n in range(3)]
    for minutes, escalation in zip((30, 20, 10), made, strict=True):
        age(escalation, minutes)

    first = viewer_client.get(URL, {"page_size": 2})
    second = viewer_client.get(first.json()["next"])

    conforms(first, "get", URL)
    assert (first.json()["count"], ids(first), ids(second)) == (3, [made[0].pk, made[1].pk], [made[2].pk])
    assert second.json()["next"] is None


@pytest.mark.parametrize(
    ("query", "field"),
    [({"state": "closed"}, "state"), ({"level": "urgent"}, "level"), ({"mine": "perhaps"}, "mine")],
)
def test_it_refuses_a_filter_it_does_not_know_naming_it(
    query: dict[str, str], field: str, viewer_client: APIClient
) -> None:
    response = viewer_client.get(URL, query)

    conforms(response, "get", URL)
    assert field_at_fault(response) == field


@pytest.mark.parametrize("who", ["agent", "viewer", "reviewer", "operator"])
def test_every_principal_reads_the_queue(
    who: str,
    agent_client: APIClient,
    viewer_client: APIClient,
    reviewer_client: APIClient,
    operator_client: APIClient,
) -> None:
    client = {"agent": agent_client, "viewer": viewer_client, "reviewer": reviewer_client}.get(
        who, operator_client
    )
    mine = by_agent(agent_client.agent)  # type: ignore[attr-defined]
    system = escalate()

    listed = ids(client.get(URL))

    assert sorted(listed) == sorted([mine.pk] if who == "agent" else [mine.pk, system.pk])


def test_an_agent_sees_only_the_escalations_it_raised(agent_client: APIClient) -> None:
    other_agent = factories.AgentFactory()
    theirs = by_agent(other_agent, key="same-key")
    mine = by_agent(agent_client.agent, key="same-key")  # type: ignore[attr-defined]
    system = escalate()

    assert ids(agent_client.get(URL)) == [mine.pk]
    assert agent_client.get(f"{URL}/{mine.pk}").status_code == 200
    for hidden in (theirs, system):
        response = agent_client.get(f"{URL}/{hidden.pk}")
        assert response.status_code == 404
        conforms(response, "get", ONE)


def test_it_answers_401_without_a_key() -> None:
    response = APIClient().get(URL)

    assert response.status_code == 401
    conforms(response, "get", URL)


# --- an agent raises one -----------------------------------------------------------------------------------------

AGENT_BODY: dict[str, Any] = {
    "level": "critical",
    "title": "The nightly export wrote 0 rows",
    "summary": "three nights running",
    "dedup_key": "export-orders-empty",
    "service": "warehouse",
    "context": {"rows": 0},
}


def test_an_agent_raises_an_escalation(agent_client: APIClient) -> None:
    agent = agent_client.agent  # type: ignore[attr-defined]

    response = agent_client.post(URL, AGENT_BODY, format="json")

    assert response.status_code == 201, response.json()
    conforms(response, "post", URL)
    body = response.json()
    assert (body["outcome"], body["trigger"], body["level"], body["state"], body["occurrences"]) == (
        "raised",
        "agent",
        "critical",
        "open",
        1,
    )
    assert (body["dedup_key"], body["raised_by"]) == (
        f"agent:{agent.name}:export-orders-empty",
        f"agent:{agent.name}",
    )
    assert [e["kind"] for e in body["events"]] == ["raised"]
    escalation = Escalation.objects.get(pk=body["id"])
    assert (escalation.raised_by_agent_id, escalation.title, escalation.context) == (
        agent.pk,
        "The nightly export wrote 0 rows",
        {"rows": 0},
    )


def test_a_repeat_counts_into_the_open_one_and_says_so(agent_client: APIClient) -> None:
    first = agent_client.post(URL, AGENT_BODY, format="json").json()

    response = agent_client.post(URL, {**AGENT_BODY, "level": "emergency"}, format="json")

    assert response.status_code == 200, response.json()
    conforms(response, "post", URL)
    body = response.json()
    assert (body["id"], body["outcome"], body["occurrences"], body["level"]) == (
        first["id"],
        "repeated",
        2,
        "emergency",
    )
    assert Escalation.objects.count() == 1


@pytest.mark.parametrize("who", ["reviewer", "operator"])
def test_reviewers_and_operators_may_raise_one(
    who: str, reviewer_client: APIClient, operator_client: APIClient
) -> None:
    client = reviewer_client if who == "reviewer" else operator_client

    response = client.post(URL, AGENT_BODY, format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["raised_by"] == f"user:{client.user.get_username()}"  # type: ignore[attr-defined]


def test_a_viewer_cannot_raise_one(viewer_client: APIClient) -> None:
    response = viewer_client.post(URL, AGENT_BODY, format="json")

    assert response.status_code == 403
    conforms(response, "post", URL)
    assert not Escalation.objects.exists()


@pytest.fixture
def agent_trigger_off(db: Any) -> Iterator[None]:
    """The trigger `agent` disabled, and the triggers' per-process cache forgotten before and after."""
    EscalationTrigger.objects.filter(kind="agent").update(enabled=False)
    selectors.clear_trigger_cache()
    yield
    selectors.clear_trigger_cache()


@pytest.mark.usefixtures("agent_trigger_off")
def test_no_agent_raises_one_while_the_agent_trigger_is_off(agent_client: APIClient) -> None:
    response = agent_client.post(URL, AGENT_BODY, format="json")

    assert response.status_code == 403
    conforms(response, "post", URL)
    assert not Escalation.objects.exists()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"level": "urgent"}, "level"),
        ({"level": None}, "level"),
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"dedup_key": ""}, "dedup_key"),
        ({"dedup_key": "k" * 201}, "dedup_key"),
        ({"service": "Not A Slug"}, "service"),
        ({"context": ["a list"]}, "context"),
        ({"context": "text"}, "context"),
        ({"context": {"blob": "x" * 20_000}}, "context"),
        ({"summary": "a\x00b"}, "summary"),
        ({"trigger": "rollback_failed"}, "trigger"),
    ],
)
def test_it_refuses_an_escalation_it_cannot_keep_naming_the_field(
    changes: dict[str, Any], field: str, agent_client: APIClient
) -> None:
    response = agent_client.post(URL, {**AGENT_BODY, **changes}, format="json")

    conforms(response, "post", URL)
    assert field_at_fault(response) == field
    assert not Escalation.objects.exists()


@pytest.mark.parametrize("missing", ["level", "title", "dedup_key"])
def test_it_names_a_missing_field(missing: str, agent_client: APIClient) -> None:
    body = {k: v for k, v in AGENT_BODY.items() if k != missing}

    assert field_at_fault(agent_client.post(URL, body, format="json")) == missing


def test_it_takes_an_escalation_with_only_its_required_fields(agent_client: APIClient) -> None:
    body = {"level": "info", "title": "FYI", "dedup_key": "fyi"}

    response = agent_client.post(URL, body, format="json")

    assert response.status_code == 201, response.json()
    assert (response.json()["service"], response.json()["summary"], response.json()["context"]) == (
        "",
        "",
        {},
    )


# --- one escalation ----------------------------------------------------------------------------------------------


def test_it_shows_an_escalation_with_its_events_and_deliveries(
    agent_client: APIClient, reviewer_client: APIClient
) -> None:
    escalation = escalate("rollback_failed:7", "emergency")
    services.comment(
        escalation_id=escalation.pk,
        text="on it",
        actor=Actor(user=reviewer_client.user),  # type: ignore[attr-defined]
    )
    channel = NotificationChannel.objects.create(name="oncall", url="json://127.0.0.1:9/hook")
    Delivery.objects.create(
        channel=channel,
        channel_name="oncall",
        escalation=escalation,
        notice=1,
        level="emergency",
        status="failed",
        attempts=5,
        error="connection refused",
        created_at=timezone.now(),
    )

    response = reviewer_client.get(f"{URL}/{escalation.pk}")

    assert response.status_code == 200
    conforms(response, "get", ONE)
    body = response.json()
    assert [(e["kind"], e["actor"]) for e in body["events"]] == [
        ("raised", "trigger:rollback_failed"),
        ("commented", f"user:{reviewer_client.user.get_username()}"),  # type: ignore[attr-defined]
    ]
    assert body["events"][1]["text"] == "on it"
    assert [
        (d["channel"], d["level"], d["status"], d["attempts"], d["error"], d["sent_at"])
        for d in body["deliveries"]
    ] == [("oncall", "emergency", "failed", 5, "connection refused", None)]


@pytest.mark.parametrize("given", ["999999", "abc", "1" * 30])
def test_it_answers_404_for_no_such_escalation(given: str, viewer_client: APIClient) -> None:
    response = viewer_client.get(f"{URL}/{given}")

    assert response.status_code == 404
    conforms(response, "get", ONE)


# --- the humans' acts --------------------------------------------------------------------------------------------


def test_a_reviewer_acknowledges_an_escalation_audited(reviewer_client: APIClient) -> None:
    escalation = escalate()

    response = reviewer_client.post(f"{URL}/{escalation.pk}/ack")

    assert response.status_code == 200, response.json()
    conforms(response, "post", f"{ONE}/ack")
    user = reviewer_client.user  # type: ignore[attr-defined]
    assert (response.json()["state"], response.json()["acknowledged_by"]) == (
        "acknowledged",
        user.get_username(),
    )
    escalation.refresh_from_db()
    assert (escalation.state, escalation.acknowledged_by_id) == ("acknowledged", user.pk)
    assert escalation.acknowledged_at is not None
    assert EscalationEvent.objects.filter(escalation=escalation, kind="acknowledged", user=user).exists()
    assert AuditEvent.objects.filter(actor_user=user, target_id=str(escalation.pk)).exists()


def test_an_operator_works_the_queue_too(operator_client: APIClient) -> None:
    escalation = escalate()

    response = operator_client.post(f"{URL}/{escalation.pk}/ack")

    assert response.status_code == 200, response.json()
    escalation.refresh_from_db()
    assert escalation.acknowledged_by_id == operator_client.user.pk  # type: ignore[attr-defined]


def test_a_reviewer_assigns_an_escalation_by_user_name(reviewer_client: APIClient) -> None:
    escalation = escalate()
    bob = reviewer_account(username="bob")

    response = reviewer_client.post(f"{URL}/{escalation.pk}/assign", {"user": "bob"}, format="json")

    assert response.status_code == 200, response.json()
    conforms(response, "post", f"{ONE}/assign")
    assert response.json()["assignee"] == "bob"
    escalation.refresh_from_db()
    assert escalation.assignee_id == bob.pk
    assert EscalationEvent.objects.filter(escalation=escalation, kind="assigned").exists()


@pytest.mark.parametrize("body", [{"user": "nobody-by-this-name"}, {"user": ""}, {}])
def test_it_refuses_to_assign_to_no_such_user_naming_the_field(
    body: dict[str, Any], reviewer_client: APIClient
) -> None:
    escalation = escalate()

    response = reviewer_client.post(f"{URL}/{escalation.pk}/assign", body, format="json")

    conforms(response, "post", f"{ONE}/assign")
    assert field_at_fault(response) == "user"
    escalation.refresh_from_db()
    assert escalation.assignee_id is None


def test_a_reviewer_comments_on_an_escalation(reviewer_client: APIClient) -> None:
    escalation = escalate()

    response = reviewer_client.post(
        f"{URL}/{escalation.pk}/comment", {"text": "refund 4411 by hand"}, format="json"
    )

    assert response.status_code == 200, response.json()
    conforms(response, "post", f"{ONE}/comment")
    assert response.json()["events"][-1]["kind"] == "commented"
    event = EscalationEvent.objects.get(escalation=escalation, kind="commented")
    assert (event.text, event.user_id) == ("refund 4411 by hand", reviewer_client.user.pk)  # type: ignore[attr-defined]


def test_a_reviewer_snoozes_an_escalation(reviewer_client: APIClient) -> None:
    escalation = escalate()
    until = timezone.now() + timedelta(hours=2)

    response = reviewer_client.post(
        f"{URL}/{escalation.pk}/snooze",
        {"until": until.isoformat(), "reason": "vendor fix at 13:00"},
        format="json",
    )

    assert response.status_code == 200, response.json()
    conforms(response, "post", f"{ONE}/snooze")
    escalation.refresh_from_db()
    assert (escalation.state, escalation.snoozed_until) == ("snoozed", until)
    assert EscalationEvent.objects.filter(escalation=escalation, kind="snoozed").exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"until": "2020-01-01T00:00:00Z", "reason": "x"}, "until"),
        ({"until": "tomorrow", "reason": "x"}, "until"),
        ({"reason": "x"}, "until"),
        ({"until": "2999-01-01T00:00:00Z", "reason": " "}, "reason"),
    ],
)
def test_it_refuses_a_snooze_it_cannot_keep_naming_the_field(
    body: dict[str, Any], field: str, reviewer_client: APIClient
) -> None:
    escalation = escalate()

    response = reviewer_client.post(f"{URL}/{escalation.pk}/snooze", body, format="json")

    assert field_at_fault(response) == field
    escalation.refresh_from_db()
    assert escalation.state == "open"


def test_a_reviewer_resolves_an_escalation_with_its_resolution(reviewer_client: APIClient) -> None:
    escalation = escalate()

    response = reviewer_client.post(
        f"{URL}/{escalation.pk}/resolve", {"resolution": "refunds issued (CHG-88)"}, format="json"
    )

    assert response.status_code == 200, response.json()
    conforms(response, "post", f"{ONE}/resolve")
    user = reviewer_client.user  # type: ignore[attr-defined]
    assert (response.json()["resolved_by"], response.json()["resolution"]) == (
        user.get_username(),
        "refunds issued (CHG-88)",
    )
    escalation.refresh_from_db()
    assert (escalation.state, escalation.resolved_by_id, escalation.auto_resolved) == (
        "resolved",
        user.pk,
        False,
    )
    assert escalation.resolved_at is not None


@pytest.mark.parametrize("body", [{}, {"resolution": "  "}])
def test_it_refuses_a_resolution_that_says_nothing(body: dict[str, Any], reviewer_client: APIClient) -> None:
    escalation = escalate()

    response = reviewer_client.post(f"{URL}/{escalation.pk}/resolve", body, format="json")

    conforms(response, "post", f"{ONE}/resolve")
    assert field_at_fault(response) == "resolution"
    escalation.refresh_from_db()
    assert escalation.state == "open"


@pytest.mark.parametrize("body", [{"reason": "refund 4414 failed too"}, {}])
def test_a_reviewer_reopens_a_resolved_escalation(body: dict[str, Any], reviewer_client: APIClient) -> None:
    escalation = escalate()
    reviewer_client.post(f"{URL}/{escalation.pk}/resolve", {"resolution": "done"}, format="json")

    response = reviewer_client.post(f"{URL}/{escalation.pk}/reopen", body, format="json")

    assert response.status_code == 200, response.json()
    conforms(response, "post", f"{ONE}/reopen")
    escalation.refresh_from_db()
    assert (escalation.state, escalation.resolved_at, escalation.acknowledged_at) == ("open", None, None)
    assert EscalationEvent.objects.filter(escalation=escalation, kind="reopened").exists()


@pytest.mark.parametrize("act", [a for a in ACTS if a != "reopen"])
def test_acting_on_a_resolved_escalation_is_a_409_naming_its_state(
    act: str, reviewer_client: APIClient, reviewer_user: Any
) -> None:
    escalation = escalate()
    services.resolve(escalation_id=escalation.pk, resolution="done", actor=Actor(user=reviewer_user))
    events = EscalationEvent.objects.filter(escalation=escalation).count()

    response = reviewer_client.post(
        f"{URL}/{escalation.pk}/{act}", act_body(act, reviewer_user), format="json"
    )

    assert response.status_code == 409, response.json()
    conforms(response, "post", f"{ONE}/{act}")
    assert "resolved" in response.json()["detail"]
    escalation.refresh_from_db()
    assert escalation.state == "resolved"
    assert EscalationEvent.objects.filter(escalation=escalation).count() == events


@pytest.mark.parametrize(("act", "state"), [("ack", "acknowledged"), ("reopen", "open")])
def test_doing_it_twice_is_a_409_naming_the_state(
    act: str, state: str, reviewer_client: APIClient, reviewer_user: Any
) -> None:
    escalation = escalate()
    if act == "ack":
        services.acknowledge(escalation_id=escalation.pk, actor=Actor(user=reviewer_user))

    response = reviewer_client.post(f"{URL}/{escalation.pk}/{act}", act_body(act), format="json")

    assert response.status_code == 409, response.json()
    conforms(response, "post", f"{ONE}/{act}")
    assert state in response.json()["detail"]


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("who", ["agent", "viewer"])
def test_agents_and_viewers_do_not_change_an_escalation(
    act: str, who: str, agent_client: APIClient, viewer_client: APIClient, reviewer_user: Any
) -> None:
    client = agent_client if who == "agent" else viewer_client
    escalation = by_agent(agent_client.agent)  # type: ignore[attr-defined]
    if act == "reopen":
        services.resolve(escalation_id=escalation.pk, resolution="done", actor=Actor(user=reviewer_user))
    before = Escalation.objects.values().get(pk=escalation.pk)

    response = client.post(f"{URL}/{escalation.pk}/{act}", act_body(act, reviewer_user), format="json")

    assert response.status_code == 403
    conforms(response, "post", f"{ONE}/{act}")
    assert Escalation.objects.values().get(pk=escalation.pk) == before


@pytest.mark.parametrize("act", ACTS)
def test_acting_on_no_such_escalation_is_a_404(
    act: str, reviewer_client: APIClient, reviewer_user: Any
) -> None:
    response = reviewer_client.post(f"{URL}/424242/{act}", act_body(act, reviewer_user), format="json")

    assert response.status_code == 404
    conforms(response, "post", f"{ONE}/{act}")

"""The notifications API: channels written and read by operators only (validated, audited, the URL never shown
back in full), silences set, listed and ended by reviewers and operators. Every answer matches /api/schema/."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from core.audit.models import AuditEvent
from healing.notifications.models import Delivery, NotificationChannel, Silence
from tests.support import factories
from tests.support.escalations import reviewer
from tests.support.http_target import Target
from tests.support.notifications import channel, deliver, escalation, silence
from tests.support.openapi import conforms

pytestmark = pytest.mark.django_db
CHANNELS = "/api/v1/notification-channels"
CHANNEL = "/api/v1/notification-channels/{channel_id}"
SILENCES = "/api/v1/silences"
SILENCE = "/api/v1/silences/{silence_id}"
SECRET = "s3cretpassw0rd"


@pytest.fixture
def reviewer_client() -> APIClient:
    user = reviewer()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {factories.user_key(user)}")
    client.user = user  # type: ignore[attr-defined]
    return client


def channel_body(target: Target, **changes: Any) -> dict[str, Any]:
    return {
        "name": "oncall",
        "url": f"json://rebound:{SECRET}@{target.host}/hooks/rebound?token=abc",
        "min_level": "critical",
        "services": ["payments"],
        "reason": "the on-call bridge",
        **changes,
    }


def fields_at_fault(response: Any, method: str, path: str) -> list[str]:
    assert response.status_code == 400, response.content
    conforms(response, method, path)
    return [e["field"] for e in response.json()["errors"]]


def in_the_future(**delta: float) -> str:
    return (timezone.now() + timedelta(**delta)).isoformat()


# --- channels ----------------------------------------------------------------------------------------------------


def test_an_operator_creates_a_channel_whose_url_is_never_shown(
    operator_client: APIClient, receiver: Target
) -> None:
    response = operator_client.post(CHANNELS, channel_body(receiver), format="json")

    assert response.status_code == 201, response.json()
    conforms(response, "post", CHANNELS)
    body = response.json()
    assert body["url"] == f"json://{receiver.host.split(':')[0]}:…/…"
    assert (body["name"], body["scheme"], body["min_level"], body["services"], body["enabled"]) == (
        "oncall",
        "json",
        "critical",
        ["payments"],
        True,
    )
    stored = NotificationChannel.objects.get(name="oncall")
    assert stored.url == channel_body(receiver)["url"]
    event = AuditEvent.objects.get(action="notification_channel.create")
    assert (event.reason, event.target_id, event.actor_user_id) == (
        "the on-call bridge",
        str(stored.pk),
        operator_client.user.pk,  # type: ignore[attr-defined]
    )
    assert SECRET not in str(event.after) and "token" not in str(event.after)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"url": "nope://x"}, "url"),
        ({"url": "json://hooks.example.com/rebound"}, "url"),  # not in OUTBOUND_ALLOWED_HOSTS
        ({"url": "  "}, "url"),
        ({"url": None}, "url"),
        ({"name": "Not A Slug"}, "name"),
        ({"min_level": "severe"}, "min_level"),
        ({"services": ["Payments!"]}, "services[0]"),
        ({"services": "payments"}, "services"),
        ({"reason": " "}, "reason"),
        ({"reason": None}, "reason"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_it_refuses_a_bad_channel_naming_the_field(
    operator_client: APIClient, receiver: Target, changes: dict[str, Any], field: str
) -> None:
    body = {k: v for k, v in channel_body(receiver, **changes).items() if v is not None}
    assert field in fields_at_fault(operator_client.post(CHANNELS, body, format="json"), "post", CHANNELS)
    assert not NotificationChannel.objects.exists()


def test_it_refuses_a_taken_name(operator_client: APIClient, receiver: Target) -> None:
    channel(receiver, "oncall")
    response = operator_client.post(CHANNELS, channel_body(receiver), format="json")
    assert fields_at_fault(response, "post", CHANNELS) == ["name"]


def test_it_refuses_a_body_that_is_not_an_object(operator_client: APIClient) -> None:
    assert fields_at_fault(operator_client.post(CHANNELS, [1], format="json"), "post", CHANNELS) == ["body"]


def test_it_lists_and_shows_channels_masked(operator_client: APIClient, receiver: Target) -> None:
    hook = channel(receiver, "b-hook")
    channel(receiver, "a-off", enabled=False)

    listed = operator_client.get(CHANNELS)
    assert listed.status_code == 200
    conforms(listed, "get", CHANNELS)
    assert [c["name"] for c in listed.json()["results"]] == ["a-off", "b-hook"]
    assert all(c["url"].endswith("…/…") for c in listed.json()["results"])
    enabled = operator_client.get(CHANNELS, {"enabled": "true"})
    assert [c["name"] for c in enabled.json()["results"]] == ["b-hook"]

    shown = operator_client.get(CHANNEL.format(channel_id=hook.pk))
    assert shown.status_code == 200
    conforms(shown, "get", CHANNEL)
    assert "/hook" not in shown.content.decode()

    for missing in ("999999", "abc"):
        response = operator_client.get(CHANNEL.format(channel_id=missing))
        assert response.status_code == 404
        conforms(response, "get", CHANNEL)


def test_an_operator_changes_a_channel_keeping_its_url(operator_client: APIClient, receiver: Target) -> None:
    hook = channel(receiver)
    path = CHANNEL.format(channel_id=hook.pk)

    response = operator_client.patch(
        path, {"min_level": "info", "services": ["search"], "reason": "all of search"}, format="json"
    )

    assert response.status_code == 200, response.json()
    conforms(response, "patch", CHANNEL)
    hook.refresh_from_db()
    assert (hook.min_level, hook.services, hook.url) == ("info", ["search"], f"json://{receiver.host}/hook")
    event = AuditEvent.objects.get(action="notification_channel.update")
    assert event.before is not None and event.after is not None
    assert (event.before["min_level"], event.after["min_level"], event.reason) == (
        "warning",
        "info",
        "all of search",
    )

    moved = operator_client.patch(
        path, {"url": f"json://{receiver.host}/other", "reason": "moved"}, format="json"
    )
    assert moved.status_code == 200
    hook.refresh_from_db()
    assert hook.url == f"json://{receiver.host}/other"

    for body, field in (
        ({"url": None, "reason": "x"}, "url"),
        ({"enabled": False}, "reason"),
        ({"url": "nope://x", "reason": "x"}, "url"),
    ):
        assert field in fields_at_fault(operator_client.patch(path, body, format="json"), "patch", CHANNEL)


def test_an_operator_deletes_a_channel_with_a_reason(operator_client: APIClient, receiver: Target) -> None:
    hook = channel(receiver)
    deliver(escalation("k"))
    path = CHANNEL.format(channel_id=hook.pk)

    assert fields_at_fault(operator_client.delete(path), "delete", CHANNEL) == ["reason"]
    response = operator_client.delete(f"{path}?reason=retired")

    assert response.status_code == 204
    conforms(response, "delete", CHANNEL)
    assert not NotificationChannel.objects.exists()
    delivery = Delivery.objects.get()
    assert (delivery.channel_id, delivery.channel_name, delivery.status) == (None, "hook", "sent")
    assert AuditEvent.objects.get(action="notification_channel.delete").reason == "retired"
    gone = operator_client.delete(f"{path}?reason=again")
    assert gone.status_code == 404
    conforms(gone, "delete", CHANNEL)


@pytest.mark.parametrize("role", ["agent_client", "viewer_client", "reviewer_client"])
def test_only_operators_see_or_change_channels(
    role: str, request: pytest.FixtureRequest, receiver: Target
) -> None:
    client: APIClient = request.getfixturevalue(role)
    hook = channel(receiver)
    path = CHANNEL.format(channel_id=hook.pk)
    for response, method, documented in (
        (client.get(CHANNELS), "get", CHANNELS),
        (client.post(CHANNELS, channel_body(receiver), format="json"), "post", CHANNELS),
        (client.get(path), "get", CHANNEL),
        (client.patch(path, {"enabled": False, "reason": "x"}, format="json"), "patch", CHANNEL),
        (client.delete(f"{path}?reason=x"), "delete", CHANNEL),
    ):
        assert response.status_code == 403, (method, documented)
        conforms(response, method, documented)
    assert NotificationChannel.objects.get().enabled


def test_without_a_key_it_answers_401(receiver: Target) -> None:
    response = APIClient().get(CHANNELS)
    assert response.status_code == 401
    conforms(response, "get", CHANNELS)


# --- silences ----------------------------------------------------------------------------------------------------


def test_a_reviewer_sets_a_silence(reviewer_client: APIClient) -> None:
    ends = in_the_future(hours=2)
    response = reviewer_client.post(
        SILENCES,
        {"service": "search", "level": "warning", "ends_at": ends, "reason": "index rebuild"},
        format="json",
    )

    assert response.status_code == 201, response.json()
    conforms(response, "post", SILENCES)
    body = response.json()
    user = reviewer_client.user  # type: ignore[attr-defined]
    assert (body["service"], body["level"], body["reason"], body["created_by"], body["active"]) == (
        "search",
        "warning",
        "index rebuild",
        user.username,
        True,
    )
    stored = Silence.objects.get()
    assert (stored.created_by_id, stored.ended_at) == (user.pk, None)
    event = AuditEvent.objects.get(action="silence.create")
    assert (event.reason, event.actor_user_id, event.target_id) == ("index rebuild", user.pk, str(stored.pk))


def test_a_silence_may_cover_every_service_and_level(operator_client: APIClient) -> None:
    response = operator_client.post(
        SILENCES, {"ends_at": in_the_future(minutes=30), "reason": "deploy"}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert (response.json()["service"], response.json()["level"]) == ("", "")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"ends_at": "2020-01-01T00:00:00Z"}, "ends_at"),
        ({"ends_at": "tomorrow"}, "ends_at"),
        ({"ends_at": None}, "ends_at"),
        ({"level": "severe"}, "level"),
        ({"service": "Not A Slug"}, "service"),
        ({"reason": ""}, "reason"),
        ({"reason": None}, "reason"),
        ({"until": "x"}, "until"),
    ],
)
def test_it_refuses_a_bad_silence_naming_the_field(
    reviewer_client: APIClient, changes: dict[str, Any], field: str
) -> None:
    body = {"service": "search", "ends_at": in_the_future(hours=1), "reason": "why", **changes}
    body = {k: v for k, v in body.items() if v is not None}
    assert field in fields_at_fault(reviewer_client.post(SILENCES, body, format="json"), "post", SILENCES)
    assert not Silence.objects.exists()


def test_it_lists_silences_in_force_or_every_one(reviewer_client: APIClient) -> None:
    current = silence(service="search")
    ended = silence(service="payments")
    ended.ended_at = timezone.now()
    ended.save(update_fields=["ended_at"])

    active = reviewer_client.get(SILENCES)
    assert active.status_code == 200
    conforms(active, "get", SILENCES)
    assert [s["id"] for s in active.json()["results"]] == [current.pk]

    history = reviewer_client.get(SILENCES, {"all": "true"})
    conforms(history, "get", SILENCES)
    assert {s["id"]: s["active"] for s in history.json()["results"]} == {current.pk: True, ended.pk: False}
    assert fields_at_fault(reviewer_client.get(SILENCES, {"all": "maybe"}), "get", SILENCES) == ["all"]


def test_a_reviewer_ends_a_silence_early(reviewer_client: APIClient) -> None:
    muted = silence()
    path = SILENCE.format(silence_id=muted.pk)

    assert fields_at_fault(reviewer_client.delete(path), "delete", SILENCE) == ["reason"]
    response = reviewer_client.delete(path, {"reason": "maintenance done"}, format="json")

    assert response.status_code == 200, response.json()
    conforms(response, "delete", SILENCE)
    user = reviewer_client.user  # type: ignore[attr-defined]
    assert (response.json()["active"], response.json()["ended_by"]) == (False, user.username)
    muted.refresh_from_db()
    assert muted.ended_at is not None and muted.ended_by_id == user.pk
    assert AuditEvent.objects.get(action="silence.end").reason == "maintenance done"

    again = reviewer_client.delete(path, {"reason": "again"}, format="json")
    assert again.status_code == 409
    conforms(again, "delete", SILENCE)
    missing = reviewer_client.delete(SILENCE.format(silence_id=999999), {"reason": "x"}, format="json")
    assert missing.status_code == 404
    conforms(missing, "delete", SILENCE)


@pytest.mark.parametrize("role", ["agent_client", "viewer_client"])
def test_only_reviewers_and_operators_work_silences(role: str, request: pytest.FixtureRequest) -> None:
    client: APIClient = request.getfixturevalue(role)
    muted = silence()
    path = SILENCE.format(silence_id=muted.pk)
    body = {"ends_at": in_the_future(hours=1), "reason": "x"}
    for response, method, documented in (
        (client.get(SILENCES), "get", SILENCES),
        (client.post(SILENCES, body, format="json"), "post", SILENCES),
        (client.delete(path, {"reason": "x"}, format="json"), "delete", SILENCE),
    ):
        assert response.status_code == 403, method
        conforms(response, method, documented)
    muted.refresh_from_db()
    assert muted.ended_at is None and Silence.objects.count() == 1

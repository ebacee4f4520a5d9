"""The notifications' admin: channels saved through the service with a reason (the URL write-only: never on the
page, kept when left blank), silences set by reviewers and ended with a button, deliveries read-only."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from core.audit.models import AuditEvent
from healing.notifications.models import NotificationChannel, Silence
from tests.support.admin_helpers import confirmed, login, run_action, url
from tests.support.escalations import reviewer
from tests.support.http_target import Target
from tests.support.notifications import channel, deliver, escalation, silence

pytestmark = pytest.mark.django_db
SECRET = "s3cretpassw0rd"


def channel_form(**changes: Any) -> dict[str, Any]:
    return {
        "name": "oncall",
        "secret_url": "",
        "enabled": "on",
        "min_level": "warning",
        "services": "[]",
        "audit_reason": "the on-call bridge",
        **changes,
    }


def test_it_shows_every_notification_page(operator: Client, viewer: Client, receiver: Target) -> None:
    hook = channel(receiver, path=f"/hook/{SECRET}")
    deliver(escalation("k"))
    muted = silence()
    delivery = hook.deliveries.get()
    for client in (operator, viewer):
        for page in (
            url("healing_notificationchannel_changelist"),
            url("healing_notificationchannel_change", hook.pk),
            url("healing_silence_changelist"),
            url("healing_silence_change", muted.pk),
            url("healing_delivery_changelist"),
            url("healing_delivery_changelist") + "?status__exact=sent",
            url("healing_delivery_changelist") + f"?channel__id__exact={hook.pk}",
            url("healing_delivery_change", delivery.pk),
        ):
            response = client.get(page)
            assert response.status_code == 200, page
            assert SECRET not in response.content.decode(), page
    listing = operator.get(url("healing_notificationchannel_changelist")).content.decode()
    assert f"json://{receiver.host.split(':')[0]}:…/…" in listing
    for page in (url("healing_notificationchannel_add"), url("healing_silence_add")):
        assert operator.get(page).status_code == 200


def test_an_operator_adds_a_channel_with_a_reason(operator: Client, receiver: Target) -> None:
    secret_url = f"json://rebound:{SECRET}@{receiver.host}/hook"
    response = operator.post(url("healing_notificationchannel_add"), channel_form(secret_url=secret_url))
    assert response.status_code == 302, response.content.decode()[-3000:]
    stored = NotificationChannel.objects.get(name="oncall")
    assert stored.url == secret_url
    event = AuditEvent.objects.get(action="notification_channel.create")
    assert (event.source, event.reason) == ("admin", "the on-call bridge")
    assert SECRET not in str(event.after)


def test_a_new_channel_needs_a_url_apprise_understands(operator: Client, receiver: Target) -> None:
    blank = operator.post(url("healing_notificationchannel_add"), channel_form())
    assert blank.status_code == 200 and "needs its URL" in blank.content.decode()
    wrong = operator.post(url("healing_notificationchannel_add"), channel_form(secret_url="nope://x"))
    assert wrong.status_code == 200 and "apprise does not understand" in wrong.content.decode()
    assert not NotificationChannel.objects.exists()


def test_a_blank_url_keeps_the_stored_one(operator: Client, receiver: Target) -> None:
    hook = channel(receiver, "oncall")
    page = operator.get(url("healing_notificationchannel_change", hook.pk)).content.decode()
    assert "/hook" not in page  # not even in the form

    response = operator.post(
        url("healing_notificationchannel_change", hook.pk),
        channel_form(min_level="critical", audit_reason="criticals only"),
    )

    assert response.status_code == 302, response.content.decode()[-3000:]
    hook.refresh_from_db()
    assert (hook.min_level, hook.url) == ("critical", f"json://{receiver.host}/hook")
    assert AuditEvent.objects.get(action="notification_channel.update").reason == "criticals only"


def test_a_viewer_cannot_add_a_channel(viewer: Client, receiver: Target) -> None:
    response = viewer.post(
        url("healing_notificationchannel_add"), channel_form(secret_url=f"json://{receiver.host}/h")
    )
    assert response.status_code == 403
    assert not NotificationChannel.objects.exists()


def test_a_reviewer_sets_a_silence_and_ends_it_with_the_button() -> None:
    client = login(reviewer(is_staff=True))
    response = client.post(
        url("healing_silence_add"),
        {
            "service": "search",
            "level": "warning",
            "ends_at_0": "2099-01-01",
            "ends_at_1": "10:00:00",
            "reason": "rebuild",
        },
    )
    assert response.status_code == 302, response.content.decode()[-3000:]
    muted = Silence.objects.get()
    assert (muted.service, muted.level, muted.reason, muted.created_by_id) == (
        "search",
        "warning",
        "rebuild",
        client.user.pk,  # type: ignore[attr-defined]
    )
    assert AuditEvent.objects.get(action="silence.create").source == "admin"
    assert "end_silences" in client.get(url("healing_silence_change", muted.pk)).content.decode()

    asked = run_action(client, "healing_silence_changelist", "end_silences", [muted.pk])
    assert asked.status_code == 200 and "reason" in asked.content.decode()
    done = run_action(
        client, "healing_silence_changelist", "end_silences", [muted.pk], **confirmed("rebuild done")
    )
    assert done.status_code == 302
    muted.refresh_from_db()
    assert muted.ended_at is not None and muted.ended_by_id == client.user.pk  # type: ignore[attr-defined]
    assert AuditEvent.objects.get(action="silence.end").reason == "rebuild done"


def test_a_silence_in_the_past_is_refused_on_its_field(operator: Client) -> None:
    response = operator.post(
        url("healing_silence_add"),
        {"service": "", "level": "", "ends_at_0": "2020-01-01", "ends_at_1": "10:00:00", "reason": "late"},
    )
    assert response.status_code == 200 and "must be in the future" in response.content.decode()
    assert not Silence.objects.exists()

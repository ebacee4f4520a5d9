from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from core.audit import services as audit
from core.audit.models import AuditEvent
from core.audit.services import Actor
from tests.support.factories import AgentFactory, UserFactory

pytestmark = pytest.mark.django_db


def _event() -> AuditEvent:
    agent = AgentFactory()
    return audit.record(Actor(user=UserFactory()), "agent.test", agent, reason="because", after={"a": 1})


def test_it_records_who_did_what_to_which_object() -> None:
    event = _event()
    event.refresh_from_db()
    assert event.actor_label.startswith("user:")
    assert (event.action, event.target_type, event.reason, event.after) == (
        "agent.test",
        "recovery.agent",
        "because",
        {"a": 1},
    )
    assert event.source == "api"


def test_it_refuses_to_change_or_delete_an_event_in_python() -> None:
    event = _event()
    event.reason = "rewritten"
    with pytest.raises(RuntimeError):
        event.save()
    with pytest.raises(RuntimeError):
        event.delete()
    event.refresh_from_db()
    assert event.reason == "because"


@pytest.mark.postgres
def test_it_refuses_to_change_or_delete_an_event_in_the_database() -> None:
    event = _event()
    assert connection.vendor == "postgresql"
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(reason="rewritten")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).delete()
    assert AuditEvent.objects.get(pk=event.pk).reason == "because"


def test_it_requires_a_reason() -> None:
    with pytest.raises(Exception, match="require a reason"):
        audit.require_reason("   ")
    assert audit.require_reason(" ok ") == "ok"

"""The audit table is append-only on PostgreSQL against TRUNCATE too (issue 11, item 19)."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from core.audit.models import AuditEvent

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def _event() -> AuditEvent:
    event = AuditEvent.objects.create(
        actor_label="cli", action="x", target_type="t", target_id="1", source="cli"
    )
    with connection.cursor() as cursor:
        # The test's transaction holds the row's deferred foreign-key checks, which TRUNCATE would refuse for.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    return event


def test_it_refuses_to_truncate_the_audit_table() -> None:
    event = _event()
    with (
        pytest.raises(DatabaseError, match="append-only: TRUNCATE is not allowed"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("TRUNCATE healing_auditevent")
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_it_refuses_to_truncate_the_audit_table_in_a_cascade() -> None:
    event = _event()
    with (
        pytest.raises(DatabaseError, match="append-only: TRUNCATE is not allowed"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("TRUNCATE recovery_agent, healing_auditevent CASCADE")
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_it_still_refuses_update_and_delete() -> None:
    event = _event()
    for sql in ("UPDATE healing_auditevent SET reason = 'x'", "DELETE FROM healing_auditevent"):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql)
    event.refresh_from_db()
    assert event.reason == ""


def test_the_tables_owner_can_still_empty_it_on_purpose() -> None:
    """What a test database's teardown does: the user triggers off, in its own transaction only."""
    _event()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("ALTER TABLE healing_auditevent DISABLE TRIGGER USER")
        cursor.execute("TRUNCATE healing_auditevent")
        cursor.execute("ALTER TABLE healing_auditevent ENABLE TRIGGER USER")
    assert not AuditEvent.objects.exists()
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("TRUNCATE healing_auditevent")

"""The end of a transactional test, made cheap: empty what the test wrote, put back what the migrations seed.

Django ends a TransactionTestCase with `flush`, a TRUNCATE of every table (about 0.5 s for our 39 tables, each
truncated table gets new files), and with `serialized_rollback=True` it also saves the whole serialized
database (content types and permissions included) back row by row before the next one. That was ~35 s of the
suite. Here, on PostgreSQL, the teardown of a transactional test:

- finds the tables that hold rows (one query),
- deletes their rows, in one transaction with the foreign keys deferred (tables with a trigger that forbids
  DELETE, the append-only audit table, are truncated instead),
- puts back the rows the migrations seed, as they were when the run started: content types and permissions,
  the role groups, the built-in classification rules, retry policies, degradation rules, healing actions,
  escalation triggers, policy steps and runbooks (one bulk insert per table), so that every later test finds
  them, whatever the order, and so does a later run with --reuse-db.

Sequences are left alone, as Django's own teardown (flush with reset_sequences=False) leaves them.
On another database (the SQLite fallback without services) Django's flush runs and its post_migrate signal
puts the seeded rows back (restore()).
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.core.management.color import no_style
from django.db import connections, models, transaction
from django.db.models.signals import post_migrate
from django.test import TransactionTestCase

from healing.actions.models import HealingAction
from healing.escalations.models import EscalationPolicy, EscalationTrigger, Runbook
from recovery.decisions.models import RetryPolicy
from recovery.degradation.models import DegradationRule
from recovery.errors.models import ClassificationRule

SEEDED: list[type[models.Model]] = [
    ContentType,
    Permission,
    Group,
    ClassificationRule,
    RetryPolicy,
    DegradationRule,
    HealingAction,
    EscalationTrigger,
    EscalationPolicy,
    Runbook,
]

_snapshot: dict[type[models.Model], list[dict[str, Any]]] = {}


def take_snapshot() -> None:
    """Remember the seeded rows as the migrations left them (call once the test database exists)."""
    for model in SEEDED:
        _snapshot[model] = list(model._default_manager.values())


def restore(using: str = "default") -> None:
    """Put the seeded rows back into tables that a flush emptied."""
    restored = []
    for model, rows in _snapshot.items():
        if rows and not model._default_manager.using(using).exists():
            model._default_manager.using(using).bulk_create([model(**row) for row in rows])
            restored.append(model)
    if restored:
        connection = connections[using]
        with connection.cursor() as cursor:
            for sql in connection.ops.sequence_reset_sql(no_style(), restored):
                cursor.execute(sql)


def _quote(table: str) -> str:
    return connections["default"].ops.quote_name(table)


def reset_postgresql(using: str) -> None:
    """Empty every table the test wrote to and put the seeded rows back, in one transaction."""
    connection = connections[using]
    tables = connection.introspection.django_table_names(only_existing=True, include_views=False)
    with transaction.atomic(using=using), connection.cursor() as cursor:
        cursor.execute(
            " UNION ALL ".join(f"SELECT %s WHERE EXISTS (SELECT 1 FROM {_quote(t)})" for t in tables),
            list(tables),
        )
        written = [row[0] for row in cursor.fetchall()]
        cursor.execute(
            "SELECT DISTINCT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE NOT t.tgisinternal AND c.relname = ANY(%s)",
            [written],
        )
        guarded = {row[0] for row in cursor.fetchall()}  # e.g. the append-only audit table: no DELETE
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        for table in written:
            if table not in guarded:
                cursor.execute(f"DELETE FROM {_quote(table)}")
        if guarded:
            tables = sorted(guarded)
            # The append-only audit table refuses TRUNCATE by trigger (core 0002): as the tables' owner, turn
            # their user triggers off for this transaction's TRUNCATE only.
            for table in tables:
                cursor.execute(f"ALTER TABLE {_quote(table)} DISABLE TRIGGER USER")
            cursor.execute(f"TRUNCATE {', '.join(_quote(t) for t in tables)}")
            for table in tables:
                cursor.execute(f"ALTER TABLE {_quote(table)} ENABLE TRIGGER USER")
        for model, rows in _snapshot.items():
            if model._meta.db_table in written or not model._default_manager.using(using).exists():
                model._default_manager.using(using).bulk_create([model(**row) for row in rows])


_django_fixture_teardown = TransactionTestCase._fixture_teardown


def _fixture_teardown(self: TransactionTestCase) -> None:
    names = list(self._databases_names(include_mirrors=False))
    if all(connections[name].vendor == "postgresql" for name in names) and _snapshot:
        for name in names:
            reset_postgresql(name)
    else:
        _django_fixture_teardown(self)


def _after_flush(sender: Any, using: str = "default", **kwargs: Any) -> None:
    restore(using)


def install() -> None:
    """Make every transactional test end with reset_postgresql (or, elsewhere, Django's flush and restore)."""
    TransactionTestCase._fixture_teardown = _fixture_teardown  # type: ignore[method-assign]
    post_migrate.connect(
        _after_flush, sender=apps.get_app_config("recovery"), dispatch_uid="tests.support.seeds"
    )

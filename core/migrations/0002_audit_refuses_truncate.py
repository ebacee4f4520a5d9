# The audit table refuses TRUNCATE too (PostgreSQL): UPDATE and DELETE are refused row by row since
# healing 0002, but TRUNCATE fires no row trigger, so it needs a statement-level one of its own.
# A maintenance that must empty the table (a test database's teardown) disables the user triggers of the table
# in its own transaction: ALTER TABLE healing_auditevent DISABLE TRIGGER USER, which only the table's owner may.

from django.db import migrations

TRIGGER = """
CREATE OR REPLACE FUNCTION healing_auditevent_no_truncate() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'healing_auditevent is append-only: % is not allowed', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER healing_auditevent_no_truncate
    BEFORE TRUNCATE ON healing_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION healing_auditevent_no_truncate();
"""

DROP_TRIGGER = """
DROP TRIGGER IF EXISTS healing_auditevent_no_truncate ON healing_auditevent;
DROP FUNCTION IF EXISTS healing_auditevent_no_truncate();
"""


def add_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(TRIGGER, params=None)


def drop_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_TRIGGER, params=None)


class Migration(migrations.Migration):
    dependencies = [("core", "0001_initial")]
    operations = [migrations.RunPython(add_trigger, drop_trigger)]

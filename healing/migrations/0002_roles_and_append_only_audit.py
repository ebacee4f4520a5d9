"""Two groups, operators (may act) and viewers (read-only), and an append-only audit table on PostgreSQL."""

from django.db import migrations

GROUPS = ["operators", "viewers"]

TRIGGER = """
CREATE OR REPLACE FUNCTION healing_auditevent_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'healing_auditevent is append-only: % is not allowed', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER healing_auditevent_append_only
    BEFORE UPDATE OR DELETE ON healing_auditevent
    FOR EACH ROW EXECUTE FUNCTION healing_auditevent_append_only();
"""

DROP_TRIGGER = """
DROP TRIGGER IF EXISTS healing_auditevent_append_only ON healing_auditevent;
DROP FUNCTION IF EXISTS healing_auditevent_append_only();
"""


def add_groups(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for name in GROUPS:
        Group.objects.get_or_create(name=name)


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=GROUPS).delete()


def add_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(TRIGGER, params=None)


def drop_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_TRIGGER, params=None)


class Migration(migrations.Migration):
    dependencies = [("healing", "0001_initial"), ("auth", "0012_alter_user_first_name_max_length")]
    operations = [
        migrations.RunPython(add_groups, remove_groups),
        migrations.RunPython(add_trigger, drop_trigger),
    ]

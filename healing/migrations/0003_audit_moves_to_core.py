# The audit trail now belongs to core (core/migrations/0001_initial.py): state only; the table and its
# append-only trigger stay.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0001_initial'),
        ('healing', '0002_roles_and_append_only_audit'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            # The tables stay where they are: only Django's idea of which app owns the model moves.
            state_operations=[
                migrations.DeleteModel(
                    name='AuditEvent',
                ),
            ],
        ),
    ]

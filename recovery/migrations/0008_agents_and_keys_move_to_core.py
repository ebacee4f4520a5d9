# Agents and API keys now belong to core (core/migrations/0001_initial.py): state only, no table changes.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0001_initial'),
        ('healing', '0003_audit_moves_to_core'),
        ('recovery', '0007_tasks_checkpoints_transactions'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            # The tables stay where they are: only Django's idea of which app owns the model moves.
            state_operations=[
                migrations.AlterField(
                    model_name='retryjob',
                    name='agent',
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='retry_jobs', to='core.agent'),
                ),
                migrations.AlterField(
                    model_name='transaction',
                    name='agent',
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='transactions', to='core.agent'),
                ),
                migrations.AlterField(
                    model_name='recoveryplan',
                    name='agent',
                    field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='core.agent'),
                ),
                migrations.RemoveField(
                    model_name='apikey',
                    name='agent',
                ),
                migrations.AlterField(
                    model_name='errorevent',
                    name='agent',
                    field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='core.agent'),
                ),
                migrations.AlterField(
                    model_name='breakertransition',
                    name='actor_agent',
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='core.agent'),
                ),
                migrations.AlterField(
                    model_name='fallbackinvocation',
                    name='agent',
                    field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='core.agent'),
                ),
                migrations.AlterField(
                    model_name='task',
                    name='agent',
                    field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='tasks', to='core.agent'),
                ),
                migrations.RemoveField(
                    model_name='apikey',
                    name='user',
                ),
                migrations.DeleteModel(
                    name='Agent',
                ),
                migrations.DeleteModel(
                    name='ApiKey',
                ),
            ],
        ),
    ]

# Agents, API keys and the audit trail move to core from recovery and healing: state only, no table changes.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

RENAMED = [("recovery", "agent"), ("recovery", "apikey"), ("healing", "auditevent")]


def rename_content_types(apps, schema_editor):
    # Permissions and admin log entries point at content types: moving them keeps both with the model.
    ContentType = apps.get_model("contenttypes", "ContentType")
    for app_label, model in RENAMED:
        ContentType.objects.filter(app_label=app_label, model=model).update(app_label="core")


def restore_content_types(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for app_label, model in RENAMED:
        ContentType.objects.filter(app_label="core", model=model).update(app_label=app_label)


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("contenttypes", "0002_remove_content_type_name"),
        ("recovery", "0007_tasks_checkpoints_transactions"),
        ("healing", "0002_roles_and_append_only_audit"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            # The tables stay where they are: only Django's idea of which app owns the model moves.
            state_operations=[
                migrations.CreateModel(
                    name="Agent",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("name", models.CharField(max_length=100, unique=True)),
                        ("description", models.TextField(blank=True)),
                        ("is_active", models.BooleanField(default=True)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("last_seen_at", models.DateTimeField(blank=True, null=True)),
                    ],
                    options={
                        "db_table": "recovery_agent",
                        "ordering": ["name"],
                    },
                ),
                migrations.CreateModel(
                    name="ApiKey",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("prefix", models.CharField(max_length=16, unique=True)),
                        ("key_hash", models.CharField(max_length=64)),
                        ("name", models.CharField(blank=True, max_length=100)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("last_used_at", models.DateTimeField(blank=True, null=True)),
                        ("revoked_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "agent",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="keys",
                                to="core.agent",
                            ),
                        ),
                        (
                            "user",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="api_keys",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "db_table": "recovery_apikey",
                        "ordering": ["-created_at"],
                        "constraints": [
                            models.CheckConstraint(
                                condition=models.Q(
                                    models.Q(("agent__isnull", False), ("user__isnull", True)),
                                    models.Q(("agent__isnull", True), ("user__isnull", False)),
                                    _connector="OR",
                                ),
                                name="apikey_one_owner",
                            )
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="AuditEvent",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("occurred_at", models.DateTimeField(auto_now_add=True, db_index=True)),
                        ("actor_label", models.CharField(max_length=200)),
                        ("action", models.CharField(db_index=True, max_length=100)),
                        ("target_type", models.CharField(db_index=True, max_length=100)),
                        ("target_id", models.CharField(db_index=True, max_length=100)),
                        ("target_repr", models.CharField(blank=True, max_length=300)),
                        ("reason", models.TextField(blank=True)),
                        ("before", models.JSONField(blank=True, null=True)),
                        ("after", models.JSONField(blank=True, null=True)),
                        (
                            "source",
                            models.CharField(
                                choices=[
                                    ("api", "Api"),
                                    ("admin", "Admin"),
                                    ("cli", "Cli"),
                                    ("system", "System"),
                                ],
                                max_length=10,
                            ),
                        ),
                        ("request_id", models.CharField(blank=True, max_length=64)),
                        (
                            "actor_agent",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to="core.agent",
                            ),
                        ),
                        (
                            "actor_user",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "db_table": "healing_auditevent",
                        "ordering": ["-occurred_at", "-id"],
                        "indexes": [
                            models.Index(
                                fields=["target_type", "target_id", "-occurred_at"],
                                name="healing_aud_target__acb94e_idx",
                            )
                        ],
                    },
                ),
            ],
        ),
        migrations.RunPython(rename_content_types, restore_content_types),
    ]

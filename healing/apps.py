from django.apps import AppConfig


class HealingConfig(AppConfig):
    """The human side (health checks, healing actions, escalations): built on recovery and core, never
    imported by them. Its audit trail moved to core.audit; the table and its trigger stayed."""

    name = "healing"
    verbose_name = "Humans in the loop"

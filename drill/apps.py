from django.apps import AppConfig


class DrillConfig(AppConfig):
    """The chaos drill: `manage.py drill` (drill/management/commands/drill.py)."""

    name = "drill"
    verbose_name = "Chaos drill"

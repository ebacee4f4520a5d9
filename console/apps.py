from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The operators' web console: a face above healing, recovery and core; nothing imports it."""

    name = "console"
    verbose_name = "Operator console"

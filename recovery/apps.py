from django.apps import AppConfig


class RecoveryConfig(AppConfig):
    name = "recovery"
    verbose_name = "Recovery"

    def ready(self) -> None:
        from recovery import schema, signals  # noqa: F401  (OpenAPI extension, rule cache invalidation)

from django.apps import AppConfig


class CoreConfig(AppConfig):
    """The floor every app stands on: access (agents, keys, roles), audit, the API kit and infrastructure."""

    name = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        # drf-spectacular registers an extension when its class is defined, so importing it registers it.
        from core.access import authentication, openapi
        from core.infra import caches

        self.openapi_extensions = [openapi.ApiKeyScheme]
        caches.register(authentication.forget)

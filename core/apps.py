from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class CoreConfig(AppConfig):
    """The floor every app stands on: access (agents, keys, roles), audit, the API kit and infrastructure."""

    name = "core"
    verbose_name = "Core"
    default = True  # what "core" in INSTALLED_APPS means: the module also holds the admin's config (below)

    def ready(self) -> None:
        # drf-spectacular registers an extension when its class is defined, so importing it registers it.
        from core.access import authentication, openapi
        from core.infra import caches

        self.openapi_extensions = [openapi.ApiKeyScheme]
        caches.register(authentication.forget)


class ReboundAdminConfig(admin_apps.AdminConfig):
    """Django's admin with Rebound's site (core/admin_site.py) as `admin.site`."""

    default = False  # named in INSTALLED_APPS by its path; "core" alone means CoreConfig
    default_site = "core.admin_site.ReboundAdminSite"

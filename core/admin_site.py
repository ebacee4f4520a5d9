"""Rebound's admin site: Django's, with its titles, the console as "View site", no app sidebar, and the audit
trail's newest changes on its front page. Installed as the default site by core.apps.ReboundAdminConfig, so
`admin.site` everywhere is this one and every app registers its admins on it as usual."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse

from core.access import roles
from core.audit.selectors import recent_changes

RECENT_CHANGES = 10


class ReboundAdminSite(admin.AdminSite):
    site_header = "Rebound"
    site_title = "Rebound admin"
    index_title = "Resilience control plane"
    # The admin's "View site" link, on every admin page, opens the operator console.
    site_url = "/console/"
    # No app list down the left of every page: at 1280 px its 280 px are the lists' columns (the breadcrumbs and
    # the front page lead to every model).
    enable_nav_sidebar = False

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        """The front page with the audit trail's newest changes: templates/admin/index.html shows them in place
        of Django's "Recent actions", which only knew the admin's own saves (not the API's, the console's or
        the CLI's)."""
        changes = recent_changes(RECENT_CHANGES) if roles.is_viewer(request.user) else []
        return super().index(request, {"recent_changes": changes, **(extra_context or {})})

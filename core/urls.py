"""The core app's routes: its API (the audit trail, who am I) and the liveness and readiness probes."""

from django.urls import URLPattern, URLResolver, path, re_path
from django.views.generic import RedirectView

from core.access import urls as access_urls
from core.audit import urls as audit_urls
from core.infra import probes

api_patterns: list[URLPattern | URLResolver] = [*audit_urls.urlpatterns, *access_urls.urlpatterns]

probe_patterns = [
    path("healthz", probes.live, name="healthz"),
    path("readyz", probes.ready, name="readyz"),
]

# The admin pages of agents, keys and audit events moved with their models (from recovery and healing to
# core): an operator's bookmark of the old address lands on the new one.
moved_admin_patterns = [
    re_path(
        rf"^admin/{old}/(?P<rest>.*)$",
        RedirectView.as_view(url=f"/admin/core/{new}/%(rest)s", permanent=True, query_string=True),
    )
    for old, new in [
        ("recovery/agent", "agent"),
        ("recovery/apikey", "apikey"),
        ("healing/auditevent", "auditevent"),
    ]
]

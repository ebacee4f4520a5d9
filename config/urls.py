"""The root URLconf: each app's routes are included, none defined here."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from core import urls as core_urls
from core.infra import scrape
from healing import urls as healing_urls
from recovery import urls as recovery_urls

# One namespace for the whole API (`v1:<name>`), whichever app a route lives in.
api_v1 = [*recovery_urls.urlpatterns, *healing_urls.urlpatterns, *core_urls.api_patterns]

urlpatterns = [
    # The API first: agents' calls are most of the traffic, and the resolver tries patterns in order.
    path("api/v1/", include((api_v1, "api"), namespace="v1")),
    *core_urls.probe_patterns,
    # The humans' front door is the console (which sends a signed-out visitor to the admin's login page).
    path("", RedirectView.as_view(url="/console/", permanent=False)),
    path("console/", include("console.urls")),
    *core_urls.moved_admin_patterns,
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    # django-prometheus's metrics, with the collectors read at scrape time (core/infra/scrape.py).
    path("metrics", scrape.export, name="prometheus-django-metrics"),
]

# What no view answers (no route, a bad Host, an uncaught exception): JSON in the error envelope under /api/,
# Django's pages elsewhere.
handler400 = "core.infra.error_handlers.bad_request"
handler403 = "core.infra.error_handlers.permission_denied"
handler404 = "core.infra.error_handlers.not_found"
handler500 = "core.infra.error_handlers.server_error"

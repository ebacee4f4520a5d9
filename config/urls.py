from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config import views
from healing import views as healing_views
from recovery import breaker_views
from recovery import views as recovery_views

api_v1 = [
    path("errors", recovery_views.ErrorsView.as_view(), name="errors"),
    path("errors/classify", recovery_views.ClassifyView.as_view(), name="errors-classify"),
    path("patterns", recovery_views.PatternListView.as_view(), name="patterns"),
    path("patterns/<int:pk>", recovery_views.PatternDetailView.as_view(), name="pattern-detail"),
    path("rules", recovery_views.RuleListView.as_view(), name="rules"),
    path("rules/<int:pk>", recovery_views.RuleDetailView.as_view(), name="rule-detail"),
    path("services", breaker_views.ServiceListView.as_view(), name="services"),
    path("services/<str:service>", breaker_views.ServiceDetailView.as_view(), name="service-detail"),
    path("outcomes", breaker_views.OutcomesView.as_view(), name="outcomes"),
    path("breakers", breaker_views.BreakerListView.as_view(), name="breakers"),
    path("breakers/events", breaker_views.BreakerEventsView.as_view(), name="breaker-events"),
    path("breakers/stream", breaker_views.BreakerStreamView.as_view(), name="breaker-stream"),
    path("breakers/<str:service>", breaker_views.BreakerDetailView.as_view(), name="breaker-detail"),
    path("breakers/<str:service>/permit", breaker_views.PermitView.as_view(), name="breaker-permit"),
    path("breakers/<str:service>/override", breaker_views.OverrideView.as_view(), name="breaker-override"),
    path("status", breaker_views.StatusView.as_view(), name="status"),
    path("audit-events", healing_views.AuditEventListView.as_view(), name="audit-events"),
    path("me", healing_views.MeView.as_view(), name="me"),
]

urlpatterns = [
    # The API first: agents' calls are most of the traffic, and the resolver tries patterns in order.
    path("api/v1/", include((api_v1, "api"), namespace="v1")),
    path("healthz", views.live, name="healthz"),
    path("readyz", views.ready, name="readyz"),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("", include("django_prometheus.urls")),
]

"""Services and their fleet-wide breakers: permits, outcomes, overrides, the transition feed."""

from django.urls import path

from recovery.breakers import api

urlpatterns = [
    path("services", api.ServiceListView.as_view(), name="services"),
    path("services/<str:service>", api.ServiceDetailView.as_view(), name="service-detail"),
    path("outcomes", api.OutcomesView.as_view(), name="outcomes"),
    path("breakers", api.BreakerListView.as_view(), name="breakers"),
    path("breakers/events", api.BreakerEventsView.as_view(), name="breaker-events"),
    path("breakers/stream", api.BreakerStreamView.as_view(), name="breaker-stream"),
    path("breakers/snapshot", api.BreakerSnapshotView.as_view(), name="breaker-snapshot"),
    path("breakers/<str:service>", api.BreakerDetailView.as_view(), name="breaker-detail"),
    path("breakers/<str:service>/permit", api.PermitView.as_view(), name="breaker-permit"),
    path("breakers/<str:service>/override", api.OverrideView.as_view(), name="breaker-override"),
]

"""Health checks: the checks, running one now, a heartbeat's ping, and a check's results."""

from django.urls import path

from healing.checks import api

urlpatterns = [
    path("health-checks", api.HealthCheckListView.as_view(), name="health-checks"),
    path("health-checks/<str:name>", api.HealthCheckDetailView.as_view(), name="health-check"),
    path("health-checks/<str:name>/run", api.RunView.as_view(), name="health-check-run"),
    path("health-checks/<str:name>/ping", api.PingView.as_view(), name="health-check-ping"),
    path("health-checks/<str:name>/results", api.ResultListView.as_view(), name="health-check-results"),
]

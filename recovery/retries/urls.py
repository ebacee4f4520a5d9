"""Server-side retry jobs."""

from django.urls import path

from recovery.retries import api

urlpatterns = [
    path("retries", api.RetryListView.as_view(), name="retries"),
    path("retries/<str:job_id>", api.RetryDetailView.as_view(), name="retry-detail"),
    path("retries/<str:job_id>/cancel", api.RetryCancelView.as_view(), name="retry-cancel"),
    path("retries/<str:job_id>/rerun", api.RetryRerunView.as_view(), name="retry-rerun"),
]

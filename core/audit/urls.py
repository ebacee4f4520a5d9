"""The audit trail, for humans."""

from django.urls import path

from core.audit import api

urlpatterns = [
    path("audit-events", api.AuditEventListView.as_view(), name="audit-events"),
]

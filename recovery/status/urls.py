"""The fleet at a glance."""

from django.urls import path

from recovery.status import api

urlpatterns = [
    path("status", api.StatusView.as_view(), name="status"),
]

"""Degradation levels: read, force and clear, and their history."""

from django.urls import path

from recovery.degradation import api

urlpatterns = [
    path("degradation", api.DegradationView.as_view(), name="degradation"),
    path("degradation/clear", api.ClearView.as_view(), name="degradation-clear"),
    path("degradation/events", api.EventListView.as_view(), name="degradation-events"),
]

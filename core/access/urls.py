"""Who the caller is."""

from django.urls import path

from core.access import api

urlpatterns = [
    path("me", api.MeView.as_view(), name="me"),
]

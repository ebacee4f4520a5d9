"""Notification channels and silences (under /api/v1/)."""

from django.urls import path

from healing.notifications import api

urlpatterns = [
    path("notification-channels", api.ChannelListView.as_view(), name="notification-channels"),
    path(
        "notification-channels/<str:channel_id>", api.ChannelDetailView.as_view(), name="notification-channel"
    ),
    path("silences", api.SilenceListView.as_view(), name="silences"),
    path("silences/<str:silence_id>", api.SilenceDetailView.as_view(), name="silence"),
]

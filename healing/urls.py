"""The healing app's API routes, room by room."""

from django.urls import URLPattern, URLResolver

from healing.actions import urls as action_urls
from healing.checks import urls as check_urls
from healing.escalations import urls as escalation_urls
from healing.notifications import urls as notification_urls

urlpatterns: list[URLPattern | URLResolver] = [
    *check_urls.urlpatterns,
    *action_urls.urlpatterns,
    *escalation_urls.urlpatterns,
    *notification_urls.urlpatterns,
]

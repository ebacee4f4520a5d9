"""The healing app's API routes, room by room."""

from django.urls import URLPattern, URLResolver

from healing.actions import urls as action_urls
from healing.checks import urls as check_urls

urlpatterns: list[URLPattern | URLResolver] = [
    *check_urls.urlpatterns,
    *action_urls.urlpatterns,
]

"""The project's routes plus plain Django views under /api/ (no DRF), for the edge's tests: what Django itself
answers there must be JSON too."""

from __future__ import annotations

from django.db import OperationalError
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.http import require_GET

from config import urls as project_urls


def _boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a bug")


def _database_gone(request: HttpRequest) -> HttpResponse:
    raise OperationalError("connection to server at 127.0.0.1, port 1 failed: Connection refused")


def _form(request: HttpRequest) -> HttpResponse:
    return HttpResponse("<p>ok</p>")


urlpatterns = [
    path("api/plain/boom", _boom),
    path("api/plain/database-gone", _database_gone),
    path("api/plain/form", require_GET(_form)),
    path("api/plain/post-form", _form),
    *project_urls.urlpatterns,
]
handler400 = project_urls.handler400
handler403 = project_urls.handler403
handler404 = project_urls.handler404
handler500 = project_urls.handler500

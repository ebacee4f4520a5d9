"""Django's own error answers (config/urls.py's handler400, 403, 404 and 500): JSON in the API's envelope
under /api/, Django's pages elsewhere (the admin).

These answer what no view did: a path no route matches, a Host header not in ALLOWED_HOSTS, a CSRF refusal,
an exception no view caught (one raised by a middleware included). An uncaught database outage is a 503
with Retry-After, as in every view (core/api/exceptions.py).
"""

from __future__ import annotations

import sys

from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.views import defaults

from core.api.errors import DATABASE_UNAVAILABLE
from core.api.exceptions import database_unavailable, domain_error_response, json_error
from core.infra.middleware import is_api


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponseBase:
    if is_api(request):
        if isinstance(exception, DisallowedHost):
            return json_error(400, "The Host header names no host this server answers for.", "bad_host")
        return json_error(400, "Bad request.", "bad_request")
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponseBase:
    if is_api(request):
        return json_error(403, str(exception) or "Forbidden.", "forbidden")
    return defaults.permission_denied(request, exception)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponseBase:
    if is_api(request):
        return json_error(404, f"No route for {request.method} {request.path}.", "not_found")
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponseBase:
    # Called while the exception is handled: sys.exc_info() says what it was.
    error = sys.exc_info()[1]
    if is_api(request):
        if isinstance(error, DATABASE_UNAVAILABLE):
            return domain_error_response(database_unavailable(error))
        return json_error(500, "The server failed to answer this request.", "server_error")
    response: HttpResponse = defaults.server_error(request)
    return response

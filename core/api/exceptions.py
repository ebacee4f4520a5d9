"""The one mapping from exceptions to HTTP answers.

Every error answer has the same shape: `detail` in words, a `code`, and `errors`, a list of `{field, message}`
with the field's path (`[2].status_code` for the third item of a batch), so that a caller can fix its request.
DRF's views answer through `exception_handler`; what Django answers itself under /api/ (no such route, a bad
Host, an uncaught exception, a CSRF refusal) gets the same envelope from `json_error` (core/infra/).

A database that cannot be reached (or refuses for a while: a lock, a failover) is no fault of the request: it
is a 503 with Retry-After, never a 500, so that a client retries instead of giving up.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any, TypedDict

from django.core.exceptions import RequestDataTooBig
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.api.errors import DATABASE_UNAVAILABLE, DomainError, ServiceUnavailable

log = logging.getLogger(__name__)

# The code of an error answer Django (not a view) gave, by status.
STATUS_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    411: "length_required",
    413: "body_too_large",
    415: "unsupported_media_type",
    500: "server_error",
    503: "unavailable",
}


class ErrorAnswer(TypedDict):
    """Every 4xx body (documented as core.api.schemas.ErrorBody)."""

    detail: str
    code: str
    errors: list[dict[str, str]]


def _flatten(detail: object, path: str = "") -> list[dict[str, str]]:
    if isinstance(detail, dict):
        out: list[dict[str, str]] = []
        for key, value in detail.items():
            if key == "non_field_errors":
                out += _flatten(value, path or "body")
            else:
                sub = f"[{key}]" if isinstance(key, int) or str(key).isdigit() else str(key)
                joined = f"{path}{sub}" if sub.startswith("[") else (f"{path}.{sub}" if path else sub)
                out += _flatten(value, joined)
        return out
    if isinstance(detail, list):
        if all(not isinstance(d, dict | list) for d in detail):
            return [{"field": path or "body", "message": str(d)} for d in detail]
        out = []
        for index, value in enumerate(detail):
            if value:
                out += _flatten(value, f"{path}[{index}]")
        return out
    return [{"field": path or "body", "message": str(detail)}]


def _body(detail: str, code: str, errors: list[dict[str, str]]) -> ErrorAnswer:
    return {"detail": detail, "code": code, "errors": errors}


def database_unavailable(error: Exception) -> ServiceUnavailable:
    """The answer to a database error that says nothing about the request (see DATABASE_UNAVAILABLE)."""
    log.warning("database unavailable: %s", str(error).strip()[:300])
    return ServiceUnavailable("The database is unavailable; try again shortly.")


def json_error(
    status_code: int,
    detail: str | None = None,
    code: str | None = None,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    """An error answer in the API's envelope, for what Django answers outside DRF's views."""
    body = _body(detail or _phrase(status_code), code or STATUS_CODES.get(status_code, "error"), errors or [])
    response = JsonResponse(body, status=status_code)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _phrase(status_code: int) -> str:
    try:
        return f"{HTTPStatus(status_code).phrase}."
    except ValueError:
        return "Error."


def domain_error_response(error: DomainError) -> JsonResponse:
    """A domain error raised outside DRF's views (a middleware), as DRF's handler would answer it."""
    return json_error(error.status_code, error.message, error.code, error.errors, _headers(error))


def _headers(error: DomainError) -> dict[str, str]:
    if isinstance(error, ServiceUnavailable):
        return {"Retry-After": str(error.retry_after_s)}
    return {}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DATABASE_UNAVAILABLE):
        exc = database_unavailable(exc)
    if isinstance(exc, DomainError):
        return Response(
            _body(exc.message, exc.code, exc.errors), status=exc.status_code, headers=_headers(exc)
        )
    if isinstance(exc, RequestDataTooBig):
        return Response(
            _body(
                "The request body is too large.", "body_too_large", [{"field": "body", "message": str(exc)}]
            ),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return Response(_body(f"Invalid input: {summary}", "invalid", errors), status=400)
    if isinstance(exc, exceptions.ParseError):
        return Response(
            _body(str(exc.detail), "malformed", [{"field": "body", "message": str(exc.detail)}]), status=400
        )
    if isinstance(exc, Http404):
        return Response(_body(str(exc) or "Not found.", "not_found", []), status=404)
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(exc, exceptions.APIException):
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else "error"
        response.data = _body(str(exc.detail), str(code), [])
    return response

"""The one mapping from exceptions to HTTP answers.

Every 4xx has the same shape: `detail` in words, a `code`, and `errors`, a list of `{field, message}` with
the field's path (`[2].status_code` for the third item of a batch), so that a caller can fix its request.
"""

from __future__ import annotations

from typing import Any, TypedDict

from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.api.errors import DomainError


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


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        return Response(_body(exc.message, exc.code, exc.errors), status=exc.status_code)
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

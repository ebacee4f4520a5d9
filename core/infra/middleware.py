from __future__ import annotations

import io
import re
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from django.conf import settings
from django.core.handlers.wsgi import LimitedStream
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from rest_framework.response import Response

from core.api.errors import DATABASE_UNAVAILABLE, BodyTooLarge, DomainError, InvalidInput, LengthRequired
from core.api.exceptions import database_unavailable, domain_error_response, json_error
from core.infra import request_ids

# A caller's id is reused only if it is short and plain, so it cannot inject anything into log lines.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# Saving a checkpoint carries an agent's whole state: its own, larger limit (CHECKPOINT_MAX_BODY_BYTES).
_CHECKPOINT_WRITE = re.compile(r"^/api/v1/tasks/[^/]+/checkpoints$")
# A query string of plain characters needs no strict decoding: nothing in it can be a NUL or bad UTF-8.
_PLAIN_QUERY = re.compile(r"[A-Za-z0-9._~=&+,:@/*!$'()\[\]-]*")
_READ_SIZE = 65_536
# The headers of an error answer that Django gave outside the API's views, kept when it is re-shaped.
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate", "Vary", "Cache-Control", "Location")


def is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/") or request.path == "/api"


def request_id_of(request: HttpRequest) -> str:
    """The caller's X-Request-ID if it is safe to log, else a new one (what RequestIdMiddleware does, from META
    directly: the hot lane, core/api/hotlane.py)."""
    given = request.META.get("HTTP_X_REQUEST_ID", "")
    return given if _SAFE_ID.match(given) else uuid.uuid4().hex


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get("X-Request-ID", "")
        request_id = given if _SAFE_ID.match(given) else uuid.uuid4().hex
        request_ids.set_request_id(request_id)
        try:
            response = self.get_response(request)
        finally:
            request_ids.set_request_id(None)
        response["X-Request-ID"] = request_id
        return response


class ApiEdgeMiddleware:
    """What a request under /api/ meets before any view, and what every answer there is made to look like
    (other paths, the admin's, pass untouched).

    Before: a body is refused from its Content-Length when over the limit, before a byte of it is read (413);
    a chunked body (no Content-Length) is read here, within the same limit, where the server in front has
    de-chunked it (gunicorn says so with `wsgi.input_terminated`), and refused with 411 where it has not; a NUL
    character or bytes that are not UTF-8 in the path or a query parameter are a 400 naming the parameter
    (PostgreSQL text cannot hold a NUL; Django would silently turn bad UTF-8 into U+FFFD).

    After: an API answer is JSON always. A database that cannot be reached, in a view outside DRF, is a 503
    with Retry-After (DRF's views get the same from core/api/exceptions.py), and any error answer that is not
    JSON (a CSRF refusal, a 405 of a plain view, a page Django rendered) gets the error envelope.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if not is_api(request):
            return self.get_response(request)
        try:
            _read_body_within_limit(request)
            _check_path_and_query(request)
        except DomainError as error:
            return domain_error_response(error)
        return _as_json(request, self.get_response(request))

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponseBase | None:
        if is_api(request) and isinstance(exception, DATABASE_UNAVAILABLE):
            return domain_error_response(database_unavailable(exception))
        return None


def _read_body_within_limit(request: HttpRequest) -> None:
    """Refuse a declared length over the limit; read a chunked body (within the limit) where it can be read."""
    limit = _body_limit(request)
    length = _content_length(request)
    if length > limit:
        raise BodyTooLarge(
            f"The request body is {length} bytes; the limit is {limit} bytes.",
            errors=[{"field": "body", "message": f"at most {limit} bytes"}],
        )
    if length or "chunked" not in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        return
    if not request.META.get("wsgi.input_terminated"):
        raise LengthRequired(
            "A body without Content-Length cannot be read here: send Content-Length.", field="body"
        )
    body = _read_at_most(request.META["wsgi.input"], limit)
    if body is None:
        raise BodyTooLarge(
            f"The request body is over the limit of {limit} bytes.",
            errors=[{"field": "body", "message": f"at most {limit} bytes"}],
        )
    # From here on the request is as if it had come with its Content-Length.
    request.META["CONTENT_LENGTH"] = str(len(body))
    request.META["wsgi.input"] = io.BytesIO(body)
    request._stream = LimitedStream(io.BytesIO(body), len(body))  # type: ignore[assignment]


def _body_limit(request: HttpRequest) -> int:
    if request.method == "POST" and _CHECKPOINT_WRITE.match(request.path):
        return int(settings.CHECKPOINT_MAX_BODY_BYTES)
    return int(settings.API_MAX_BODY_BYTES)


def _content_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _read_at_most(stream: Any, limit: int) -> bytes | None:
    """The whole stream, or None as soon as it is longer than `limit` (the rest is never read)."""
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(min(_READ_SIZE, limit + 1 - size))
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return None if size > limit else b"".join(parts)


def _check_path_and_query(request: HttpRequest) -> None:
    if "\x00" in request.path:
        raise InvalidInput("The path holds a NUL character.", field="path")
    query = request.META.get("QUERY_STRING", "")
    if not query or _PLAIN_QUERY.fullmatch(query):
        return
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        raw_name, raw_value = _unquote(name), _unquote(value)
        label = _label(raw_name)
        for raw in (raw_name, raw_value):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"The query parameter {label} is not valid UTF-8.", field=label) from None
            if "\x00" in text:
                raise InvalidInput(f"The query parameter {label} holds a NUL character.", field=label)


def _unquote(text: str) -> bytes:
    # WSGI hands the query over as latin-1: encoding it back gives the bytes the client sent.
    return unquote_to_bytes(text.replace("+", " ").encode("latin-1"))


def _label(raw_name: bytes) -> str:
    """A parameter's name as an answer may show it: printable ASCII as it is, anything else escaped."""
    text = raw_name.decode("utf-8", "backslashreplace")
    return "".join(c if " " < c < "\x7f" else c.encode("unicode_escape").decode("ascii") for c in text)


def _as_json(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    """Any error answer under /api/ that Django gave and that is not JSON, in the error envelope (keeping its
    status and the headers that tell the client what to do: Allow, Retry-After, WWW-Authenticate). DRF's own
    answers are left alone: they are JSON unless the client asked for the browsable API's HTML."""
    if (
        response.status_code < 400
        or isinstance(response, Response)
        or not is_api(request)
        or response.streaming
        or "json" in response.get("Content-Type", "")
    ):
        return response
    headers = {name: response[name] for name in _KEPT_HEADERS if response.has_header(name)}
    reshaped: JsonResponse = json_error(response.status_code, headers=headers)
    return reshaped

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from core.infra import request_ids

# A caller's id is reused only if it is short and plain, so it cannot inject anything into log lines.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# Saving a checkpoint carries an agent's whole state: its own, larger limit (CHECKPOINT_MAX_BODY_BYTES).
_CHECKPOINT_WRITE = re.compile(r"^/api/v1/tasks/[^/]+/checkpoints$")


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


class BodySizeLimitMiddleware:
    """Refuse an oversized API body from its Content-Length, before a byte of it is read or parsed."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.API_MAX_BODY_BYTES
        if request.method == "POST" and _CHECKPOINT_WRITE.match(request.path):
            limit = settings.CHECKPOINT_MAX_BODY_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if request.path.startswith("/api/") and length > limit:
            return JsonResponse(
                {
                    "detail": f"The request body is {length} bytes; the limit is {limit} bytes.",
                    "code": "body_too_large",
                    "errors": [{"field": "body", "message": f"at most {limit} bytes"}],
                },
                status=413,
            )
        return self.get_response(request)

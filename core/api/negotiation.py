from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.views import APIView


class JsonOnly(DefaultContentNegotiation):
    """For the agents' hot endpoints, which answer JSON only: no Accept header parsing on every call.
    Request bodies are still checked against their Content-Type (a non-JSON body is a 415)."""

    def select_renderer(
        self, request: Any, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


class JsonOnlyView(APIView):
    """Base of the agents' hot endpoints (errors, permits, outcomes): JSON answers, no negotiation."""

    renderer_classes = [JSONRenderer]
    content_negotiation_class = JsonOnly

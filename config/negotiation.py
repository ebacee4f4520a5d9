from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer


class JsonOnly(DefaultContentNegotiation):
    """For the agents' hot endpoints, which answer JSON only: no Accept header parsing on every call.
    Request bodies are still checked against their Content-Type (a non-JSON body is a 415)."""

    def select_renderer(
        self, request: Any, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type

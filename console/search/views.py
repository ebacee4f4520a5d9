"""Search (/console/search/?q=): services, patterns, tasks, escalations, runs and agents, grouped by kind."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from console.access import viewer_required
from console.search import selectors
from core.api.errors import InvalidInput

PAGE = "console/search/search.html"
RESULTS = "console/search/_results.html"


def parse_query(request: HttpRequest) -> str:
    """The box's text, trimmed; longer than anything it could name is refused, naming the field."""
    q = (request.GET.get("q") or "").strip()
    if len(q) > selectors.MAX_QUERY:
        raise InvalidInput(f"at most {selectors.MAX_QUERY} characters", field="q")
    return q


@viewer_required
def search(request: HttpRequest) -> HttpResponse:
    """The results page (through htmx, the results alone); a query too long answers 400 naming `q`."""
    template = RESULTS if request.htmx else PAGE  # type: ignore[attr-defined]
    context: dict[str, Any] = {"section": "search", "q": "", "groups": [], "error": ""}
    try:
        q = parse_query(request)
    except InvalidInput as error:
        context["error"] = f"{error.field}: {error.message}"
        return render(request, template, context, status=error.status_code)
    context.update(q=q, groups=selectors.search(q))
    return render(request, template, context)

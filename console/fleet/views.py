"""The fleet page (/console/) and the fragment its table polls for (/console/fleet/rows/)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from console import acting
from console.access import viewer_required
from console.fleet import rows, selectors
from core.api.errors import DomainError


@viewer_required
def fleet(request: HttpRequest) -> HttpResponse:
    """Every service, worst first, with the banner of everything forced; filters in the URL."""
    try:
        filters = selectors.parse_filters(request.GET)
    except DomainError as error:
        return acting.refused(request, error)
    return render(request, "console/fleet/fleet.html", {"section": "fleet", "q": "", **_table(filters)})


@viewer_required
def fleet_rows(request: HttpRequest) -> HttpResponse:
    """What the table polls for every 3 s: its tbody, with the banner and the summary out of band (htmx), so a
    tripped breaker shows without a reload and the operator's scroll and filters stay as they are."""
    try:
        filters = selectors.parse_filters(request.GET)
    except DomainError as error:
        return acting.refused(request, error)
    return render(request, "console/fleet/_refresh.html", _table(filters))


def _table(filters: selectors.Filters) -> dict[str, Any]:
    fleet = selectors.fleet(filters)
    links = _links()
    return {"fleet": fleet, "links": links, "rows_html": rows.render(fleet.rows, links)}


def _links() -> dict[str, str]:
    """The start of each row's links, reversed once per page: three reverse() per row are a tenth of the time
    of a page of 500 rows. Service names are slugs, so a name appended as it is makes a valid path."""
    service = reverse("console:service", args=["name"]).removesuffix("name/")
    pattern = reverse("admin:recovery_errorpattern_change", args=[0]).removesuffix("0/change/")
    return {"service": service, "pattern": pattern, "queue": reverse("console:queue")}

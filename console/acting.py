"""How every console action answers, whichever page it is on.

An action is a POST to its own URL. Through htmx it answers with the fragment to swap in (a row, a panel) and a
flash message; as a plain form post (no JavaScript) it redirects back to the page it came from (303). A refusal
(a domain error from the service, or a role the user lacks) answers with the error's own 4xx status naming the
field and the reason: through htmx, as a flash message swapped into `#flash` (django-htmx's retarget), else as
a small page with a link back. Nothing is half-done: the service either made its change and audit row, or not.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.template.loader import render_to_string
from django.utils.http import url_has_allowed_host_and_scheme
from django_htmx.http import reswap, retarget

from core.api.errors import DomainError, Forbidden

Action = Callable[..., HttpResponseBase]
FLASH = "#flash"


def action(allowed: Callable[[Any], bool], role: str) -> Callable[[Action], Action]:
    """Wrap a console action: POST only (405 otherwise), signed in, the role `allowed` checks (403 naming
    `role` otherwise), and every DomainError the service raises turned into its 4xx answer."""

    def wrap(view: Action) -> Action:
        @wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method != "POST":
                response = HttpResponse("Console actions are POSTs.", status=405, content_type="text/plain")
                response["Allow"] = "POST"
                return response
            try:
                if not allowed(request.user):
                    raise Forbidden(f"This action needs {role}; your role may only look.")
                return view(request, *args, **kwargs)
            except DomainError as error:
                return refused(request, error)

        return guarded

    return wrap


def back_to(request: HttpRequest, default: str) -> str:
    """Where a plain form post returns: its `next` field when it is a path on this site, else `default`."""
    target = request.POST.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return target
    return default


def done(request: HttpRequest, message: str, *, back: str, fragment: str | None = None) -> HttpResponse:
    """Success. Through htmx: `fragment` (rendered HTML) replaces the element the request targets, with the
    message as an out-of-band flash; a plain post redirects to `back` with the message."""
    if request.htmx:  # type: ignore[attr-defined]
        flash = render_to_string("console/_flash.html", {"flash": message, "level": "success", "oob": True})
        return HttpResponse((fragment or "") + flash)
    messages.success(request, message)
    return HttpResponseRedirect(back, status=303)


def refused(request: HttpRequest, error: DomainError) -> HttpResponse:
    """A refusal, with the error's status: the field and the reason, in the flash area or a page of its own."""
    text = f"{error.field}: {error.message}" if error.field else error.message
    if request.htmx:  # type: ignore[attr-defined]
        html = render_to_string("console/_flash.html", {"flash": text, "level": "error", "oob": False})
        response = HttpResponse(html, status=error.status_code)
        return reswap(retarget(response, FLASH), "innerHTML")  # type: ignore[return-value]
    html = render_to_string(
        "console/refused.html", {"error": text, "back": back_to(request, "/console/")}, request=request
    )
    return HttpResponse(html, status=error.status_code)

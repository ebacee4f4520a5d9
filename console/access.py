"""Who may see the console and who may act in it: the API's roles (core.access.roles), nothing of its own."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseBase

from core.access import roles
from core.audit.models import AuditEvent
from core.audit.services import Actor

View = Callable[..., HttpResponseBase]


def console_actor(request: HttpRequest) -> Actor:
    """The signed-in human, with the console as the audit trail's source."""
    return Actor(user=request.user, source=AuditEvent.Source.CONSOLE)


def viewer_required(view: View) -> View:
    """Every console page: signed-out visitors go to the login page and come back; agents' principals and users
    without a role get a 403 (operators, reviewers, viewers and staff see the pages)."""

    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not roles.is_viewer(request.user):
            raise PermissionDenied("The console needs an operator, a reviewer or a viewer.")
        return view(request, *args, **kwargs)

    return guarded


def abilities(user: Any) -> dict[str, bool]:
    """What the templates show: the buttons of a role the user does not have are not drawn at all."""
    return {"can_operate": roles.is_operator(user), "can_review": roles.is_reviewer(user)}


def context(request: HttpRequest) -> dict[str, Any]:
    """A context processor: the user's abilities on every console page."""
    if not request.path.startswith("/console/") or not request.user.is_authenticated:
        return {}
    return abilities(request.user)

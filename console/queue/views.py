"""The review queue (/console/queue/): open escalations and healing runs waiting for approval, acted on in place.

The page and its rows (refreshed every 5 s) are for every role that may look; the acts on an escalation are a
reviewer's (operators are reviewers too), the decisions on a run an operator's. Each act parses its form as the
API parses its body (the same pydantic shapes) and calls the same service function as the API view, with the
console as the audit source; through htmx it answers with the row as it is now."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from pydantic import TypeAdapter

from console import acting
from console.access import console_actor, viewer_required
from console.queue import selectors
from core.access import roles
from core.api.errors import DomainError, InvalidInput, NotFound
from core.api.validation import parse
from core.audit.services import Actor
from healing.actions import services as actions
from healing.actions.schemas import HealingApproveIn, HealingReasonIn
from healing.escalations import services as escalations
from healing.escalations.schemas import (
    EscalationAssignIn,
    EscalationCommentIn,
    EscalationResolveIn,
    EscalationSnoozeIn,
)

T = TypeVar("T")

_ASSIGN = TypeAdapter(EscalationAssignIn)
_COMMENT = TypeAdapter(EscalationCommentIn)
_SNOOZE = TypeAdapter(EscalationSnoozeIn)
_RESOLVE = TypeAdapter(EscalationResolveIn)
_APPROVE = TypeAdapter(HealingApproveIn)
_REJECT = TypeAdapter(HealingReasonIn)

# An id in a route fits a bigint or names nothing (the route's int converter takes any number of digits).
BIGINT_MAX = 2**63 - 1
SERVICE_CHARS = 100
# A snooze in minutes: at least one, at most the 30 days the service allows.
SNOOZE_MINUTES_MAX = 30 * 24 * 60
_WHOLE = re.compile(r"[0-9]{1,6}")


# --- the page ----------------------------------------------------------------------------------------------------


@viewer_required
def queue(request: HttpRequest) -> HttpResponseBase:
    try:
        filters = _filters(request)
        page = selectors.queue_page(filters, user=request.user)
    except DomainError as error:  # a level that is none: 400 naming `level`
        return acting.refused(request, error)
    context = {"section": "queue", "page": page, "filters": filters, "back": _queue_url(filters)}
    return render(request, "console/queue/page.html", context)


@viewer_required
def queue_rows(request: HttpRequest) -> HttpResponseBase:
    """The escalations' tbody alone, with the same filters: what the page's refresh swaps in every 5 s."""
    try:
        filters = _filters(request)
        rows, total = selectors.escalation_rows(filters, user=request.user)
    except DomainError as error:
        return acting.refused(request, error)
    context = {"rows": rows, "total": total, "more": max(0, total - len(rows)), "filters": filters}
    return render(request, "console/queue/_escalation_rows.html", {**context, "back": _queue_url(filters)})


def _filters(request: HttpRequest) -> selectors.Filters:
    """The filters of the query string: `level` (checked by the selector), `service`, `mine=1`."""
    service = request.GET.get("service", "").strip()
    if len(service) > SERVICE_CHARS:
        raise InvalidInput(f"A service's name has at most {SERVICE_CHARS} characters.", field="service")
    return selectors.Filters(
        level=request.GET.get("level", "").strip(),
        service=service,
        mine=request.GET.get("mine", "") in ("1", "true", "on"),
    )


def _queue_url(filters: selectors.Filters) -> str:
    query = filters.query()
    return reverse("console:queue") + (f"?{query}" if query else "")


# --- the acts on an escalation (reviewers) -------------------------------------------------------------------------


def _acknowledge(request: HttpRequest, escalation_id: int, actor: Actor) -> str:
    escalations.acknowledge(escalation_id=escalation_id, actor=actor)
    return f"Escalation #{escalation_id} acknowledged."


def _assign(request: HttpRequest, escalation_id: int, actor: Actor) -> str:
    # Blank means "to me"; the API names its field `user`, the form `username`.
    typed = request.POST.get("username", "").strip() or request.user.get_username()
    body = _parsed(_ASSIGN, {"user": typed}, rename={"user": "username"})
    try:
        escalations.assign(escalation_id=escalation_id, username=body.user, actor=actor)
    except InvalidInput as error:
        raise InvalidInput(error.message, field="username") from None
    return f"Escalation #{escalation_id} assigned to {body.user}."


def _comment(request: HttpRequest, escalation_id: int, actor: Actor) -> str:
    body = _parsed(_COMMENT, {"text": request.POST.get("text", "")})
    escalations.comment(escalation_id=escalation_id, text=body.text, actor=actor)
    return f"Comment added to escalation #{escalation_id}."


def _snooze(request: HttpRequest, escalation_id: int, actor: Actor) -> str:
    reason = request.POST.get("reason", "")
    minutes = request.POST.get("minutes", "").strip()
    if minutes:
        body = _parsed(
            _SNOOZE, {"until": _minutes_ahead(minutes), "reason": reason}, rename={"until": "minutes"}
        )
    else:
        until = request.POST.get("until", "").strip()
        if not until:  # the API requires `until`; the form offers minutes first
            raise InvalidInput("Say for how many minutes, or until when.", field="minutes")
        body = _parsed(_SNOOZE, {"until": until, "reason": reason})
    escalations.snooze(escalation_id=escalation_id, until=body.until, reason=body.reason, actor=actor)
    return f"Escalation #{escalation_id} snoozed until {body.until:%Y-%m-%d %H:%M} UTC."


def _minutes_ahead(text: str) -> datetime:
    if not _WHOLE.fullmatch(text) or not 1 <= int(text) <= SNOOZE_MINUTES_MAX:
        raise InvalidInput(f"A whole number of minutes from 1 to {SNOOZE_MINUTES_MAX}.", field="minutes")
    return timezone.now() + timedelta(minutes=int(text))


def _resolve(request: HttpRequest, escalation_id: int, actor: Actor) -> str:
    body = _parsed(_RESOLVE, {"resolution": request.POST.get("resolution", "")})
    escalations.resolve(escalation_id=escalation_id, resolution=body.resolution, actor=actor)
    return f"Escalation #{escalation_id} resolved."


ESCALATION_ACTS: dict[str, Callable[[HttpRequest, int, Actor], str]] = {
    "acknowledge": _acknowledge,
    "assign": _assign,
    "comment": _comment,
    "snooze": _snooze,
    "resolve": _resolve,
}


@acting.action(roles.is_reviewer, "a reviewer")
def escalation_action(request: HttpRequest, escalation_id: int, verb: str) -> HttpResponse:
    act = ESCALATION_ACTS.get(verb)
    if act is None:
        raise NotFound(f"An escalation has no act {verb[:40]!r}.", field="verb")
    message = act(request, _known(escalation_id, "escalation"), console_actor(request))
    back = acting.back_to(request, reverse("console:queue"))
    fragment = None
    if request.htmx:  # type: ignore[attr-defined]
        row = selectors.escalation_row(escalation_id, user=request.user)
        fragment = render_to_string(
            "console/queue/_escalation_row.html", {"e": row, "back": back}, request=request
        )
    return acting.done(request, message, back=back, fragment=fragment)


# --- the decisions on a healing run (operators) --------------------------------------------------------------------


@acting.action(roles.is_operator, "an operator")
def run_decision(request: HttpRequest, run_id: int, verb: str) -> HttpResponse:
    run_id = _known(run_id, "healing run")
    actor = console_actor(request)
    if verb == "approve":
        body = _parsed(_APPROVE, {"reason": request.POST.get("reason", "")})
        run = actions.approve(run_id=run_id, actor=actor, reason=body.reason)
        message = _approved(run_id, run.state)
    elif verb == "reject":
        reason = _parsed(_REJECT, {"reason": request.POST.get("reason", "")}).reason
        actions.reject(run_id=run_id, actor=actor, reason=reason)
        message = f"Run #{run_id} rejected."
    else:
        raise NotFound(f"A healing run has no decision {verb[:40]!r}.", field="verb")
    back = acting.back_to(request, reverse("console:queue"))
    fragment = None
    if request.htmx:  # type: ignore[attr-defined]
        row = selectors.run_row(run_id, user=request.user)
        fragment = render_to_string("console/queue/_run_row.html", {"r": row, "back": back}, request=request)
    return acting.done(request, message, back=back, fragment=fragment)


def _approved(run_id: int, state: str) -> str:
    if state == "pending_approval":
        return f"Run #{run_id}: your approval is counted; it waits for another operator."
    if state == "approved":
        return f"Run #{run_id} approved: it starts now."
    return f"Run #{run_id} approved: it is {state.replace('_', ' ')} now."


# --- parsing -------------------------------------------------------------------------------------------------------


def _known(pk: int, what: str) -> int:
    """An id from the route that a bigint holds; larger numbers name nothing (404), never a database error."""
    if pk > BIGINT_MAX:
        raise NotFound(f"No {what} {pk}.", field="id")
    return pk


def _parsed(adapter: TypeAdapter[T], data: dict[str, Any], rename: dict[str, str] | None = None) -> T:
    """The form read with the API's own shape; its first fault as a 400 naming the form's field (`rename` maps
    the API's name of a field to the form's, where they differ)."""
    try:
        return parse(adapter, data)
    except InvalidInput as error:
        first = error.errors[0] if error.errors else {"field": error.field or "", "message": error.message}
        field = (rename or {}).get(first["field"], first["field"])
        raise InvalidInput(first["message"], field=field) from None

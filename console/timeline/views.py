"""A service's page (/console/services/<name>/): its header, its timeline (polled every 5 s), and the operator's
controls: force the breaker, force or clear degradation, run a health check now, ask for a healing action.

Each control calls the service function the API's view calls, with the console as the audit source, after
parsing its form the way the API parses its body: bad input is a 400 naming the form's field, never a 500.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from console import acting
from console.access import console_actor, viewer_required
from console.timeline import selectors
from core.access import roles
from core.api.errors import DomainError, InvalidInput
from healing.actions import policy
from healing.actions import services as action_services
from healing.checks import services as check_services
from recovery.breakers import services as breaker_services
from recovery.degradation import services as degradation_services

MAX_MINUTES = 30 * 24 * 60  # as the degradation API's ttl_s: at most 30 days ahead
MAX_REASON = 2000  # as the API's reason fields
MAX_PARAMETERS = 10_000  # characters of a healing run's parameters as JSON


# --- pages -----------------------------------------------------------------------------------------------------


@viewer_required
def service(request: HttpRequest, name: str) -> HttpResponseBase:
    try:
        page = selectors.service_page(name)
    except DomainError as error:
        return _missing(request, error)
    return render(request, "console/timeline/service.html", {"section": "service", "page": page})


@viewer_required
def timeline(request: HttpRequest, name: str) -> HttpResponseBase:
    """Only the timeline (`<ol id="timeline">`): what the page polls."""
    try:
        found = selectors.known(name)
    except DomainError as error:
        return _missing(request, error)
    context = {"name": found.name, "entries": selectors.timeline(found)}
    return render(request, "console/timeline/_timeline.html", context)


def _missing(request: HttpRequest, error: DomainError) -> HttpResponse:
    """A name that is no slug (400) or no service (404): a page of its own, or through htmx the flash."""
    if request.htmx:  # type: ignore[attr-defined]
        return acting.refused(request, error)
    context = {"section": "service", "error": error.message, "status": error.status_code}
    return render(request, "console/timeline/missing.html", context, status=error.status_code)


# --- controls (operators) --------------------------------------------------------------------------------------


@acting.action(roles.is_operator, "an operator")
def breaker_override(request: HttpRequest, name: str) -> HttpResponse:
    """As POST /api/v1/breakers/<service>/override: recovery.breakers.services.set_override."""
    found = selectors.known(name)
    mode = _choice(request, "mode", selectors.OVERRIDE_MODES)
    reason = _reason(request)
    expires_at = _expiry(request)
    breaker_services.set_override(
        name=found.name, mode=mode, reason=reason, expires_at=expires_at, actor=console_actor(request)
    )
    return _answer(request, found.name, f"The breaker of {found.name} is now {mode}.")


@acting.action(roles.is_operator, "an operator")
def degradation(request: HttpRequest, name: str) -> HttpResponse:
    """As POST /api/v1/degradation (force) and /api/v1/degradation/clear, on the service's own scope. `mode`
    "clear" (or level "auto") clears; "force" (the default) forces `level`."""
    found = selectors.known(name)
    mode = _choice(request, "mode", ["force", "clear"], default="force")
    level = (request.POST.get("level") or "").strip()
    if mode == "clear" or level == "auto":
        reason = _reason(request)
        degradation_services.clear(scope=found.name, reason=reason, actor=console_actor(request))
        return _answer(request, found.name, f"{found.name} is back to its automatic degradation level.")
    level = _choice(request, "level", selectors.LEVELS)
    reason = _reason(request)
    expires_at = _expiry(request)
    degradation_services.force(
        scope=found.name, level=level, reason=reason, expires_at=expires_at, actor=console_actor(request)
    )
    return _answer(request, found.name, f"{found.name} is forced to {level}.")


@acting.action(roles.is_operator, "an operator")
def run_check(request: HttpRequest, name: str, check_id: int) -> HttpResponse:
    """As POST /api/v1/health/checks/<name>/run: healing.checks.services.run_now (recorded with source manual)."""
    check = selectors.check_of(selectors.known(name), check_id)
    recorded = check_services.run_now(check_id=check.pk, actor=console_actor(request))
    verdict = "passed" if recorded.result.ok else f"failed: {recorded.result.error or 'no detail'}"
    return _answer(request, name, f"{check.name} {verdict} (now {recorded.check.state}).")


@acting.action(roles.is_operator, "an operator")
def heal(request: HttpRequest, name: str) -> HttpResponse:
    """As POST /api/v1/healing/runs by an operator: healing.actions.services.request_run, trigger operator."""
    found = selectors.known(name)
    action = (request.POST.get("action") or "").strip()
    if not action:
        raise InvalidInput("Choose a healing action.", field="action")
    parameters = _parameters(request)
    reason = _reason(request)
    run, created = action_services.request_run(
        action=action,
        service=found.name,
        parameters=parameters,
        reason=reason,
        trigger=policy.OPERATOR,
        actor=console_actor(request),
    )
    told = "asked for" if created else "already open, joined"
    return _answer(request, found.name, f"Healing run #{run.pk} of {action} {told}: {run.state}.")


def _answer(request: HttpRequest, name: str, message: str) -> HttpResponse:
    """Through htmx the refreshed service section (header, controls and timeline); a plain post goes back."""
    fragment = None
    if request.htmx:  # type: ignore[attr-defined]
        context = {"page": selectors.service_page(name)}
        fragment = render_to_string("console/timeline/_service.html", context, request=request)
    back = acting.back_to(request, reverse("console:service", args=[name]))
    return acting.done(request, message, back=back, fragment=fragment)


# --- parsing the forms ------------------------------------------------------------------------------------------


def _choice(request: HttpRequest, field: str, allowed: list[str], default: str = "") -> str:
    value = (request.POST.get(field) or default).strip()
    if value not in allowed:
        raise InvalidInput(f"must be one of {', '.join(allowed)}", field=field)
    return value


def _reason(request: HttpRequest) -> str:
    """Operators say why (the services refuse a blank one too); as long as the API takes."""
    reason = (request.POST.get("reason") or "").strip()
    if not reason:
        raise InvalidInput("Operator actions require a reason.", field="reason")
    if len(reason) > MAX_REASON:
        raise InvalidInput(f"at most {MAX_REASON} characters", field="reason")
    return reason


def _expiry(request: HttpRequest) -> datetime | None:
    """When a forced state ends: `expires_in_minutes` from now, or `until` (a date and time; UTC unless it
    carries an offset), or never (None). Past or nonsensical values name their field."""
    minutes = (request.POST.get("expires_in_minutes") or "").strip()
    until = (request.POST.get("until") or "").strip()
    if minutes and until:
        raise InvalidInput("give expires_in_minutes or until, not both", field="until")
    if minutes:
        return timezone.now() + timedelta(minutes=_minutes(minutes))
    if until:
        return _until(until)
    return None


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 < value <= MAX_MINUTES:
        raise InvalidInput(f"a number of minutes above 0, at most {MAX_MINUTES}", field="expires_in_minutes")
    return value


def _until(text: str) -> datetime:
    try:
        moment = parse_datetime(text)
    except ValueError:
        moment = None
    if moment is None:
        raise InvalidInput("a date and time, e.g. 2030-01-31T12:00 (UTC)", field="until")
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, UTC)
    if moment <= timezone.now():
        raise InvalidInput("must be in the future", field="until")
    return moment


def _parameters(request: HttpRequest) -> dict[str, Any]:
    """The run's parameters: a JSON object (blank: none). The action's schema checks them in the service."""
    text = (request.POST.get("parameters") or "").strip()
    if not text:
        return {}
    if len(text) > MAX_PARAMETERS:
        raise InvalidInput(f"at most {MAX_PARAMETERS} characters of JSON", field="parameters")
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except (ValueError, RecursionError):
        raise InvalidInput('a JSON object, e.g. {"replicas": 3}', field="parameters") from None
    if not isinstance(value, dict):
        raise InvalidInput('a JSON object, e.g. {"replicas": 3}', field="parameters")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN and Infinity: Python reads them, JSON has no such number


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is beyond a number")  # 1e400 would be read as infinity
    return value

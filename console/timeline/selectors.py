"""A service's page, shaped for the console: its header (breaker, health, degradation, criticality), what an
operator's controls offer, and ONE timeline, newest first, of everything that happened to it.

Built only on the selectors of recovery, healing and core. Each kind of history is read once, bounded (the newest
PER_KIND), then merged and cut to LIMIT: the page's queries do not grow with the history's length.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.urls import reverse
from django.utils.http import urlencode

from core.api.errors import NotFound
from core.audit import selectors as audit_selectors
from core.audit.models import audit_label
from healing.actions import selectors as action_selectors
from healing.checks import selectors as check_selectors
from healing.checks.models import HealthCheck
from healing.escalations import selectors as escalation_selectors
from recovery.breakers import selectors as breaker_selectors
from recovery.breakers.models import BreakerTransition, Service
from recovery.degradation import selectors as degradation_selectors
from recovery.degradation.models import DegradationLevel
from recovery.errors import selectors as error_selectors

PER_KIND = 100  # the newest rows of each kind that are read
LIMIT = 200  # the entries the merged timeline keeps
SUMMARY_CHARS = 300  # longer text is cut here (the page truncates further with CSS, the full line in `title`)
FINGERPRINT_CHARS = 12

# What the controls offer, passed to the templates (views never import models).
OVERRIDE_MODES = [mode.value for mode in Service.Override]
LEVELS = [level.value for level in DegradationLevel]
LABELS = {
    "breaker": "Breaker",
    "health": "Health",
    "degradation": "Degradation",
    "escalation": "Escalation",
    "healing": "Healing run",
    "pattern": "Error pattern",
}

# An operator's override that changes the effective state also writes a transition with this reason prefix and
# within moments of the audit row: then the transition tells it, and the override's audit row is not repeated.
OVERRIDE_ACTION = "breaker.override"
OPERATOR_PREFIX = "operator: "
SAME_MOMENT = timedelta(seconds=5)


@dataclass(frozen=True)
class Entry:
    """One line of the timeline."""

    at: datetime
    kind: str  # a key of LABELS
    summary: str
    actor: str  # who did it, "" when nobody in particular
    link: str  # where to look closer, "" for nowhere
    state: str  # the state it led to (a pill's class), "" for none

    @property
    def label(self) -> str:
        return LABELS[self.kind]


@dataclass(frozen=True)
class CheckRow:
    id: int
    name: str
    kind: str
    state: str
    enabled: bool


@dataclass(frozen=True)
class ActionChoice:
    name: str
    risk: str
    description: str


@dataclass(frozen=True)
class Header:
    name: str
    criticality: str
    breaker_state: str  # what a permit finds: the override in force, else the automatic state
    automatic_state: str
    override: dict[str, Any] | None  # mode, reason, until while an operator's override is in force
    health: str  # the worst state of the enabled checks; "none" without any
    degradation: degradation_selectors.LevelView  # in force: the worse of the fleet's and the service's own
    skipped: bool  # whether agents should skip the service at that level
    forced: degradation_selectors.ScopeState  # the service's own scope: its forced level, by whom, until when


@dataclass(frozen=True)
class ServicePage:
    header: Header
    checks: list[CheckRow]
    actions: list[ActionChoice]
    timeline: list[Entry]
    modes: list[str]
    levels: list[str]

    @property
    def name(self) -> str:
        return self.header.name


def known(name: str) -> Service:
    """The service a route names: 400 (field `service`) for a name that is no slug, 404 for an unknown one."""
    return breaker_selectors.known_service(name)


def service_page(name: str) -> ServicePage:
    service = known(name)
    checks = list(check_selectors.checks(service=service.name))
    return ServicePage(
        header=_header(service, checks),
        checks=[CheckRow(c.pk, c.name, c.kind, c.state, c.enabled) for c in checks],
        actions=[ActionChoice(a.name, a.risk, a.description) for a in action_selectors.actions(enabled=True)],
        timeline=timeline(service),
        modes=OVERRIDE_MODES,
        levels=LEVELS,
    )


def check_of(service: Service, check_id: int) -> HealthCheck:
    """The health check `check_id` if it is one of the service's; a 404 otherwise (another service's check is
    not run from this page)."""
    found = check_selectors.checks(service=service.name).filter(pk=check_id).first()
    if found is None:
        raise NotFound(f"{service.name} has no health check {check_id}.", field="check_id")
    return found


# --- the header ------------------------------------------------------------------------------------------------


def _header(service: Service, checks: list[HealthCheck]) -> Header:
    breaker = breaker_selectors.breaker_view(service)
    level = degradation_selectors.for_service(service)
    return Header(
        name=service.name,
        criticality=service.criticality,
        breaker_state=breaker["state"],
        automatic_state=breaker["automatic_state"],
        override=breaker["override"],
        health=_health(checks),
        degradation=level.level,
        skipped=level.skip,
        forced=degradation_selectors.scope_state(service.name),
    )


_WORST = {"unhealthy": 2, "unknown": 1, "healthy": 0}


def _health(checks: list[HealthCheck]) -> str:
    """As GET /status counts it: the worst state among the enabled checks (an unhealthy one makes the service
    unhealthy, one without a verdict leaves it unknown)."""
    states = [c.state for c in checks if c.enabled]
    if not states:
        return "none"
    return max(states, key=lambda state: _WORST.get(state, 1))


# --- the timeline ----------------------------------------------------------------------------------------------


def timeline(service: Service) -> list[Entry]:
    """Everything that happened to the service, newest first: each kind bounded, then merged and cut."""
    entries = [
        *_breaker(service),
        *_health_flips(service),
        *_degradation(service),
        *_escalations(service),
        *_healing(service),
        *_patterns(service),
    ]
    entries.sort(key=lambda entry: entry.at, reverse=True)
    return entries[:LIMIT]


def _cut(text: str, chars: int = SUMMARY_CHARS) -> str:
    text = " ".join(text.split())  # one line
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _breaker(service: Service) -> list[Entry]:
    transitions = breaker_selectors.transitions_of(service, PER_KIND)
    entries = [
        Entry(
            t.created_at,
            "breaker",
            _cut(f"{t.from_state} → {t.to_state}: {t.reason}"),
            t.actor_label if t.actor != BreakerTransition.Actor.AUTOMATIC else "",
            "",
            t.to_state,
        )
        for t in transitions
    ]
    return entries + _overrides(service, transitions)


def _overrides(service: Service, transitions: list[BreakerTransition]) -> list[Entry]:
    """Operators' overrides that changed no state (forced closed while closed, back to auto): only the audit
    trail has them. Those that did change it are told by their transition already."""
    told = [(t.reason, t.created_at) for t in transitions if t.reason.startswith(OPERATOR_PREFIX)]
    events = audit_selectors.audit_events(
        action=OVERRIDE_ACTION, target_type=audit_label(Service), target_id=str(service.pk)
    )[:PER_KIND]
    entries = []
    for event in events:
        reason = OPERATOR_PREFIX + event.reason
        if any(r == reason and abs(at - event.occurred_at) <= SAME_MOMENT for r, at in told):
            continue
        after = event.after or {}
        mode = str(after.get("override", ""))
        until = f" until {after['override_until']}" if after.get("override_until") else ""
        entries.append(
            Entry(
                event.occurred_at,
                "breaker",
                _cut(f"override {mode}{until}: {event.reason}"),
                event.actor_label,
                "",
                mode,
            )
        )
    return entries


def _health_flips(service: Service) -> list[Entry]:
    entries = [
        Entry(
            t.created_at,
            "health",
            _cut(f"{t.health_check.name}: {t.from_state} → {t.to_state}: {t.reason}"),
            "",
            "",
            t.to_state,
        )
        for t in check_selectors.transitions_of_service(service.name, PER_KIND)
    ]
    entries.sort(key=lambda entry: entry.at, reverse=True)
    return entries[:PER_KIND]


def _degradation(service: Service) -> list[Entry]:
    return [
        Entry(
            e.created_at,
            "degradation",
            _cut(f"{e.from_level} → {e.to_level} ({_how(e.source)}): {e.reason}"),
            e.actor_user.get_username() if e.actor_user is not None else "",
            "",
            e.to_level,
        )
        for e in degradation_selectors.events(service.name).order_by("-created_at", "-id")[:PER_KIND]
    ]


def _how(source: str) -> str:
    return {"operator": "forced", "expiry": "forced level expired"}.get(source, source)


def _escalations(service: Service) -> list[Entry]:
    queue = f"{reverse('console:queue')}?{urlencode({'service': service.name})}"
    raised = escalation_selectors.queue(service=service.name).order_by("-first_seen_at", "-id")[:PER_KIND]
    resolved = escalation_selectors.queue(service=service.name, state="resolved").order_by(
        "-resolved_at", "-id"
    )[:PER_KIND]
    entries = [
        Entry(
            e.first_seen_at,
            "escalation",
            _cut(f"#{e.pk} raised ({e.level}): {e.title}"),
            e.raised_by,
            queue,
            e.level,
        )
        for e in raised
    ]
    entries += [
        Entry(
            e.resolved_at,
            "escalation",
            _cut(f"#{e.pk} resolved ({e.level}): {e.title}"),
            "auto-resolved" if e.auto_resolved else (e.resolved_by.get_username() if e.resolved_by else ""),
            queue,
            "resolved",
        )
        for e in resolved
        if e.resolved_at is not None
    ]
    return entries


def _healing(service: Service) -> list[Entry]:
    return [
        Entry(
            run.created_at,
            "healing",
            _cut(
                f"#{run.pk} {run.action.name}: {run.state}"
                + (f" ({run.state_reason})" if run.state_reason else "")
            ),
            run.requested_by,
            reverse("admin:healing_healingrun_change", args=[run.pk]),
            run.state,
        )
        for run in action_selectors.runs(service=service.name)[:PER_KIND]
    ]


def _patterns(service: Service) -> list[Entry]:
    found = error_selectors.patterns(service=service.name).order_by("-first_seen_at", "-id")[:PER_KIND]
    return [
        Entry(
            p.first_seen_at,
            "pattern",
            _cut(
                f"first seen {p.fingerprint[:FINGERPRINT_CHARS]} {p.error_class}: {p.message_template or p.type_name}"
            ),
            "",
            reverse("admin:recovery_errorpattern_change", args=[p.pk]),
            p.severity,
        )
        for p in found
    ]

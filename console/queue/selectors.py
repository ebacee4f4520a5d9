"""Reads of the review queue, shaped for its page: the escalations not resolved (by level, then oldest first) and
the healing runs waiting for approval, each as a small row object the templates show as they are.

Everything comes through the selectors of healing (escalations and actions): no model manager is used here, and
a page costs the same few queries whatever the number of rows (the users behind an escalation are joined, the
decisions on a run prefetched)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from healing.actions import policy
from healing.actions import selectors as actions
from healing.escalations import selectors as escalations
from healing.escalations.models import LEVELS, NOT_RESOLVED

# The queue shows at most this many escalations: beyond that the filters narrow it (the page says how many more).
LIMIT = 100
# A run's parameters as JSON are cut to this many characters in the cell (the whole text is in its title).
PARAMS_CHARS = 200
# What is behind an escalation (its `links`, as the API names them) and the admin page that shows each.
LINK_PAGES = {
    "pattern": "admin:recovery_errorpattern_change",
    "task": "admin:recovery_task_change",
    "transaction": "admin:recovery_transaction_change",
    "retry_job": "admin:recovery_retryjob_change",
    "healing_run": "admin:healing_healingrun_change",
    "breaker_transition": "admin:recovery_breakertransition_change",
    "plan": "admin:recovery_recoveryplan_change",
}


@dataclass(frozen=True)
class Filters:
    """The queue's filters as the page applies them (the view parses them from the query string)."""

    level: str = ""
    service: str = ""
    mine: bool = False

    def query(self) -> str:
        """The query string that applies them again (empty when none is set): the refresh and `next` use it."""
        pairs = [("level", self.level), ("service", self.service), ("mine", "1" if self.mine else "")]
        return urlencode([(name, value) for name, value in pairs if value])


@dataclass(frozen=True)
class Link:
    label: str
    href: str


@dataclass(frozen=True)
class EscalationRow:
    id: int
    level: str
    state: str
    title: str
    summary: str
    trigger: str
    service: str
    occurrences: int
    first_seen_at: datetime
    first_seen: str  # "3 h ago"
    last_seen_at: datetime
    last_seen: str
    assignee: str
    assigned_to_me: bool
    acknowledged_by: str
    snoozed_until: datetime | None
    resolved_by: str
    resolution: str
    raised_by: str
    recommended_action: str
    recommended_first: str  # the first line of the recommended action (the whole in its title)
    runbook: Link | None
    links: list[Link] = field(default_factory=list)

    @property
    def resolved(self) -> bool:
        return self.state == "resolved"


@dataclass(frozen=True)
class RunRow:
    id: int
    action: str
    service: str
    risk: str
    state: str
    state_reason: str
    reason: str
    requested_by: str
    requested_at: datetime
    requested: str  # "12 min ago"
    params: str  # the parameters as JSON, cut to PARAMS_CHARS
    params_full: str
    approvers: list[str]  # who approved so far, first first
    approvals_required: int
    approvals_counted: int  # the approvals that count (a high or critical run's requester does not)
    requester_excluded: bool  # high or critical: the approvers must be others than the requester
    approved_by_me: bool
    requested_by_me: bool
    expires_at: datetime | None
    expires: str  # "in 40 min", "overdue"

    @property
    def pending(self) -> bool:
        return self.state == "pending_approval"

    @property
    def waiting_for(self) -> int:
        return max(0, self.approvals_required - self.approvals_counted)

    @property
    def may_approve(self) -> bool:
        """Whether the viewing operator's approval would count: not given yet, and not the excluded requester."""
        return (
            self.pending
            and not self.approved_by_me
            and not (self.requester_excluded and self.requested_by_me)
        )


@dataclass(frozen=True)
class QueuePage:
    filters: Filters
    escalations: list[EscalationRow]
    total: int  # escalations not resolved that match the filters (at most LIMIT are in `escalations`)
    runs: list[RunRow]
    levels: list[str] = field(default_factory=lambda: list(LEVELS))

    @property
    def more(self) -> int:
        return max(0, self.total - len(self.escalations))


# --- the page ----------------------------------------------------------------------------------------------------


def queue_page(filters: Filters, *, user: Any) -> QueuePage:
    """The whole page: the escalations (a bad level is a 400 naming `level`) and the runs waiting for approval
    (of the filtered service, when one is)."""
    rows, total = escalation_rows(filters, user=user)
    return QueuePage(filters=filters, escalations=rows, total=total, runs=runs_awaiting(filters, user=user))


def escalation_rows(filters: Filters, *, user: Any) -> tuple[list[EscalationRow], int]:
    """The escalations not resolved that match, by level then oldest first (at most LIMIT), and how many match."""
    found = escalations.queue(
        level=filters.level or None,
        service=filters.service or None,
        mine=user if filters.mine else None,
    ).filter(state__in=NOT_RESOLVED)
    now = timezone.now()
    rows = [_escalation(row, user, now) for row in found[:LIMIT]]
    total = len(rows) if len(rows) < LIMIT else found.count()
    return rows, total


def escalation_row(escalation_id: int, *, user: Any) -> EscalationRow:
    """One escalation as its row (after an act: resolved ones too); NotFound for no such id."""
    return _escalation(escalations.get_escalation(escalation_id), user, timezone.now())


def runs_awaiting(filters: Filters, *, user: Any) -> list[RunRow]:
    now = timezone.now()
    return [_run(row, user, now) for row in actions.awaiting_approval(service=filters.service or None)]


def run_row(run_id: int, *, user: Any) -> RunRow:
    """One run as its row, whatever its state now (approved, rejected, still waiting); NotFound for no such id."""
    return _run(actions.run_with_decisions(run_id), user, timezone.now())


# --- shaping -----------------------------------------------------------------------------------------------------


def _escalation(row: Any, user: Any, now: datetime) -> EscalationRow:
    steps = (row.recommended_action or "").strip()
    return EscalationRow(
        id=row.pk,
        level=row.level,
        state=row.state,
        title=row.title,
        summary=row.summary,
        trigger=row.trigger,
        service=row.service,
        occurrences=row.occurrences,
        first_seen_at=row.first_seen_at,
        first_seen=ago(row.first_seen_at, now),
        last_seen_at=row.last_seen_at,
        last_seen=ago(row.last_seen_at, now),
        assignee=_name(row.assignee),
        assigned_to_me=row.assignee_id is not None and row.assignee_id == getattr(user, "pk", None),
        acknowledged_by=_name(row.acknowledged_by),
        snoozed_until=row.snoozed_until,
        resolved_by=_name(row.resolved_by),
        resolution=row.resolution,
        raised_by=row.raised_by,
        recommended_action=steps,
        recommended_first=steps.splitlines()[0] if steps else "",
        runbook=_page_link(row.runbook.name, "admin:healing_runbook_change", row.runbook_id)
        if row.runbook is not None
        else None,
        links=_links(row),
    )


def _links(row: Any) -> list[Link]:
    """The escalation's links (the API's `links`: what is behind it), each to the admin page that shows it."""
    found = []
    for name, page in LINK_PAGES.items():
        value = getattr(row, f"{name}_id")
        if value is not None:
            link = _page_link(f"{name.replace('_', ' ')} {value}", page, value)
            if link is not None:
                found.append(link)
    return found


def _page_link(label: str, page: str, pk: Any) -> Link | None:
    try:
        return Link(label, reverse(page, args=[pk]))
    except NoReverseMatch:  # an admin page not registered (a trimmed deployment): the label alone is no link
        return None


def _run(row: Any, user: Any, now: datetime) -> RunRow:
    decisions = list(row.approvals.all())  # prefetched: no query per run
    approvers = [d for d in decisions if d.decision == "approve"]
    counted = policy.counted_approvers({d.user_id for d in approvers}, row.risk, row.requested_by_user_id)
    params = json.dumps(row.parameters, ensure_ascii=False, sort_keys=True) if row.parameters else ""
    me = getattr(user, "pk", None)
    return RunRow(
        id=row.pk,
        action=row.action.name,
        service=row.service,
        risk=row.risk,
        state=row.state,
        state_reason=row.state_reason,
        reason=row.reason,
        requested_by=row.requested_by,
        requested_at=row.created_at,
        requested=ago(row.created_at, now),
        params=params if len(params) <= PARAMS_CHARS else params[: PARAMS_CHARS - 1] + "…",
        params_full=params,
        approvers=[_name(d.user) for d in approvers],
        approvals_required=row.approvals_required,
        approvals_counted=len(counted),
        requester_excluded=not policy.requester_may_approve(row.risk),
        approved_by_me=any(d.user_id == me for d in approvers),
        requested_by_me=me is not None and row.requested_by_user_id == me,
        expires_at=row.approval_deadline,
        expires=until(row.approval_deadline, now),
    )


def _name(user: Any) -> str:
    return user.get_username() if user is not None else ""


def ago(moment: datetime | None, now: datetime) -> str:
    """How long ago, in one short unit: "40 s ago", "12 min ago", "3 h ago", "2 d ago"."""
    if moment is None:
        return ""
    seconds = int((now - moment).total_seconds())
    return "just now" if seconds < 1 else f"{_span(seconds)} ago"


def until(moment: datetime | None, now: datetime) -> str:
    """How long until, in one short unit: "in 40 min"; "overdue" once past."""
    if moment is None:
        return ""
    seconds = int((moment - now).total_seconds())
    return "overdue" if seconds <= 0 else f"in {_span(seconds)}"


def _span(seconds: int) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"

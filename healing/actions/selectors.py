"""Reads of the healing catalog, its runs and holds: what the API, the admin and other rooms (remediation, the
MCP tools) look at. Writes live in healing.actions.services."""

from __future__ import annotations

import re
from datetime import datetime
from typing import TypeVar

from django.db.models import Model, Prefetch, QuerySet

from core.api.errors import InvalidInput, NotFound
from healing.actions import policy
from healing.actions.models import Approval, HealingAction, HealingHold, HealingRun, HealingRunTransition
from healing.checks import selectors as check_selectors

# An id in a URL: a whole number that fits a bigint (anything else is simply not found).
_ID = re.compile(r"[0-9]{1,18}")
M = TypeVar("M", bound=Model)


def _one(found: QuerySet[M], text: str | int, what: str) -> M:
    """The row of `found` with the id a URL gives: a 404 naming `id` for no such row, or for text that is no id."""
    row = None
    if isinstance(text, int) or _ID.fullmatch(text or ""):
        row = found.filter(pk=int(text)).first()
    if row is None:
        raise NotFound(f"No {what} {text}.", field="id")
    return row


# --- the catalog -------------------------------------------------------------------------------------------


def actions(*, kind: str | None = None, enabled: bool | None = None) -> QuerySet[HealingAction]:
    qs = HealingAction.objects.select_related("verify_check")
    if kind:
        qs = qs.filter(kind=kind)
    if enabled is not None:
        qs = qs.filter(enabled=enabled)
    return qs.order_by("name")


def action(name: str) -> HealingAction:
    found = HealingAction.objects.select_related("verify_check").filter(name=name).first()
    if found is None:
        raise NotFound(f"No healing action {name!r}.", field="action")
    return found


def health_check_id(name: str, field: str = "verify_check") -> int:
    """The id of the health check with this name (an action's verify_check is named, not numbered)."""
    try:
        return check_selectors.get_check(name).pk
    except NotFound:
        raise InvalidInput(f"No health check is named {name[:100]!r}.", field=field) from None


# --- runs --------------------------------------------------------------------------------------------------


def runs(
    *, state: str | None = None, action: str | None = None, service: str | None = None
) -> QuerySet[HealingRun]:
    """Runs newest first, with the filters the API offers."""
    qs = HealingRun.objects.select_related("action", "requested_by_user", "requested_by_agent")
    if state:
        qs = qs.filter(state=state)
    if action:
        qs = qs.filter(action__name=action)
    if service:
        qs = qs.filter(service=service)
    return qs.order_by("-created_at", "-id")


def run(run_id: int | str) -> HealingRun:
    return _one(runs(), run_id, "healing run")


def awaiting_approval(*, service: str | None = None) -> QuerySet[HealingRun]:
    """Runs pending approval, the longest waiting first, each with its decisions (and their users) prefetched:
    a page of them costs the same few queries however many there are (the console's review queue)."""
    return with_decisions(runs(state=HealingRun.State.PENDING_APPROVAL, service=service)).order_by(
        "created_at", "id"
    )


def run_with_decisions(run_id: int | str) -> HealingRun:
    """One run, whatever its state, with its decisions prefetched (a row of the review queue after an act)."""
    return _one(with_decisions(runs()), run_id, "healing run")


def with_decisions(found: QuerySet[HealingRun]) -> QuerySet[HealingRun]:
    """`found` with each run's decisions (oldest first, users joined) in `run.approvals.all()`."""
    decisions = Approval.objects.select_related("user").order_by("created_at", "id")
    return found.prefetch_related(Prefetch("approvals", queryset=decisions))


def approvals(run: HealingRun) -> list[Approval]:
    return list(run.approvals.select_related("user").order_by("created_at", "id"))


def transitions(run: HealingRun) -> list[HealingRunTransition]:
    return list(run.transitions.order_by("created_at", "id"))


def open_run(action_id: int, service: str) -> HealingRun | None:
    """The run of this action on this target that is not finished yet (at most one: a constraint says so)."""
    return (
        runs()
        .filter(action_id=action_id, service=service, state__in=HealingRun.OPEN_STATES)
        .order_by("-created_at")
        .first()
    )


def approvers(run_id: int) -> set[int]:
    """The distinct operators who approved the run."""
    rows = Approval.objects.filter(run_id=run_id, decision=Approval.Decision.APPROVE)
    return set(rows.values_list("user_id", flat=True))


def approvals_missing(run: HealingRun) -> int:
    """How many more operators must approve a run pending approval before it starts, counted as the services
    count them (policy.counted_approvers: a high or critical run's requester does not count); 0 for a run in
    any other state."""
    if run.state != HealingRun.State.PENDING_APPROVAL:
        return 0
    counted = policy.counted_approvers(approvers(run.pk), run.risk, run.requested_by_user_id)
    return max(0, run.approvals_required - len(counted))


def has_approved(run_id: int, user_id: int) -> bool:
    return Approval.objects.filter(
        run_id=run_id, user_id=user_id, decision=Approval.Decision.APPROVE
    ).exists()


def started_since(action_id: int, service: str, since: datetime) -> list[datetime]:
    """When the runs of this action on this target that started since `since` started, newest first."""
    found = (
        HealingRun.objects.filter(action_id=action_id, service=service, started_at__gte=since)
        .order_by("-started_at")
        .values_list("started_at", flat=True)
    )
    return [moment for moment in found if moment is not None]


def last_finished(action_id: int, service: str) -> HealingRun | None:
    """The latest run of this action on this target that acted and finished (its end starts the cooldown)."""
    return (
        HealingRun.objects.filter(
            action_id=action_id, service=service, started_at__isnull=False, finished_at__isnull=False
        )
        .order_by("-finished_at")
        .first()
    )


# --- holds -------------------------------------------------------------------------------------------------


def holds(*, open: bool | None = None, action: str | None = None) -> QuerySet[HealingHold]:
    """Holds newest first; `open`: only those in force (True) or cleared (False)."""
    qs = HealingHold.objects.select_related("action", "cleared_by")
    if open is not None:
        qs = qs.filter(cleared_at__isnull=open)
    if action:
        qs = qs.filter(action__name=action)
    return qs.order_by("-created_at", "-id")


def hold(hold_id: int | str) -> HealingHold:
    return _one(holds(), hold_id, "healing hold")


def open_hold(action_id: int, service: str) -> HealingHold | None:
    return HealingHold.objects.filter(action_id=action_id, service=service, cleared_at__isnull=True).first()


def last_cleared_at(action_id: int, service: str) -> datetime | None:
    """When the last hold of this action and target was cleared: failures before it are forgiven."""
    return (
        HealingHold.objects.filter(action_id=action_id, service=service, cleared_at__isnull=False)
        .order_by("-cleared_at")
        .values_list("cleared_at", flat=True)
        .first()
    )


def failed_verifications_since(action_id: int, service: str, since: datetime) -> int:
    return HealingRun.objects.filter(
        action_id=action_id,
        service=service,
        state=HealingRun.State.FAILED,
        state_reason__startswith=VERIFICATION_FAILED,
        finished_at__gte=since,
    ).count()


# The reasons a run failed that other code reads (the hold counts verification failures).
VERIFICATION_FAILED = "verification_failed"
WORKER_LOST = "worker_lost"

"""trigger_healing: ask for a run of a healing action on a service, under the approval policy every door shares
(healing/actions/policy.py). The same input, service and output as POST /api/v1/healing/runs
(healing/actions/api.py), and what the run waits for, in words."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, TypeAdapter

from core.api.validation import parse
from core.slugs import Slug
from healing.actions import policy, selectors, services
from healing.actions.models import HealingRun
from healing.actions.schemas import HealingRunDetailOut, HealingRunIn, Reason
from mcp_server import callers
from mcp_server.running import tool

_RUN_IN = TypeAdapter(HealingRunIn)
# The reasons a run is skipped (healing.actions.services._throttle), as the agent reads them.
THROTTLES = {"cooldown": "the cooldown", "hourly_limit": "the hourly limit"}


class TriggerHealingOut(BaseModel):
    created: bool = Field(
        description="true: a new run; false: a run of this action on this service was open already and is "
        "the answer (nothing new was asked for)."
    )
    run: HealingRunDetailOut = Field(description="The run, with its approvals and the history of its state.")
    waiting_for: str | None = Field(
        description="What the run waits for, in words: operators' approvals, or (skipped) the time from "
        "which a run may be asked for again. null: it runs now or is finished."
    )


@tool(title="Ask for a healing action", read_only=False, destructive=True, idempotent=False)
def trigger_healing(
    caller: callers.Caller,
    action: Annotated[Slug, Field(description="The healing action's name, e.g. reset_breaker.")],
    service: Annotated[Slug, Field(description="The target service.")],
    reason: Annotated[
        Reason, Field(description="Why the run is needed: kept on the run and in the audit trail.")
    ],
    parameters: Annotated[
        dict[str, Any] | None, Field(description="Checked against the action's parameters_schema.")
    ] = None,
) -> TriggerHealingOut:
    """Ask Rebound to repair a service with one of its healing actions (restart, reset a breaker, ...), under
    the fleet's approval policy: a low-risk action runs at once; medium and high wait for operators' approval;
    a critical one is refused to an agent. While a run of the action on the service is open, the answer is that
    run. Needs an agent's or an operator's key. The answer says what the run waits for."""
    callers.require_agent_or_operator(caller, "trigger_healing")
    given = {"action": action, "service": service, "reason": reason, "parameters": parameters}
    body = parse(_RUN_IN, {name: value for name, value in given.items() if value is not None})
    run, created = services.request_run(
        action=body.action,
        service=body.service,
        parameters=body.parameters,
        reason=body.reason,
        trigger=policy.AGENT if caller.agent is not None else policy.OPERATOR,
        actor=caller.actor,
    )
    run = selectors.run(run.pk)
    detail = HealingRunDetailOut.of_detail(run, selectors.approvals(run), selectors.transitions(run))
    return TriggerHealingOut(created=created, run=detail, waiting_for=_waiting_for(run))


def _waiting_for(run: HealingRun) -> str | None:
    if run.state == HealingRun.State.PENDING_APPROVAL:
        return _approvals(run)
    if run.state == HealingRun.State.SKIPPED and run.not_before is not None:
        # A skipped run is finished: it never starts; the agent asks again once the time has come.
        why = (
            " and ".join(words for name, words in THROTTLES.items() if name in run.state_reason) or "a limit"
        )
        return f"{why}: not before {run.not_before.isoformat()}; this run will not start, ask again then"
    return None


def _approvals(run: HealingRun) -> str:
    words = f"approval by {selectors.approvals_missing(run)} more operator(s)"
    if run.requested_by_user_id is not None and not policy.requester_may_approve(run.risk):
        words += " other than the requester"
    if selectors.open_hold(run.action_id, run.service) is not None:
        words += " (the action is on hold for this target until an operator clears the hold)"
    return words

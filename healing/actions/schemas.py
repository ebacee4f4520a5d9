"""The healing API's input and output shapes: actions, runs (with their approvals and history) and holds."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from django.db.models import Choices
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator

from core.api.schemas import Page
from core.slugs import Slug
from healing.actions.models import (
    Approval,
    HealingAction,
    HealingHold,
    HealingRun,
    HealingRunTransition,
    Risk,
)
from healing.checks.schemas import refuse_null
from recovery.calls.outbound import METHODS, redact_url


def _one_of(choices: type[Choices]) -> Any:
    """The model's choices as a Literal: validated and documented as if written out here, from one list."""
    return Literal[tuple(choices.values)]


RUN_STATES: tuple[str, ...] = tuple(HealingRun.State.values)
if TYPE_CHECKING:
    # To the type checker a choice is text.
    RiskName = str
    ActionKind = str
    RunState = str
    TriggerName = str
    Decision = str
else:
    RiskName = _one_of(Risk)
    ActionKind = _one_of(HealingAction.Kind)
    RunState = _one_of(HealingRun.State)
    TriggerName = _one_of(HealingRun.Trigger)
    Decision = _one_of(Approval.Decision)

Reason = Annotated[
    str, StringConstraints(min_length=1, max_length=2000, strip_whitespace=True, pattern=r"\S")
]
Description = Annotated[str, StringConstraints(max_length=5000)]
Url = Annotated[str, StringConstraints(min_length=1, max_length=2000, strip_whitespace=True)]
Cooldown = Annotated[int, Field(ge=0, le=7 * 86_400, description="Seconds after a run ends before the next.")]
PerHour = Annotated[int, Field(ge=1, le=3600, description="Runs per target service in any hour.")]
Timeout = Annotated[
    float, Field(ge=1, le=3600, allow_inf_nan=False, description="Seconds the action may take.")
]
VerifyWithin = Annotated[
    int, Field(ge=1, le=86_400, description="Seconds the verify check has to pass after the action.")
]
# What the API answers has exactly these fields (additionalProperties: false in the schema).
OUT = ConfigDict(extra="forbid")


def _method(value: Any) -> Any:
    if isinstance(value, str):
        value = value.upper()
        if value not in METHODS:
            raise ValueError(f"must be one of {', '.join(METHODS)}")
    return value


# --- Input -------------------------------------------------------------------------------------------------------


class HealingActionIn(BaseModel):
    """A new webhook action (operators; audited). The built-ins come with Rebound."""

    model_config = ConfigDict(extra="forbid")

    name: Slug
    kind: Literal["webhook"] = Field(default="webhook", description="Only webhooks are created.")
    description: Description = ""
    risk: RiskName = "medium"
    enabled: bool = True
    cooldown_s: Cooldown = 300
    max_runs_per_hour: PerHour = 6
    timeout_s: Timeout = 60.0
    parameters_schema: dict[str, Any] = Field(
        default_factory=dict,
        description="A JSON Schema (Draft 2020-12) for the runs' parameters; `pattern` runs on RE2, "
        "`patternProperties` and remote `$ref` are refused.",
    )
    verify_check: Slug | None = Field(default=None, description="The health check that verifies it, by name.")
    verify_within_s: VerifyWithin = 120
    url: Url = Field(description="The URL to call: its host must be in OUTBOUND_ALLOWED_HOSTS.")
    method: str = Field(default="POST", description=f"One of {', '.join(METHODS)}.")
    body_template: Any = Field(
        default=None,
        description="A JSON value whose strings may hold {{parameter}}, {{service}} and {{run_id}} placeholders.",
    )
    reason: Reason = Field(description="Why: kept in the audit trail.")

    _upper = field_validator("method", mode="before")(_method)


class HealingActionPatchIn(BaseModel):
    """A change to an action (operators; audited): only the fields sent change. `verify_check` and
    `body_template` may be null (none); a built-in takes no url, method or body_template."""

    model_config = ConfigDict(extra="forbid")

    description: Description | None = None
    risk: RiskName | None = None
    enabled: bool | None = None
    cooldown_s: Cooldown | None = None
    max_runs_per_hour: PerHour | None = None
    timeout_s: Timeout | None = None
    parameters_schema: dict[str, Any] | None = None
    verify_check: Slug | None = Field(default=None, description="A health check's name; null: none.")
    verify_within_s: VerifyWithin | None = None
    url: Url | None = None
    method: str | None = Field(default=None, description=f"One of {', '.join(METHODS)}.")
    body_template: Any = None
    reason: Reason = Field(description="Why: kept in the audit trail.")

    _upper = field_validator("method", mode="before")(_method)

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any, info: ValidationInfo) -> Any:
        # null means none for these two; the reason's own type refuses it.
        return value if info.field_name in ("verify_check", "body_template", "reason") else refuse_null(value)


class HealingRunIn(BaseModel):
    """Ask for a run of an action on a target service (agents and operators)."""

    model_config = ConfigDict(extra="forbid")

    action: Slug = Field(description="The action's name.")
    service: Slug = Field(description="The target service.")
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Checked against the action's parameters_schema."
    )
    reason: Reason = Field(description="Why the run is needed.")


class HealingApproveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, StringConstraints(max_length=2000, strip_whitespace=True)] = Field(
        default="", description="Optional."
    )


class HealingReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Reason = Field(description="Required: why. Kept on the run and in the audit trail.")


class HealingRunQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")  # page and page_size belong to the paginator
    state: RunState | None = Field(default=None, description="Only runs in this state.")
    action: Slug | None = Field(default=None, description="Only runs of this action.")
    service: Slug | None = Field(default=None, description="Only runs on this target service.")


class HealingHoldQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    open: bool | None = Field(default=None, description="Only holds in force (true) or cleared (false).")
    action: Slug | None = Field(default=None, description="Only holds of this action.")


# --- Output ------------------------------------------------------------------------------------------------------


class HealingActionOut(BaseModel):
    model_config = OUT

    name: str
    description: str
    kind: ActionKind
    builtin: str | None = Field(description="The built-in function it runs; null for a webhook.")
    risk: RiskName
    enabled: bool
    cooldown_s: int
    max_runs_per_hour: int
    timeout_s: float
    parameters_schema: dict[str, Any]
    verify_check: str | None = Field(description="The health check that verifies it, by name.")
    verify_within_s: int
    url: str | None = Field(description="Webhooks: the URL called (secret query values hidden).")
    method: str | None
    body_template: Any
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, action: HealingAction) -> HealingActionOut:
        webhook = action.kind == "webhook"
        return cls.model_construct(
            name=action.name,
            description=action.description,
            kind=action.kind,
            builtin=action.builtin or None,
            risk=action.risk,
            enabled=action.enabled,
            cooldown_s=action.cooldown_s,
            max_runs_per_hour=action.max_runs_per_hour,
            timeout_s=action.timeout_s,
            parameters_schema=action.parameters_schema,
            verify_check=action.verify_check.name if action.verify_check is not None else None,
            verify_within_s=action.verify_within_s,
            url=redact_url(action.url) if webhook and action.url else None,
            method=action.method if webhook else None,
            body_template=action.body_template if webhook else None,
            created_at=action.created_at,
            updated_at=action.updated_at,
        )


class HealingActionPage(Page[HealingActionOut]):
    """One page of healing actions, by name."""


class HealingApprovalOut(BaseModel):
    model_config = OUT
    who: str = Field(description="The operator's user name.")
    decision: Decision
    reason: str
    at: datetime

    @classmethod
    def of(cls, row: Approval) -> HealingApprovalOut:
        return cls.model_construct(
            who=row.user.get_username(), decision=row.decision, reason=row.reason, at=row.created_at
        )


class HealingTransitionOut(BaseModel):
    model_config = OUT
    from_state: RunState | None = Field(description="null for the run's first state.")
    to_state: RunState
    reason: str
    actor: str = Field(description="user:…, agent:…, rule:… or system.")
    at: datetime

    @classmethod
    def of(cls, row: HealingRunTransition) -> HealingTransitionOut:
        return cls.model_construct(
            from_state=row.from_state or None,
            to_state=row.to_state,
            reason=row.reason,
            actor=row.actor,
            at=row.created_at,
        )


class HealingRunOut(BaseModel):
    model_config = OUT

    id: int
    action: str
    service: str
    state: RunState
    risk: RiskName = Field(description="The action's risk when the run was asked for.")
    parameters: dict[str, Any]
    trigger: TriggerName
    requested_by: str = Field(description="user:…, agent:…, rule:…")
    reason: str = Field(description="Why the run was asked for.")
    state_reason: str | None = Field(
        description="Why the run is in its state: skipped (cooldown, hourly_limit), failed (the error, "
        "verification_failed, worker_lost), rejected, cancelled, expired."
    )
    approvals_required: int = Field(description="Distinct operators' approvals needed before it starts.")
    approval_deadline: datetime | None = Field(description="Pending approval: when it expires.")
    not_before: datetime | None = Field(description="Skipped: when a run may start again.")
    created_at: datetime
    started_at: datetime | None
    acted_at: datetime | None = Field(description="When the action itself finished.")
    verify_deadline: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    @staticmethod
    def fields_of(run: HealingRun) -> dict[str, Any]:
        return {
            "id": run.pk,
            "action": run.action.name,
            "service": run.service,
            "state": run.state,
            "risk": run.risk,
            "parameters": run.parameters,
            "trigger": run.trigger,
            "requested_by": run.requested_by,
            "reason": run.reason,
            "state_reason": run.state_reason or None,
            "approvals_required": run.approvals_required,
            "approval_deadline": run.approval_deadline,
            "not_before": run.not_before,
            "created_at": run.created_at,
            "started_at": run.started_at,
            "acted_at": run.acted_at,
            "verify_deadline": run.verify_deadline,
            "finished_at": run.finished_at,
            "updated_at": run.updated_at,
        }

    @classmethod
    def of(cls, run: HealingRun) -> HealingRunOut:
        return cls.model_construct(**cls.fields_of(run))


class HealingRunPage(Page[HealingRunOut]):
    """One page of healing runs, newest first."""


class HealingRunDetailOut(HealingRunOut):
    approvals: list[HealingApprovalOut] = Field(
        description="Every approval, rejection and cancellation, in order."
    )
    history: list[HealingTransitionOut] = Field(description="Every move of the run's state, in order.")
    output: dict[str, Any] = Field(description="What the action answered (secrets hidden).")

    @classmethod
    def of_detail(
        cls, run: HealingRun, approvals: list[Approval], history: list[HealingRunTransition]
    ) -> HealingRunDetailOut:
        return cls.model_construct(
            **cls.fields_of(run),
            approvals=[HealingApprovalOut.of(a) for a in approvals],
            history=[HealingTransitionOut.of(t) for t in history],
            output=run.output if isinstance(run.output, dict) else {"value": run.output},
        )


class HealingHoldOut(BaseModel):
    model_config = OUT
    id: int
    action: str
    service: str
    reason: str
    open: bool = Field(description="Whether the hold is in force (not cleared).")
    created_at: datetime
    cleared_at: datetime | None
    cleared_by: str | None
    cleared_reason: str | None

    @classmethod
    def of(cls, hold: HealingHold) -> HealingHoldOut:
        return cls.model_construct(
            id=hold.pk,
            action=hold.action.name,
            service=hold.service,
            reason=hold.reason,
            open=hold.cleared_at is None,
            created_at=hold.created_at,
            cleared_at=hold.cleared_at,
            cleared_by=hold.cleared_by.get_username() if hold.cleared_by else None,
            cleared_reason=hold.cleared_reason or None,
        )


class HealingHoldPage(Page[HealingHoldOut]):
    """One page of healing holds, newest first."""

"""The escalation API's input and output shapes: an agent's escalation in, the humans' acts on one (assign,
comment, snooze, resolve, reopen), the queue's filters, and an escalation out (with its events and deliveries
on the detail)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from django.db.models import Choices
from django.utils import timezone
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from core.api.schemas import Moment, Page
from healing.escalations.models import Escalation, EscalationEvent, Level, State, TriggerKind
from recovery.errors.schemas import Context, StoredText


def _one_of(choices: type[Choices]) -> Any:
    """The model's choices as a Literal: validated and documented as if written out here, from one list."""
    return Literal[tuple(choices.values)]


if TYPE_CHECKING:
    # To the type checker a choice is text.
    LevelName = str
    StateName = str
    TriggerName = str
    EventKind = str
else:
    LevelName = _one_of(Level)
    StateName = _one_of(State)
    TriggerName = _one_of(TriggerKind)
    EventKind = _one_of(EscalationEvent.Kind)
# A delivery's status (healing/notifications/models.Delivery.Status: the room above, not imported here).
DeliveryStatus = Literal["pending", "sent", "failed", "silenced"]

CONTEXT_MAX_BYTES = 16_384
TITLE_MAX = 200  # Escalation.title
DEDUP_KEY_MAX = (
    200  # an agent's own key; the stored one is namespaced by the agent (Escalation.dedup_key: 300)
)
USERNAME_MAX = 150  # django.contrib.auth's username
# What the API answers has exactly these fields (additionalProperties: false in the schema).
OUT = ConfigDict(extra="forbid")
IN = ConfigDict(extra="forbid")


def _small(value: dict[str, Any]) -> dict[str, Any]:
    size = len(json.dumps(value, ensure_ascii=False).encode())
    if size > CONTEXT_MAX_BYTES:
        raise ValueError(f"at most {CONTEXT_MAX_BYTES} bytes as JSON (this is {size})")
    return value


def _in_the_future(value: datetime) -> datetime:
    if value <= timezone.now():
        raise ValueError("must be in the future")
    return value


# Text with at least one character that is not white space.
Title = Annotated[
    str,
    StringConstraints(min_length=1, max_length=TITLE_MAX, strip_whitespace=True, pattern=r"\S"),
    StoredText,
    Field(description=f"What a human must look at, in one line (at most {TITLE_MAX} characters)."),
]
Summary = Annotated[
    str,
    StringConstraints(max_length=10_000),
    StoredText,
    Field(description="More words: what happened, what was tried."),
]
DedupKey = Annotated[
    str,
    StringConstraints(min_length=1, max_length=DEDUP_KEY_MAX, strip_whitespace=True, pattern=r"\S"),
    StoredText,
    Field(
        description=f"The agent's own key for this problem (at most {DEDUP_KEY_MAX} characters): while an "
        "escalation with it is not resolved, raising it again counts into that one. Namespaced by the agent "
        "(`agent:<name>:<key>`), so two agents never share one."
    ),
]
ServiceName = Annotated[
    str,
    StringConstraints(pattern=r"^(?:[a-z0-9][a-z0-9_.:-]{0,99})?$", max_length=100),
    Field(description="The service it concerns: a lower-case slug, or empty for none."),
]
EscalationContext = Annotated[Context, AfterValidator(_small)]
Username = Annotated[str, StringConstraints(min_length=1, max_length=USERNAME_MAX, strip_whitespace=True)]
Text = Annotated[
    str, StringConstraints(min_length=1, max_length=10_000, strip_whitespace=True, pattern=r"\S"), StoredText
]
OptionalText = Annotated[str, StringConstraints(max_length=2000, strip_whitespace=True), StoredText]


# --- Input -------------------------------------------------------------------------------------------------------


class EscalationIn(BaseModel):
    """An escalation an agent raises itself (trigger `agent`)."""

    model_config = IN

    level: LevelName = Field(description="info, warning, critical or emergency.")
    title: Title
    summary: Summary = ""
    dedup_key: DedupKey
    service: ServiceName = ""
    context: EscalationContext = Field(
        default_factory=dict,
        description=f"A JSON object that helps a human (at most {CONTEXT_MAX_BYTES} bytes as JSON).",
    )


class EscalationAssignIn(BaseModel):
    model_config = IN
    user: Username = Field(description="The user name of a reviewer or an operator.")


class EscalationCommentIn(BaseModel):
    model_config = IN
    text: Text = Field(description="The comment (at most 10,000 characters).")


class EscalationSnoozeIn(BaseModel):
    model_config = IN
    until: Annotated[Moment, AfterValidator(_in_the_future)] = Field(
        description="When it wakes (open again, unacknowledged, told again): in the future, at most 30 days ahead."
    )
    reason: Annotated[
        str,
        StringConstraints(min_length=1, max_length=2000, strip_whitespace=True, pattern=r"\S"),
        StoredText,
    ] = Field(description="Why it may wait.")


class EscalationResolveIn(BaseModel):
    model_config = IN
    resolution: Text = Field(description="What was done, or why nothing needs doing.")


class EscalationReopenIn(BaseModel):
    model_config = IN
    reason: OptionalText = Field(default="", description="Optional: why it is not over.")


class EscalationQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")  # page and page_size belong to the paginator
    state: StateName | None = Field(default=None, description="Only escalations in this state.")
    level: LevelName | None = Field(default=None, description="Only escalations at this level.")
    service: ServiceName | None = Field(default=None, description="Only escalations of this service.")
    assignee: Username | None = Field(
        default=None, description="Only escalations assigned to this user name."
    )
    mine: bool | None = Field(
        default=None, description="true: only escalations assigned to the caller (a reviewer or an operator)."
    )


# --- Output ------------------------------------------------------------------------------------------------------


class EscalationLinksOut(BaseModel):
    """The ids of what is behind the escalation, where its trigger knows them; null otherwise."""

    model_config = OUT
    pattern: int | None = Field(description="The error pattern (GET /api/v1/patterns/{id}).")
    task: int | None = Field(description="The agent's task (its record's id).")
    transaction: str | None = Field(description="The saga transaction (GET /api/v1/transactions/{id}).")
    retry_job: str | None = Field(description="The server-side retry job (GET /api/v1/retries/{id}).")
    healing_run: int | None = Field(description="The healing run (GET /api/v1/healing/runs/{id}).")
    breaker_transition: int | None = Field(description="The breaker's move (its history row).")
    plan: str | None = Field(description="The recovery plan the planner answered.")

    @classmethod
    def of(cls, escalation: Escalation) -> EscalationLinksOut:
        def text(value: Any) -> str | None:
            return str(value) if value is not None else None

        return cls.model_construct(
            pattern=escalation.pattern_id,
            task=escalation.task_id,
            transaction=text(escalation.transaction_id),
            retry_job=text(escalation.retry_job_id),
            healing_run=escalation.healing_run_id,
            breaker_transition=escalation.breaker_transition_id,
            plan=text(escalation.plan_id),
        )


def _username(user: Any) -> str | None:
    return user.get_username() if user is not None else None


class EscalationOut(BaseModel):
    model_config = OUT

    id: int
    level: LevelName
    state: StateName
    title: str
    summary: str
    trigger: TriggerName = Field(description="The rule that raised it, or `agent`.")
    dedup_key: str = Field(
        description="While not resolved, a repeat of this key counts into this escalation."
    )
    service: str
    links: EscalationLinksOut
    occurrences: int = Field(description="How many times it was raised (the first time and every repeat).")
    first_seen_at: datetime
    last_seen_at: datetime
    assignee: str | None = Field(description="The assigned user's name.")
    acknowledged_by: str | None = Field(description="The user name of who acknowledged it.")
    acknowledged_at: datetime | None
    snoozed_until: datetime | None = Field(description="Snoozed: when it wakes.")
    resolved_by: str | None = Field(description="The user name of who resolved it; null for the system.")
    resolved_at: datetime | None
    resolution: str | None = Field(description="Resolved: what was done, or the condition that cleared.")
    auto_resolved: bool = Field(description="Resolved by the system: the condition behind it cleared.")
    context: dict[str, Any]
    recommended_action: str = Field(description="The matching runbook's steps, one per line.")
    raised_by: str = Field(description="agent:…, trigger:… or system.")
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def fields_of(escalation: Escalation) -> dict[str, Any]:
        return {
            "id": escalation.pk,
            "level": escalation.level,
            "state": escalation.state,
            "title": escalation.title,
            "summary": escalation.summary,
            "trigger": escalation.trigger,
            "dedup_key": escalation.dedup_key,
            "service": escalation.service,
            "links": EscalationLinksOut.of(escalation),
            "occurrences": escalation.occurrences,
            "first_seen_at": escalation.first_seen_at,
            "last_seen_at": escalation.last_seen_at,
            "assignee": _username(escalation.assignee),
            "acknowledged_by": _username(escalation.acknowledged_by),
            "acknowledged_at": escalation.acknowledged_at,
            "snoozed_until": escalation.snoozed_until,
            "resolved_by": _username(escalation.resolved_by),
            "resolved_at": escalation.resolved_at,
            "resolution": escalation.resolution or None,
            "auto_resolved": escalation.auto_resolved,
            "context": escalation.context if isinstance(escalation.context, dict) else {},
            "recommended_action": escalation.recommended_action,
            "raised_by": escalation.raised_by,
            "created_at": escalation.created_at,
            "updated_at": escalation.updated_at,
        }

    @classmethod
    def of(cls, escalation: Escalation) -> EscalationOut:
        return cls.model_construct(**cls.fields_of(escalation))


class EscalationPage(Page[EscalationOut]):
    """One page of the queue: not resolved first, then by level (emergency first), then oldest first."""


class EscalationEventOut(BaseModel):
    """One change of an escalation."""

    model_config = OUT
    id: int
    kind: EventKind
    actor: str = Field(description="user:…, agent:…, trigger:…, policy or system.")
    from_level: LevelName | None = Field(description="level_changed: the level before.")
    to_level: LevelName | None = Field(description="level_changed: the level after.")
    text: str = Field(description="The comment, the reason, the resolution, or the channel notified.")
    data: dict[str, Any]
    at: datetime

    @classmethod
    def of(cls, row: EscalationEvent) -> EscalationEventOut:
        return cls.model_construct(
            id=row.pk,
            kind=row.kind,
            actor=row.actor,
            from_level=row.from_level or None,
            to_level=row.to_level or None,
            text=row.text,
            data=row.data if isinstance(row.data, dict) else {},
            at=row.created_at,
        )


class EscalationDeliveryOut(BaseModel):
    """One notice of the escalation to one notification channel, with its attempts."""

    model_config = OUT
    id: int
    channel: str = Field(description="The channel's name (kept when the channel is deleted).")
    level: LevelName = Field(description="The level it told.")
    status: DeliveryStatus = Field(
        description="pending (queued or waiting to retry), sent, failed (every attempt failed), or silenced "
        "(a silence was in force: recorded, not sent)."
    )
    attempts: int
    error: str = Field(description="The last attempt's error; empty when none failed.")
    sent_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, row: Any) -> EscalationDeliveryOut:
        # `row` is a healing.notifications Delivery, read through the reverse relation (the room above).
        return cls.model_construct(
            id=row.pk,
            channel=row.channel_name,
            level=row.level,
            status=row.status,
            attempts=row.attempts,
            error=row.error,
            sent_at=row.sent_at,
            created_at=row.created_at,
        )


class EscalationDetailOut(EscalationOut):
    events: list[EscalationEventOut] = Field(description="Every change, oldest first.")
    deliveries: list[EscalationDeliveryOut] = Field(
        description="Every notification sent or tried, newest first."
    )

    @classmethod
    def detail_fields_of(cls, escalation: Escalation) -> dict[str, Any]:
        # `deliveries`: the reverse relation of healing.notifications' Delivery (the room above this one).
        deliveries = escalation.deliveries.all()  # type: ignore[attr-defined]
        return {
            **cls.fields_of(escalation),
            "events": [EscalationEventOut.of(e) for e in escalation.events.all()],
            "deliveries": [EscalationDeliveryOut.of(d) for d in deliveries],
        }

    @classmethod
    def of_detail(cls, escalation: Escalation) -> EscalationDetailOut:
        return cls.model_construct(**cls.detail_fields_of(escalation))


class EscalationRaisedOut(EscalationDetailOut):
    """The escalation an agent raised, and what raising it did."""

    outcome: Literal["raised", "repeated", "reopened"] = Field(
        description="raised: a new escalation (201); repeated: counted into the one not resolved with this key "
        "(200); reopened: the key's escalation was resolved within ESCALATION_REOPEN_WINDOW_SECONDS and is open "
        "again (200)."
    )

    @classmethod
    def of_raised(cls, escalation: Escalation, outcome: str) -> EscalationRaisedOut:
        return cls.model_construct(**cls.detail_fields_of(escalation), outcome=outcome)

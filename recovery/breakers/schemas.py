"""The breakers' API shapes: outcomes in (one or a batch), permits, transitions, breakers and services out."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypedDict
from uuid import UUID

from django.db.models import Choices
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    RootModel,
    StringConstraints,
    Tag,
    TypeAdapter,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from core.api.errors import InvalidInput
from core.api.validation import parse
from core.infra.conf import rebound
from core.slugs import Slug
from recovery.breakers.models import BreakerTransition, Service
from recovery.errors.schemas import ErrorIn, with_error_defaults

# The ranges of the numbers the breakers' endpoints take (each in the OpenAPI schema as minimum and maximum).
MAX_DURATION_MS = 86_400_000  # a day
MAX_ID = 2**63 - 1  # transition ids are PostgreSQL bigints
MAX_WAIT_S = 3600  # a long-poll's `wait`; the server waits at most BREAKER_EVENTS_MAX_WAIT_SECONDS anyway
# The longest a breaker may be set to wait: the ceiling of MAX_RETRY_AFTER_S (30 days); a service refuses more
# than the MAX_RETRY_AFTER_S in force (recovery.breakers.services).
MAX_SETTING_WAIT_S = 30 * 86_400
MAX_MULTIPLIER = 100


# What the API answers has exactly these fields (additionalProperties: false in the schema): a body that grew a
# field the schema does not list fails the schema conformance checks instead of passing unnoticed.
OUT = ConfigDict(extra="forbid")


def _in_utc(value: datetime) -> datetime:
    """The same moment in UTC: PostgreSQL refuses an offset beyond ±15:59 that RFC 3339 allows (a 500 on
    save), and a moment whose UTC year is past 9999 cannot be kept."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the moment in UTC falls after the year 9999") from None


# When an operator's override or forced level ends: with an offset, kept in UTC.
Expiry = Annotated[AwareDatetime, AfterValidator(_in_utc)]


def encoded(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def too_large(value: Any) -> str | None:
    """Why a result may not be cached (it is over RESULT_CACHE_MAX_BYTES as JSON), or None."""
    size, limit = len(encoded(value)), int(rebound("RESULT_CACHE_MAX_BYTES"))
    return f"the result is {size} bytes as JSON; at most {limit} are cached" if size > limit else None


class OutcomeIn(BaseModel):
    """The result of one call. A failure may carry the error, classified and counted like POST /errors."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"service": "github-mcp", "operation": "search_issues", "success": True, "duration_ms": 182},
                {
                    "service": "openai",
                    "operation": "chat.completions",
                    "success": False,
                    "duration_ms": 950,
                    "error": {"type": "RateLimitError", "status_code": 429, "headers": {"Retry-After": "20"}},
                    "permit_id": "2f1c9a7e5b3d4c6e8a0b1c2d3e4f5a6b",
                },
            ]
        },
    )

    service: Slug
    operation: Annotated[str, StringConstraints(max_length=200)] = ""
    success: bool
    duration_ms: float | None = Field(
        default=None,
        ge=0,
        le=MAX_DURATION_MS,
        allow_inf_nan=False,
        description="How long the call took, in ms: 0 to 86,400,000 (a day).",
    )
    error: ErrorIn | None = None
    permit_id: Annotated[str, StringConstraints(max_length=64)] = ""
    plan_id: UUID | None = Field(
        default=None,
        description="The recovery plan this call followed: its result says whether the plan worked.",
    )
    cache_key: Annotated[str, StringConstraints(max_length=500)] = Field(
        default="",
        description="What the result belongs to (a query, a date); empty: the operation's last result.",
    )
    result: Any = Field(
        default=None,
        description="A success's result, kept for cache fallbacks (at most RESULT_CACHE_MAX_BYTES as JSON).",
    )

    @field_validator("result")
    @classmethod
    def _result_size(cls, value: Any) -> Any:
        if value is not None and (problem := too_large(value)) is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="before")
    @classmethod
    def _error_defaults(cls, data: Any) -> Any:
        return with_error_defaults(data)  # the error may leave out what the outcome already says

    @model_validator(mode="after")
    def _error_only_on_failure(self) -> OutcomeIn:
        if self.success and self.error is not None:
            raise ValueError("a successful outcome carries no error")
        if not self.success and "result" in self.model_fields_set:
            raise ValueError("only a successful outcome carries a result")
        if self.error is not None and self.error.service != self.service:
            raise ValueError("the error's service must be the outcome's service")
        return self


# The most successes one run item carries (the compact form): a body holds at most OUTCOMES_BATCH_MAX items.
MAX_RUN = 1_000_000
Duration = Annotated[float, Field(ge=0, le=MAX_DURATION_MS, allow_inf_nan=False)]


class OutcomeRunIn(BaseModel):
    """A run of plain successes of one service and operation, in the order they happened: the compact form an
    SDK sends for its guarded calls. It counts into the breaker exactly as the same successes sent one by one
    (one after another, where it stands among the batch's other outcomes of that service), at the cost of one."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "service": "github-mcp",
                    "operation": "search_issues",
                    "successes": 3,
                    "durations_ms": [182, 95.5, 240],
                },
                {"service": "openai", "successes": 1200},
            ]
        },
    )

    service: Slug
    operation: Annotated[str, StringConstraints(max_length=200)] = ""
    successes: int = Field(ge=1, le=MAX_RUN, description="How many calls succeeded in a row: 1 to 1,000,000.")
    durations_ms: list[Duration] | None = Field(
        default=None,
        description="Each call's duration in ms (0 to 86,400,000), in order, one per success: with the service's "
        "`slow_call_ms` set, the slow ones count as failures where they stand. Left out: none was slow.",
    )

    @field_validator("durations_ms")
    @classmethod
    def _one_duration_each(cls, value: list[float] | None, info: ValidationInfo) -> list[float] | None:
        successes = info.data.get("successes")
        if value is not None and isinstance(successes, int) and len(value) != successes:
            raise ValueError(f"{len(value)} durations for {successes} successes: one each, in order")
        return value


def _item_kind(value: Any) -> str:
    """A run carries `successes`; anything else is read as one outcome (and refused as one, naming its field)."""
    if isinstance(value, dict):
        return "run" if "successes" in value else "outcome"
    return "run" if isinstance(value, OutcomeRunIn) else "outcome"


# One item of a list or a batch: an outcome, or a run of successes.
OutcomeItem = Annotated[
    Annotated[OutcomeIn, Tag("outcome")] | Annotated[OutcomeRunIn, Tag("run")], Discriminator(_item_kind)
]


# A batch of the compact form, for the schema's examples (here and in the view's).
OUTCOMES_EXAMPLE: dict[str, Any] = {
    "outcomes": [
        {"service": "openai", "operation": "chat", "successes": 3, "durations_ms": [812, 640, 1210]},
        {
            "service": "openai",
            "operation": "chat",
            "success": False,
            "duration_ms": 30000,
            "error": {"type": "httpx.ReadTimeout", "message": "timed out"},
        },
        {"service": "openai", "operation": "chat", "successes": 2, "durations_ms": [700, 655]},
    ],
    "dropped": 0,
}


class OutcomesIn(BaseModel):
    """A batch: outcomes and runs of successes, in order, and what the sender dropped."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [OUTCOMES_EXAMPLE]})
    outcomes: list[OutcomeItem]
    dropped: int = Field(
        default=0,
        ge=0,
        le=2**53,
        description="Outcomes the sender dropped (its buffer was full) since its last accepted batch: counted in "
        "`sdk_outcomes_dropped_total`.",
    )


class OutcomesReportIn(RootModel[OutcomeIn | list[OutcomeItem] | OutcomesIn]):
    """One outcome; a list of outcomes and runs of successes; or `{"outcomes": [...], "dropped": n}`."""


class TransitionOut(BaseModel):
    """One change of a breaker's state, with why and the window it saw."""

    model_config = OUT

    id: int
    service: str
    from_state: str
    to_state: str
    reason: str
    actor: str = Field(description="automatic, agent, user or health_check")
    actor_name: str = Field(
        default="", description="The health check's name when `actor` is health_check; empty otherwise."
    )
    actor_label: str = Field(
        default="",
        description="Who made it, as text: automatic, user <name>, agent <name> or health check <name>.",
    )
    window: dict[str, Any] = Field(description="The window the breaker saw: calls, failures, rate, patterns.")
    at: str = Field(description="When, in ISO 8601.")

    @classmethod
    def of(cls, row: BreakerTransition) -> TransitionOut:
        return cls(
            id=row.pk,
            service=row.service.name,
            from_state=row.from_state,
            to_state=row.to_state,
            reason=row.reason,
            actor=row.actor,
            actor_name=row.actor_name,
            actor_label=row.actor_label,
            window=row.window,
            at=row.created_at.isoformat(),
        )


class OutcomeOut(BaseModel):
    model_config = OUT
    service: str
    state: str = Field(
        description="The breaker after this outcome: closed, open, half_open, the override in "
        "force, or unknown when the store is unreachable."
    )
    transition: TransitionOut | None = Field(
        description="The transition this outcome caused, if any (null too while its row waits to be written)."
    )
    error_class: str | None
    counted: bool = Field(description="Whether it counted into the breaker's window.")
    retry_after_capped: bool = Field(
        description="The error's Retry-After was over MAX_RETRY_AFTER_S (default a day): the breaker opened for "
        "that long only."
    )


class OutcomeBatchOut(BaseModel):
    model_config = OUT
    results: list[OutcomeOut]


class PermitOut(BaseModel):
    model_config = OUT
    service: str
    allowed: bool
    state: str
    retry_after_s: float | None
    permit_id: str | None
    reason: str


class OutcomeAnswer(RootModel[OutcomeOut | OutcomeBatchOut]):
    """The answer for one outcome, or `{"results": [...]}` for a list or a batch."""


# --- the hot paths' answers, as plain dicts (see recovery.errors.schemas: a model per item costs more than
# the work); each mirrors the model above that documents it.


class OutcomeOutDict(TypedDict):
    service: str
    state: str
    transition: dict[str, Any] | None
    error_class: str | None
    counted: bool
    retry_after_capped: bool


class OutcomeBatchOutDict(TypedDict):
    results: list[OutcomeOutDict]


class PermitOutDict(TypedDict):
    service: str
    allowed: bool
    state: str
    retry_after_s: float | None
    permit_id: str | None
    reason: str


# As in the errors room: the hot path builds these TypedDicts, the models document them, a test holds them equal.
HOT_PATH_MIRRORS: list[tuple[type, type[BaseModel]]] = [
    (OutcomeOutDict, OutcomeOut),
    (OutcomeBatchOutDict, OutcomeBatchOut),
    (PermitOutDict, PermitOut),
]


# --- breakers and services -------------------------------------------------------------------------------


def _choice(choices: type[Choices]) -> WithJsonSchema:
    """A Django choice as an inline enum: no shared component (`Kind` is a name several models use)."""
    return WithJsonSchema({"type": "string", "enum": list(choices.values)})


Kind = Annotated[Service.Kind, _choice(Service.Kind)]
Criticality = Annotated[Service.Criticality, _choice(Service.Criticality)]
WindowType = Annotated[Service.WindowType, _choice(Service.WindowType)]
Override = Annotated[Service.Override, _choice(Service.Override)]
STATES = "closed, open, half_open; unknown when the store is unreachable; or the override in force"


class BreakerWindowOut(BaseModel):
    """The breaker's window as its store holds it now."""

    model_config = OUT

    calls: int
    failures: int
    rate: float = Field(description="Failures in percent of the calls.")
    consecutive_failures: int
    trial_permits_in_use: int


class BreakerOverrideOut(BaseModel):
    model_config = OUT
    mode: Override
    reason: str
    until: datetime | None


class BreakerWhyOut(BaseModel):
    """The breaker's last transition: why it is in its state."""

    model_config = OUT

    reason: str
    from_state: str
    to_state: str
    at: datetime
    window: dict[str, Any] = Field(description="The window the breaker saw: calls, failures, rate, patterns.")
    actor: str = Field(default="automatic", description="automatic, agent, user or health_check")
    actor_name: str = Field(
        default="", description="The health check's name when `actor` is health_check; empty otherwise."
    )
    actor_label: str = Field(
        default="automatic",
        description="Who made it, as text: automatic, user <name>, agent <name> or health check <name>.",
    )


class BreakerSettingsOut(BaseModel):
    model_config = OUT
    failure_rate_threshold: float = Field(description="Percent.")
    window_type: WindowType
    window_size: int = Field(description="Calls, or seconds.")
    minimum_calls: int
    consecutive_failures: int = Field(description="0 turns this trigger off.")
    slow_call_ms: int = Field(description="Slower calls count as failures; 0: off.")
    wait_duration_s: float
    half_open_max_calls: int
    success_threshold: int
    wait_multiplier: float
    max_wait_s: float


class BreakerOut(BaseModel):
    """A breaker as operators and agents read it: state, the live window, the override, why, and settings."""

    model_config = OUT

    service: str
    criticality: Criticality
    state: str = Field(description=f"What a permit finds: {STATES}.")
    window: BreakerWindowOut | None = Field(description="null when the store is unreachable.")
    opened_at: datetime | None
    open_until: datetime | None
    automatic_state: str = Field(description="The state without the override.")
    override: BreakerOverrideOut | None
    why: BreakerWhyOut | None
    settings: BreakerSettingsOut


class BreakerList(RootModel[list[BreakerOut]]):
    """Every breaker, by service name."""


class BreakerSnapshotOut(BaseModel):
    model_config = OUT
    last_event_id: int = Field(description="The last transition before the states were read.")
    server_time: datetime
    breakers: list[BreakerOut]


class BreakerEventsOut(BaseModel):
    model_config = OUT
    events: list[TransitionOut]
    last_id: int = Field(description="The last transition's id: the next call's `after`.")


class EventsQuery(BaseModel):
    after: int = Field(
        default=0, ge=0, le=MAX_ID, description="Only transitions with a larger id (the last you saw)."
    )
    wait: float = Field(
        default=0,
        ge=0,
        le=MAX_WAIT_S,
        allow_inf_nan=False,
        description="Seconds to wait for the first one (long-poll), at most BREAKER_EVENTS_MAX_WAIT_SECONDS.",
    )


class ServiceOut(BaseModel):
    """Anything an agent calls, with its breaker settings and the operator's override."""

    model_config = ConfigDict(from_attributes=True, extra="forbid")

    name: str
    kind: Kind
    criticality: Criticality
    description: str
    failure_rate_threshold: float = Field(description="Percent.")
    window_type: WindowType
    window_size: int = Field(description="Calls, or seconds.")
    minimum_calls: int
    consecutive_failures: int = Field(description="0 turns this trigger off.")
    slow_call_ms: int = Field(description="Slower calls count as failures; 0: off.")
    wait_duration_s: float
    half_open_max_calls: int
    success_threshold: int
    wait_multiplier: float
    max_wait_s: float
    auto_registered: bool
    override: Override
    override_reason: str
    override_until: datetime | None
    created_at: datetime
    updated_at: datetime


class ServiceList(RootModel[list[ServiceOut]]):
    """Every service, by name."""


Count = Annotated[int, Field(ge=0, le=2_147_483_647)]
Positive = Annotated[int, Field(ge=1, le=2_147_483_647)]
WaitSeconds = Annotated[float, Field(ge=0.001, le=MAX_SETTING_WAIT_S, allow_inf_nan=False)]


def sent_or_left_out(schema: dict[str, Any]) -> None:
    """A PATCH field is left out or sent with a value, never null: the schema says so (no `null` among its
    types, no default)."""
    for prop in schema.get("properties", {}).values():
        options = prop.get("anyOf")
        if isinstance(options, list) and {"type": "null"} in options:
            kept = [option for option in prop.pop("anyOf") if option != {"type": "null"}]
            prop.update(kept[0] if len(kept) == 1 else {"anyOf": kept})
            prop.pop("default", None)


class ServicePatchIn(BaseModel):
    """A change to a service's criticality and breaker settings (operators): only the fields sent change."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, json_schema_extra=sent_or_left_out)

    kind: Kind | None = None
    criticality: Criticality | None = None
    description: str | None = None
    failure_rate_threshold: Annotated[float, Field(ge=1, le=100, allow_inf_nan=False)] | None = Field(
        default=None, description="Percent."
    )
    window_type: WindowType | None = None
    window_size: Annotated[int, Field(ge=1, le=10_000)] | None = Field(
        default=None, description="Calls, or seconds."
    )
    minimum_calls: Positive | None = None
    consecutive_failures: Count | None = Field(default=None, description="0 turns this trigger off.")
    slow_call_ms: Count | None = Field(default=None, description="Slower calls count as failures; 0: off.")
    wait_duration_s: WaitSeconds | None = Field(
        default=None, description="Seconds; at most MAX_RETRY_AFTER_S (default a day)."
    )
    half_open_max_calls: Positive | None = None
    success_threshold: Positive | None = None
    wait_multiplier: Annotated[float, Field(ge=1, le=MAX_MULTIPLIER, allow_inf_nan=False)] | None = None
    max_wait_s: WaitSeconds | None = Field(
        default=None,
        description="Seconds; at least wait_duration_s, at most MAX_RETRY_AFTER_S (default a day).",
    )
    reason: Annotated[str, StringConstraints(max_length=2000)] = Field(
        description="Why: operator actions require a reason, kept in the audit trail."
    )

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("leave the field out to keep it; it cannot be null")
        return value


class OverrideIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Annotated[str, StringConstraints(pattern=r"^(forced_open|forced_closed|disabled|auto)$")] = Field(
        description="forced_open, forced_closed, disabled (records, never blocks) or auto"
    )
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000, strip_whitespace=True)]
    expires_at: Expiry | None = Field(default=None, description="When the override ends (with an offset).")


# One Server-Sent Event of GET /breakers/stream, as OpenAPI 3.1 readers (schemathesis; OpenAPI 3.2's itemSchema)
# take a text/event-stream schema: the schema of each parsed event, not of the whole text.
SSE_TRANSITION_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {
            "type": "string",
            "pattern": "^[0-9]+$",
            "description": "The transition's id (Last-Event-ID).",
        },
        "event": {"type": "string", "enum": ["transition"]},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "The transition as JSON (TransitionOut).",
        },
        "retry": {
            "type": "integer",
            "description": "Sent once first: reconnect after this many milliseconds.",
        },
    },
}


# --- parsing a body of outcomes ------------------------------------------------------------------------------

_OUTCOME_ADAPTER = TypeAdapter(OutcomeIn)
_ITEMS_ADAPTER = TypeAdapter(list[OutcomeItem])
_BATCH_ADAPTER = TypeAdapter(OutcomesIn)
# The tag pydantic puts in an item's error path ("outcomes[3].run.successes"): the field is named without it.
_ITEM_TAG = re.compile(r"(\[\d+\])\.(?:run|outcome)(?=\.|$)")


@dataclass(frozen=True)
class ParsedOutcomes:
    items: list[OutcomeIn | OutcomeRunIn]
    is_batch: bool  # a list or {"outcomes": [...]}: answered with {"results": [...]}
    dropped: int = 0


def _parsed(adapter: TypeAdapter[Any], data: Any) -> Any:
    try:
        return parse(adapter, data)
    except InvalidInput as error:
        errors = [{**e, "field": _ITEM_TAG.sub(r"\1", e["field"])} for e in error.errors]
        raise InvalidInput(_ITEM_TAG.sub(r"\1", error.message), errors=errors) from None


def parse_outcome_body(data: object, limit: int) -> ParsedOutcomes:
    """POST /outcomes' body, validated whole: one outcome, a list of outcomes and runs, or `{"outcomes": [...]}`
    (with `dropped`); a list or a batch holds 1 to `limit` items (OUTCOMES_BATCH_MAX). Anything else is a 400
    naming the field."""
    if isinstance(data, list):
        items, dropped = _parsed(_ITEMS_ADAPTER, data), 0
    elif isinstance(data, dict) and "outcomes" in data:
        batch = _parsed(_BATCH_ADAPTER, data)
        items, dropped = batch.outcomes, batch.dropped
    elif isinstance(data, dict):
        return ParsedOutcomes([parse(_OUTCOME_ADAPTER, data)], is_batch=False)
    else:
        raise InvalidInput("The body must be an outcome object or a list of them.", field="body")
    if not items or len(items) > limit:
        raise InvalidInput(f"A batch holds 1 to {limit} outcomes; this one has {len(items)}.", field="body")
    return ParsedOutcomes(items, is_batch=True, dropped=dropped)

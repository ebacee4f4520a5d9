"""Input and output shapes of the error API, as pydantic models.

pydantic validates a batch of a thousand errors in about a millisecond, which keeps intake cheap;
drf-spectacular documents these models directly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, TypedDict

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StringConstraints,
    field_validator,
    model_validator,
)

from core.api.schemas import Moment
from core.infra.conf import rebound
from core.slugs import Slug
from recovery.errors import storable
from recovery.errors.classification import (
    PRIORITY_MAX,
    PRIORITY_MIN,
    ErrorReport,
    parse_retry_after,
    retry_after_from_headers,
)
from recovery.errors.taxonomy import ErrorClass, ErrorKind, Severity


def _storable_text(value: str) -> str:
    why = storable.text_problem(value)
    if why is not None:
        raise ValueError(why)
    return value


def _storable_context(value: dict[str, Any]) -> dict[str, Any]:
    why = storable.context_problem(value) if value else None
    if why is not None:
        raise ValueError(why)
    return value


def _convertible_moment(value: datetime) -> datetime:
    # A moment the database can be asked about: in UTC it must still be a date Python (and so the query) holds.
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range: between 0001-01-01 and 9999-12-31 in UTC") from None
    return value


# Text that PostgreSQL (and the buffered intake's drain) can keep: no NUL, no lone surrogate
# (recovery/errors/storable.py). Every string the error API stores is one of these.
StoredText = AfterValidator(_storable_text)


Name = Annotated[str, StringConstraints(max_length=200), StoredText]  # an operation, a type name, a search
Message = Annotated[str, StringConstraints(max_length=10_000), StoredText]


Context = Annotated[
    dict[str, Any],
    AfterValidator(_storable_context),
    Field(
        description=(
            "Anything that helps a human later, kept with the event as JSON: strings without NUL or lone "
            f"surrogates, finite numbers, integers from {storable.INT_MIN} to {storable.INT_MAX}, at most "
            f"{storable.CONTEXT_MAX_DEPTH} levels deep."
        )
    ),
]


class ErrorIn(BaseModel):
    """An error as an agent sends it. Any one of `type`, `status_code` or `message` is enough."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "service": "openai",
                    "operation": "chat.completions",
                    "type": "RateLimitError",
                    "message": "Rate limit reached for gpt-4o in organization org-123",
                    "status_code": 429,
                    "headers": {"Retry-After": "20"},
                    "context": {"task": "summarise-inbox"},
                }
            ],
            # What _something_to_classify holds, in the schema: at least one of them, and not empty.
            "anyOf": [
                {"required": ["type"], "properties": {"type": {"minLength": 1}}},
                {"required": ["status_code"], "properties": {"status_code": {"type": "integer"}}},
                {"required": ["message"], "properties": {"message": {"minLength": 1}}},
            ],
        },
    )

    service: Slug | None = Field(default=None, description="The service called: a lower-case slug.")
    operation: Name = ""
    type: Name = Field(default="", description="The exception type name, e.g. `httpx.ConnectTimeout`.")
    message: Message = ""
    status_code: int | None = Field(default=None, ge=100, le=599, description="The HTTP status, 100 to 599.")
    retry_after: float | str | None = Field(
        default=None,
        description=(
            "Seconds (a finite number; a negative one is read as 0), or an HTTP date. A wait longer than "
            "MAX_RETRY_AFTER_S (a day unless configured) is cut to it: `retry_after_s` in the answer says "
            "what is kept. Without it, a `Retry-After` in `headers` is read the same way."
        ),
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Response headers of the failed call (only `Retry-After` is read; none is stored).",
    )
    context: Context = Field(default_factory=dict)

    @field_validator("retry_after")
    @classmethod
    def _retry_after(cls, value: float | str | None) -> float | None:
        return parse_retry_after(value)

    @model_validator(mode="after")
    def _something_to_classify(self) -> ErrorIn:
        if not (self.type or self.status_code is not None or self.message):
            raise ValueError("give at least one of type, status_code or message")
        return self

    def to_report(self) -> ErrorReport:
        # Once validated, retry_after is seconds (a float) or None (_retry_after parses an HTTP date).
        given = self.retry_after
        retry_after = given if isinstance(given, float) else retry_after_from_headers(self.headers)
        if retry_after is not None:
            # No wait longer than the configured maximum is stored or handed to an agent (issue 11, item 1).
            retry_after = min(retry_after, float(rebound("MAX_RETRY_AFTER_S")))
        return ErrorReport(
            service=self.service or "",
            operation=self.operation,
            type_name=self.type,
            message=self.message,
            status_code=self.status_code,
            retry_after_s=retry_after,
            context=self.context,
            checked=True,
        )


def with_error_defaults(data: Any) -> Any:
    """An embedded `error` (of an outcome, of a plan request) may leave out the service and operation that the
    enclosing request already names: copy them in, for a model_validator(mode="before")."""
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        error = dict(data["error"])
        error.setdefault("service", data.get("service"))
        if data.get("operation"):
            error.setdefault("operation", data["operation"])
        data = {**data, "error": error}
    return data


class ErrorBatchIn(BaseModel):
    """A batch with the number of operations that succeeded, for a success rate in the summary."""

    model_config = ConfigDict(extra="forbid")
    errors: list[ErrorIn] = Field(
        min_length=1, description="1 to ERRORS_BATCH_MAX (1000 unless configured) errors."
    )
    successes: int = Field(
        default=0, ge=0, le=1_000_000_000, description="Operations that succeeded: 0 to 1,000,000,000."
    )
    operation: Name = ""


class ErrorReportIn(RootModel[ErrorIn | Annotated[list[ErrorIn], Field(min_length=1)] | ErrorBatchIn]):
    """One error, a list of them, or a batch with the number of operations that succeeded."""


class PatternRef(BaseModel):
    id: int | None = Field(
        description="null while a new pattern's first reports are queued (buffered intake)"
    )
    total_count: int


class RuleRef(BaseModel):
    id: int | None
    name: str
    priority: int


class ErrorOut(BaseModel):
    error_class: ErrorClass
    severity: Severity
    kind: ErrorKind
    retryable: bool
    counts_toward_breaker: bool
    needs_human: bool
    retry_after_s: float | None
    fingerprint: str
    pattern: PatternRef | None = None


class ClassifyOut(ErrorOut):
    matched_rule: RuleRef | None
    why: list[str]


class BatchSummary(BaseModel):
    total: int
    successes: int
    success_rate: float
    by_class: dict[str, int]
    by_severity: dict[str, int]
    retryable: int
    needs_human: int
    critical: list[int] = Field(description="Indexes of the errors whose severity is critical or fatal.")


class BatchOut(BaseModel):
    results: list[ErrorOut]
    summary: BatchSummary


class ErrorAnswer(RootModel[ErrorOut | BatchOut]):
    """The answer for one error, or for a list or a batch: each error's answer and a summary."""


# --- the answers of the intake, built as plain dicts on the hot path ------------------------------------
# POST /errors answers up to ERRORS_BATCH_MAX items per request: building a pydantic model per item
# (model_construct and model_dump, ~10 µs each) would cost more than the classification. The answers are
# built as these TypedDicts instead, which mirror ErrorOut and BatchOut field for field (checked below);
# the models document them.


class PatternRefDict(TypedDict):
    id: int | None
    total_count: int


class ErrorOutDict(TypedDict):
    error_class: str
    severity: str
    kind: str
    retryable: bool
    counts_toward_breaker: bool
    needs_human: bool
    retry_after_s: float | None
    fingerprint: str
    pattern: PatternRefDict | None


class BatchSummaryDict(TypedDict):
    total: int
    successes: int
    success_rate: float
    by_class: dict[str, int]
    by_severity: dict[str, int]
    retryable: int
    needs_human: int
    critical: list[int]


class BatchOutDict(TypedDict):
    results: list[ErrorOutDict]
    summary: BatchSummaryDict


# The hot path's answers are built as these TypedDicts (a model per item costs ~10 µs); the models above
# document them in the schema. A test holds each pair field for field: HOT_PATH_MIRRORS.
HOT_PATH_MIRRORS: list[tuple[type, type[BaseModel]]] = [
    (PatternRefDict, PatternRef),
    (ErrorOutDict, ErrorOut),
    (BatchSummaryDict, BatchSummary),
    (BatchOutDict, BatchOut),
]


# --- patterns --------------------------------------------------------------------------------------------


class PatternFilter(BaseModel):
    """The query of GET /patterns (`page` and `page_size` belong to the paginator)."""

    model_config = ConfigDict(extra="ignore")

    error_class: ErrorClass | None = None
    severity: Severity | None = None
    service: Slug | None = None
    since: Annotated[Moment, AfterValidator(_convertible_moment)] | None = Field(
        default=None,
        description="Only patterns seen since then (ISO 8601, between 0001-01-01 and 9999-12-31 in UTC).",
    )
    search: Name | None = Field(
        default=None, description="In the message template or the type name (case-insensitive)."
    )


class PatternOut(BaseModel):
    """Errors grouped by fingerprint, with their counts over the last 5 and 60 minutes."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    fingerprint: str
    service: str
    operation: str
    error_class: ErrorClass
    severity: Severity
    kind: ErrorKind
    type_name: str
    message_template: str
    sample_message: str
    first_seen_at: datetime
    last_seen_at: datetime
    total_count: int
    recent_5m: int
    recent_60m: int


# --- classification rules --------------------------------------------------------------------------------

RuleName = Annotated[str, StringConstraints(min_length=1, max_length=100), StoredText]
Description = Message
TypeNames = Annotated[
    list[Name],
    Field(
        max_length=100,
        description='Up to 100 exception type names, e.g. ["TimeoutError", "ConnectTimeout"].',
    ),
]
StatusBound = Annotated[int, Field(ge=0, le=32767, description="An HTTP status bound, 0 to 32767.")]
Priority = Annotated[
    int,
    Field(
        ge=PRIORITY_MIN,
        le=PRIORITY_MAX,
        description="Lower numbers are tried first: -1,000,000 to 1,000,000 (built-in rules use 100 to 999).",
    ),
]
MessageRegex = Annotated[
    str,
    StringConstraints(max_length=500),
    StoredText,
    Field(
        description=(
            "Searched case-insensitively, with RE2 (linear time): no backreferences or lookarounds "
            "(a pattern RE2 cannot take is refused with 400)."
        )
    ),
]
ServiceName = Annotated[str, StringConstraints(max_length=100), StoredText]
Reason = Annotated[
    str,
    # At least one character that is not white space: the schema says what the API refuses.
    StringConstraints(min_length=1, max_length=2000, pattern=r"\S"),
    StoredText,
    Field(description="Why: operator actions require a reason, kept in the audit trail."),
]


class RuleOut(BaseModel):
    """One rule of the classifier. Every criterion that is set must match; the lowest priority wins."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    enabled: bool
    priority: int = Field(description="Lower numbers are tried first.")
    type_names: list[str]
    status_min: int | None
    status_max: int | None
    message_regex: str = Field(description="Searched case-insensitively.")
    service: str = Field(description="Only errors of this service; empty: any.")
    error_class: ErrorClass
    severity: Severity
    kind: ErrorKind
    retryable: bool
    counts_toward_breaker: bool
    needs_human: bool
    builtin: bool
    created_at: datetime
    updated_at: datetime


class RuleList(RootModel[list[RuleOut]]):
    """Every classification rule, in priority order."""


class RuleIn(BaseModel):
    """A new rule (operators). Unknown keys, such as the read-only `id` or `builtin`, are ignored."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    name: RuleName
    description: Description = ""
    enabled: bool = True
    priority: Priority = 500
    type_names: TypeNames = Field(default_factory=list)
    status_min: StatusBound | None = None
    status_max: StatusBound | None = None
    message_regex: MessageRegex = ""
    service: ServiceName = ""
    error_class: ErrorClass
    severity: Severity
    kind: ErrorKind = ErrorKind.UNKNOWN
    retryable: bool
    counts_toward_breaker: bool
    needs_human: bool = False
    reason: Reason


class RulePatchIn(BaseModel):
    """A change to a rule (operators): only the fields sent change; `reason` is required."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    name: RuleName | None = None
    description: Description | None = None
    enabled: bool | None = None
    priority: Priority | None = None
    type_names: TypeNames | None = None
    status_min: StatusBound | None = None
    status_max: StatusBound | None = None
    message_regex: MessageRegex | None = None
    service: ServiceName | None = None
    error_class: ErrorClass | None = None
    severity: Severity | None = None
    kind: ErrorKind | None = None
    retryable: bool | None = None
    counts_toward_breaker: bool | None = None
    needs_human: bool | None = None
    reason: Reason


class ReasonIn(BaseModel):
    reason: Reason

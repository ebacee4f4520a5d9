"""Input and output shapes of the error API, as pydantic models.

pydantic validates a batch of a thousand errors in about a millisecond, which keeps intake cheap;
drf-spectacular documents these models directly.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from recovery.classification import ErrorReport, parse_retry_after, retry_after_from_headers
from recovery.taxonomy import ErrorClass, ErrorKind, Severity

SLUG = r"^[a-z0-9][a-z0-9_.:-]{0,99}$"
Slug = Annotated[str, StringConstraints(pattern=SLUG, max_length=100)]


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
            ]
        },
    )

    service: Slug | None = Field(default=None, description="The service called: a lower-case slug.")
    operation: Annotated[str, StringConstraints(max_length=200)] = ""
    type: Annotated[str, StringConstraints(max_length=200)] = Field(
        default="", description="The exception type name, e.g. `httpx.ConnectTimeout`."
    )
    message: Annotated[str, StringConstraints(max_length=10_000)] = ""
    status_code: int | None = Field(default=None, ge=100, le=599)
    retry_after: float | str | None = Field(default=None, description="Seconds, or an HTTP date.")
    headers: dict[str, str] = Field(default_factory=dict, description="Response headers of the failed call.")
    context: dict[str, Any] = Field(default_factory=dict)

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
        retry_after = self.retry_after
        if retry_after is None:
            retry_after = retry_after_from_headers(self.headers)
        return ErrorReport(
            service=self.service or "",
            operation=self.operation,
            type_name=self.type,
            message=self.message,
            status_code=self.status_code,
            retry_after_s=retry_after,  # type: ignore[arg-type]
            context=self.context,
        )


class ErrorBatchIn(BaseModel):
    """A batch with the number of operations that succeeded, for a success rate in the summary."""

    model_config = ConfigDict(extra="forbid")
    errors: list[ErrorIn]
    successes: int = Field(default=0, ge=0)
    operation: Annotated[str, StringConstraints(max_length=200)] = ""


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
    duration_ms: float | None = Field(default=None, ge=0)
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
        from recovery.fallbacks import too_large

        if value is not None and (problem := too_large(value)) is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="before")
    @classmethod
    def _error_defaults(cls, data: Any) -> Any:
        # The error may leave out what the outcome already says.
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            error = dict(data["error"])
            error.setdefault("service", data.get("service"))
            if data.get("operation"):
                error.setdefault("operation", data["operation"])
            data = {**data, "error": error}
        return data

    @model_validator(mode="after")
    def _error_only_on_failure(self) -> OutcomeIn:
        if self.success and self.error is not None:
            raise ValueError("a successful outcome carries no error")
        if not self.success and "result" in self.model_fields_set:
            raise ValueError("only a successful outcome carries a result")
        if self.error is not None and self.error.service != self.service:
            raise ValueError("the error's service must be the outcome's service")
        return self


class OutcomeBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outcomes: list[OutcomeIn]


class TransitionOut(BaseModel):
    id: int
    service: str
    from_state: str
    to_state: str
    reason: str
    actor: str
    window: dict[str, Any]
    at: str


class OutcomeOut(BaseModel):
    service: str
    state: str
    transition: TransitionOut | None
    error_class: str | None
    counted: bool


class PermitOut(BaseModel):
    service: str
    allowed: bool
    state: str
    retry_after_s: float | None
    permit_id: str | None
    reason: str


class OverrideIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Annotated[str, StringConstraints(pattern=r"^(forced_open|forced_closed|disabled|auto)$")] = Field(
        description="forced_open, forced_closed, disabled (records, never blocks) or auto"
    )
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000, strip_whitespace=True)]
    expires_at: AwareDatetime | None = None

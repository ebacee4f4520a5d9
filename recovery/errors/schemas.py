"""Input and output shapes of the error API, as pydantic models.

pydantic validates a batch of a thousand errors in about a millisecond, which keeps intake cheap;
drf-spectacular documents these models directly.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from core.slugs import Slug
from recovery.errors.classification import ErrorReport, parse_retry_after, retry_after_from_headers
from recovery.errors.taxonomy import ErrorClass, ErrorKind, Severity


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

from __future__ import annotations

import json
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

from core.infra.conf import rebound
from core.slugs import Slug
from recovery.errors.schemas import ErrorIn


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

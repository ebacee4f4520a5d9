"""The learning API's input and output shapes: the query of GET /learning, the body of POST /learning/reset, and
the figures of each row as the API and the MCP tool answer them (docs/learning.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.infra.conf import rebound
from core.slugs import Slug
from recovery.errors.schemas import Reason
from recovery.errors.taxonomy import ErrorClass

if TYPE_CHECKING:
    from recovery.learning.selectors import Row

MAX_LIMIT = 500
# An ErrorPattern's id: a PostgreSQL bigint (a larger number is a 400 naming the field, never a 500).
PatternId = Annotated[int, Field(ge=1, le=2**63 - 1)]
# What the API answers has exactly these fields (additionalProperties: false in the schema).
OUT = ConfigDict(extra="forbid")


# --- Input -------------------------------------------------------------------------------------------------


class LearningQuery(BaseModel):
    """The query of GET /learning. Parameters it does not know are ignored, as the other lists do."""

    model_config = ConfigDict(extra="ignore")

    service: Slug | None = Field(
        default=None, description="Only this service's rows: its service-scope rows and its patterns' rows."
    )
    pattern: PatternId | None = Field(
        default=None, description="Only this error pattern's rows (its id, as GET /patterns answers it)."
    )
    error_class: ErrorClass | None = Field(default=None, description="Only rows of this error class.")
    limit: int = Field(
        default=MAX_LIMIT, ge=1, le=MAX_LIMIT, description=f"At most this many rows (1 to {MAX_LIMIT})."
    )


class ResetIn(BaseModel):
    """Forget what was learned for a service (both scopes), a pattern, or both."""

    model_config = ConfigDict(extra="forbid")

    service: Slug | None = Field(
        default=None, description="Forget this service's rows, and the rows of its patterns."
    )
    pattern: PatternId | None = Field(default=None, description="Forget this error pattern's rows (its id).")
    reason: Reason


# --- Output --------------------------------------------------------------------------------------------------


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


class LearningRowOut(BaseModel):
    """How well one action has worked for one error pattern (scope `pattern`) or for one service and error class
    (scope `service`). `tries` and `successes` are decayed: a result counts 1 when it comes and half as much
    every LEARNING_HALF_LIFE_DAYS after; the `total_*` counts are plain counts, never decayed."""

    model_config = OUT

    scope: Literal["pattern", "service"]
    pattern: int | None = Field(description="The ErrorPattern's id for the fingerprint, when it has one.")
    fingerprint: str = Field(description="The pattern's fingerprint (pattern scope); empty in service scope.")
    service: str
    error_class: str = Field(description="The error class; empty: any class (healing runs).")
    action: str = Field(
        description="retry, wait, fallback:cache, fallback:static, fallback:service:<name>[/<op>], degrade, "
        "escalate, abort, server_retry, healing:<action>"
    )
    tries: float = Field(description="Decayed tries, as of now (3 decimals).")
    successes: float = Field(description="Decayed successes, as of now (3 decimals).")
    success_rate: float | None = Field(description="successes / tries; null with no tries.")
    lower_bound: float = Field(description="The success rate is at least this (Wilson, 95 %).")
    upper_bound: float = Field(description="The success rate is at most this (Wilson, 95 %).")
    trusted: bool = Field(description="tries ≥ LEARNING_MIN_TRIES: the planner weighs this figure.")
    recover_s: float | None = Field(description="Mean seconds to recover, over the successes.")
    delay_s: float | None = Field(
        description="Retries and waits that worked: mean seconds after the first failure."
    )
    total_tries: int = Field(description="Every result ever counted (not decayed).")
    total_successes: int
    total_unknown: int = Field(description="Plans whose outcome never came: tries without a success.")
    first_result_at: datetime
    last_result_at: datetime

    @classmethod
    def of(cls, row: Row, pattern_id: int | None) -> LearningRowOut:
        f = row.figures
        return cls(
            scope=row.scope,  # type: ignore[arg-type]
            pattern=pattern_id,
            fingerprint=row.fingerprint,
            service=row.service,
            error_class=row.error_class,
            action=row.action,
            tries=round(f.tries, 3),
            successes=round(f.successes, 3),
            success_rate=_rounded(f.success_rate, 4),
            lower_bound=round(f.lower_bound, 4),
            upper_bound=round(f.upper_bound, 4),
            trusted=f.trusted,
            recover_s=_rounded(f.recover_s, 3),
            delay_s=_rounded(f.delay_s, 3),
            total_tries=row.total_tries,
            total_successes=row.total_successes,
            total_unknown=row.total_unknown,
            first_result_at=row.first_result_at,
            last_result_at=row.last_result_at,
        )


class LearningOut(BaseModel):
    """What recovery has learned: the settings the figures are read with, and the rows, best lower bound first
    within each (scope, pattern or service and class)."""

    model_config = OUT

    half_life_days: float = Field(
        description="LEARNING_HALF_LIFE_DAYS: a result weighs half as much after it."
    )
    min_tries: float = Field(description="LEARNING_MIN_TRIES: decayed tries before a figure is trusted.")
    rows: list[LearningRowOut]

    @classmethod
    def of(cls, rows: Sequence[Row], pattern_ids: Mapping[str, int]) -> LearningOut:
        return cls(
            half_life_days=float(rebound("LEARNING_HALF_LIFE_DAYS")),
            min_tries=float(rebound("LEARNING_MIN_TRIES")),
            rows=[
                LearningRowOut.of(r, pattern_ids.get(r.fingerprint) if r.fingerprint else None) for r in rows
            ],
        )


class ResetOut(BaseModel):
    model_config = OUT

    deleted: int = Field(description="How many rows were forgotten.")

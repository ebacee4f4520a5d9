"""The shape of GET /status: the fleet at a glance, gathered from the other rooms' selectors."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Read from the other rooms' selectors, which answer dataclasses, rows or dicts: attributes or keys alike.
FROM_EITHER = ConfigDict(from_attributes=True)


class StatusLevelOut(BaseModel):
    """The fleet's degradation level in force."""

    model_config = FROM_EITHER

    scope: str
    level: str = Field(description="normal, degraded, minimal or emergency")
    source: str = Field(description="automatic or operator")
    reason: str
    since: datetime | None
    until: datetime | None


class StatusRetryOut(BaseModel):
    model_config = FROM_EITHER

    id: str
    service: str
    operation: str
    kind: str
    attempts: int
    error_class: str | None
    why: str | None
    finished_at: datetime | None


class StatusRetriesOut(BaseModel):
    """Exhausted or unretryable retry jobs waiting for a human: how many, and the newest few."""

    model_config = FROM_EITHER

    count: int
    newest: list[StatusRetryOut]


class StatusRollbackOut(BaseModel):
    model_config = FROM_EITHER

    id: str
    name: str
    agent: str | None
    failed_step: int | None = Field(description="The step whose compensation failed.")
    error_class: str | None
    finished_at: datetime | None


class StatusRollbacksOut(BaseModel):
    """Failed rollbacks waiting for a human: how many, and the newest few."""

    model_config = FROM_EITHER

    count: int
    newest: list[StatusRollbackOut]


class StatusStaleTaskOut(BaseModel):
    agent: str
    task_id: str
    stale_at: datetime
    last_seq: int


class StatusStaleTasksOut(BaseModel):
    """Running tasks that went quiet: how many, and the longest quiet few."""

    count: int
    oldest: list[StatusStaleTaskOut]


class StatusPatternOut(BaseModel):
    model_config = FROM_EITHER

    id: int
    service: str
    error_class: str
    severity: str
    message_template: str
    recent_60m: int
    total_count: int


HealthState = Literal["unknown", "healthy", "unhealthy"]


class StatusHealthCheckOut(BaseModel):
    """One enabled health check of a service."""

    model_config = FROM_EITHER

    name: str
    state: HealthState
    last_result_at: datetime | None = Field(
        description="When its newest result was recorded; null: none yet."
    )


class StatusServiceHealthOut(BaseModel):
    """A service's health from its enabled health checks: the worst of their states (one unhealthy check makes
    it unhealthy; one without a verdict yet, unknown)."""

    model_config = FROM_EITHER

    state: HealthState
    checks: list[StatusHealthCheckOut]


class FleetStatusOut(BaseModel):
    """The fleet at a glance: breakers by state, what waits for a human, errors by class, the top patterns, and
    each service's health from its health checks."""

    breakers: dict[str, int] = Field(description="How many breakers are in each state.")
    degradation: StatusLevelOut
    retries_needing_human: StatusRetriesOut
    rollbacks_needing_human: StatusRollbacksOut
    stale_tasks: StatusStaleTasksOut
    errors_last_5m: dict[str, int] = Field(description="Errors by class over the last 5 minutes.")
    errors_last_60m: dict[str, int] = Field(description="Errors by class over the last 60 minutes.")
    top_patterns: list[StatusPatternOut] = Field(description="The patterns seen most over the last hour.")
    health: dict[str, StatusServiceHealthOut] = Field(
        description="Each service with enabled health checks, by name: its health and each check's state. "
        "Services without checks are not listed."
    )

"""The server-side retry API's input and output shapes.

Every output goes through `RetryJobOut.of`, which shows a job's request and task call only as
selectors.request_shown and selectors.task_shown give them: secrets hidden. The stored blobs (the policy
snapshot, the last error, the result) are shown as stored; their shapes are TypedDicts that keep any key an
older row has.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, with_config
from typing_extensions import TypedDict

from core.api.schemas import Page
from core.slugs import Slug
from recovery.calls.outbound import RequestIn
from recovery.calls.schemas import ShownRequest, ShownTaskCall
from recovery.retries.selectors import request_shown, task_shown

if TYPE_CHECKING:
    from recovery.retries.models import RetryAttempt, RetryJob

Key = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
Reason = Annotated[
    str, StringConstraints(min_length=1, max_length=2000, strip_whitespace=True, pattern=r"\S")
]
JobKind = Literal["http", "task"]
JobState = Literal["pending", "running", "succeeded", "failed", "cancelled"]
JOB_STATES: tuple[str, ...] = get_args(JobState)


# --- Input -------------------------------------------------------------------------------------------------


class TaskCallIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        description="A registered task (REGISTERED_TASKS, or a built-in demo task)."
    )
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class RetryJobIn(BaseModel):
    """An operation handed to Rebound: an HTTP request or a registered task, run with a retry policy."""

    model_config = ConfigDict(extra="forbid")

    service: Slug = Field(
        description="The service called: its breaker is asked before, and told after, each attempt."
    )
    operation: Annotated[str, StringConstraints(max_length=200)] = ""
    kind: JobKind
    request: RequestIn | None = Field(default=None, description="kind http: the request to make.")
    task: TaskCallIn | None = Field(default=None, description="kind task: the registered task to run.")
    idempotency_key: Key = Field(
        description="Required. The same key from the same agent answers the same job; sent to HTTP targets as "
        "the Idempotency-Key header."
    )
    policy: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = Field(
        default=None,
        description="A retry policy's name; default: the one resolved for the service and operation.",
    )


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Reason


class RetryQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")  # page and page_size belong to the paginator
    state: JobState | None = Field(default=None, description="Only jobs in this state.")
    service: Slug | None = Field(default=None, description="Only jobs of this service.")
    needs_human: bool | None = Field(
        default=None, description="Only jobs that ran out of retries (true) or not (false)."
    )


# --- Output --------------------------------------------------------------------------------------------------


@with_config(ConfigDict(extra="allow"))
class PolicySnapshot(TypedDict, total=False):
    """The retry policy as it was when the job started (attempts_before: attempts of earlier runs)."""

    id: int | None
    name: str
    strategy: str
    max_attempts: int
    base_delay_s: float
    multiplier: float
    max_delay_s: float
    deadline_s: float | None
    honour_retry_after: bool
    retry_on: list[str]
    attempts_before: int


@with_config(ConfigDict(extra="allow"))
class JobError(TypedDict, total=False):
    """The last failure: the error as classified, and what was decided about it."""

    attempt: int
    type: str
    message: str
    status_code: int | None
    retry_after_s: float | None
    error_class: str
    severity: str
    kind: str
    rule: str | None
    decision: str
    next_delay_s: float | None


class RetryAttemptOut(BaseModel):
    number: int
    outcome: Literal["running", "success", "failure"]
    status_code: int | None
    error_class: str | None
    kind: str | None
    severity: str | None
    error_type: str | None
    message: str | None
    duration_ms: float | None
    task_id: str = Field(description="The Celery task that ran the attempt.")
    started_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, row: RetryAttempt) -> RetryAttemptOut:
        return cls.model_construct(
            number=row.number,
            outcome=row.outcome,
            status_code=row.status_code,
            error_class=row.error_class or None,
            kind=row.kind or None,
            severity=row.severity or None,
            error_type=row.error_type or None,
            message=row.message or None,
            duration_ms=row.duration_ms,
            task_id=row.task_id,
            started_at=row.started_at,
            finished_at=row.finished_at,
        )


class RetryJobOut(BaseModel):
    id: UUID
    service: str
    operation: str
    kind: JobKind
    request: ShownRequest | None = Field(description="kind http: the request, secrets hidden.")
    task: ShownTaskCall | None = Field(description="kind task: the task call, secrets hidden.")
    idempotency_key: str
    policy: PolicySnapshot
    state: JobState
    attempts: int
    next_attempt_at: datetime | None
    deadline_at: datetime | None
    needs_human: bool
    last_error: JobError | None
    result: Any = Field(
        description="A success's result: the HTTP status and body, or the task's return value."
    )
    agent: str | None
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @staticmethod
    def fields_of(job: RetryJob) -> dict[str, Any]:
        # The request and the task call only as shown: secrets hidden.
        return {
            "id": job.pk,
            "service": job.service.name,
            "operation": job.operation,
            "kind": job.kind,
            "request": request_shown(job),
            "task": task_shown(job),
            "idempotency_key": job.idempotency_key,
            "policy": job.policy_snapshot,
            "state": job.state,
            "attempts": job.attempts,
            "next_attempt_at": job.next_attempt_at,
            "deadline_at": job.deadline_at,
            "needs_human": job.needs_human,
            "last_error": job.last_error,
            "result": job.result,
            "agent": job.agent.name if job.agent else None,
            "created_by": job.created_by.get_username() if job.created_by else None,
            "created_at": job.created_at,
            "updated_at": job.updated_at,
            "finished_at": job.finished_at,
        }

    @classmethod
    def of(cls, job: RetryJob) -> RetryJobOut:
        return cls.model_construct(**cls.fields_of(job))


class RetryJobPage(Page[RetryJobOut]):
    """One page of retry jobs, newest first."""


class RetryJobDetailOut(RetryJobOut):
    attempt_history: list[RetryAttemptOut] = Field(description="Every attempt, in order.")

    @classmethod
    def of_detail(cls, job: RetryJob, attempts: list[RetryAttempt]) -> RetryJobDetailOut:
        history = [RetryAttemptOut.of(row) for row in attempts]
        return cls.model_construct(**cls.fields_of(job), attempt_history=history)

"""The transactions API's (sagas') input and output shapes."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
    with_config,
)
from typing_extensions import TypedDict

from core.api.schemas import Moment, Page
from recovery.calls.schemas import ShownRequest, ShownTaskCall
from recovery.sagas.selectors import compensation_json

if TYPE_CHECKING:
    from recovery.sagas.models import CompensationAttempt, Transaction, TransactionStep

Name = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
TransactionStatus = Literal["open", "committed", "rolling_back", "rolled_back", "rollback_failed"]
TRANSACTION_STATUSES: tuple[str, ...] = get_args(TransactionStatus)
StepStatus = Literal["done", "compensating", "compensated", "compensation_failed"]
# The most SAGA_MAX_DEADLINE_SECONDS may be configured to (config/env.py): the schema's bound; the setting in
# force is checked by the service (400 naming the field).
MAX_DEADLINE_S = 365 * 86_400


# --- Input ---------------------------------------------------------------------------------------------------


class TransactionIn(BaseModel):
    """A transaction to open: a name, optionally the agent's task it belongs to, and a deadline."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    task_id: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        default=None, description="The agent's own task id (see /tasks); 404 if unknown."
    )
    deadline_s: float | None = Field(
        default=None,
        gt=0,
        le=MAX_DEADLINE_S,
        description="Seconds from now; past it an open transaction is rolled back. At most "
        "SAGA_MAX_DEADLINE_SECONDS (7 days unless configured; never more than 365 days).",
    )
    deadline_at: AwareDatetime | None = Field(default=None, description="Or the deadline as a date and time.")

    @model_validator(mode="after")
    def _one_deadline(self) -> TransactionIn:
        if (self.deadline_s is None) == (self.deadline_at is None):
            raise ValueError("give exactly one of deadline_s and deadline_at")
        return self


class StepIn(BaseModel):
    """A completed step and how to undo it."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        description="Unique in the transaction; sent with the compensation (`Idempotency-Key` header, or the "
        "task's `idempotency_key` argument). The same key with the same step again answers the stored step."
    )
    compensation: dict[str, Any] = Field(
        description='`{"kind": "http", "request": {method, url, headers, body, success_statuses, timeout_s}}`, '
        '`{"kind": "task", "task": {name, args, kwargs}}` (a registered task) or `{"kind": "none"}`.'
    )
    policy: Name | None = Field(
        default=None,
        description="A retry policy's name. Default: the policy for the failure's error class and kind.",
    )


class HttpCompensationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["http"]
    request: dict[str, Any]


class TaskSpecIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class TaskCompensationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["task"]
    task: TaskSpecIn


class NoCompensationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["none"]


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000, strip_whitespace=True)]


class TransactionQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")  # page and page_size belong to the paginator
    status: TransactionStatus | None = None
    name: Annotated[str, StringConstraints(max_length=200)] | None = Field(
        default=None, description="Part of the name."
    )
    task_id: Annotated[str, StringConstraints(max_length=200)] | None = None
    needs_human: bool | None = None
    since: Moment | None = Field(default=None, description="Opened at or after.")


# --- Output --------------------------------------------------------------------------------------------------


@with_config(ConfigDict(extra="allow"))
class CompensationError(TypedDict, total=False):
    """A step's last failed compensation attempt, and when the next one is due."""

    attempt: int
    error_class: str
    kind: str
    error_type: str
    message: str
    status_code: int | None
    policy: str
    delay_s: float | None
    retry_at: str | None


class HttpCompensationOut(BaseModel):
    kind: Literal["http"]
    request: ShownRequest


class TaskCompensationOut(BaseModel):
    kind: Literal["task"]
    task: ShownTaskCall


class NoCompensationOut(BaseModel):
    kind: Literal["none"]


Compensation = Annotated[
    HttpCompensationOut | TaskCompensationOut | NoCompensationOut, Field(discriminator="kind")
]


def _compensation(step: TransactionStep) -> HttpCompensationOut | TaskCompensationOut | NoCompensationOut:
    shown = compensation_json(step)  # secrets hidden
    if shown["kind"] == "http":
        return HttpCompensationOut.model_construct(kind="http", request=shown["request"])
    if shown["kind"] == "task":
        return TaskCompensationOut.model_construct(kind="task", task=shown["task"])
    return NoCompensationOut.model_construct(kind="none")


class CompensationAttemptOut(BaseModel):
    number: int
    outcome: Literal["running", "success", "failure"]
    status_code: int | None
    error_class: str = Field(description="Empty unless the attempt failed.")
    kind: str
    error_type: str
    message: str
    duration_ms: float | None
    task_id: str
    started_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, attempt: CompensationAttempt) -> CompensationAttemptOut:
        return cls.model_construct(
            number=attempt.number,
            outcome=attempt.outcome,
            status_code=attempt.status_code,
            error_class=attempt.error_class,
            kind=attempt.kind,
            error_type=attempt.error_type,
            message=attempt.message,
            duration_ms=attempt.duration_ms,
            task_id=attempt.task_id,
            started_at=attempt.started_at,
            finished_at=attempt.finished_at,
        )


class StepOut(BaseModel):
    seq: int
    name: str
    idempotency_key: str
    compensation: Compensation = Field(description="How to undo the step, secrets hidden.")
    policy: str | None = Field(description="The retry policy's name, as it was when the step was recorded.")
    status: StepStatus
    attempts: int
    last_error: CompensationError | None
    created_at: datetime
    compensated_at: datetime | None
    compensation_attempts: list[CompensationAttemptOut]

    @classmethod
    def of(cls, step: TransactionStep) -> StepOut:
        return cls.model_construct(
            seq=step.seq,
            name=step.name,
            idempotency_key=step.idempotency_key,
            compensation=_compensation(step),
            policy=step.policy_snapshot.get("name") if step.policy_snapshot else None,
            status=step.status,
            attempts=step.attempts,
            last_error=step.last_error,
            created_at=step.created_at,
            compensated_at=step.compensated_at,
            compensation_attempts=[CompensationAttemptOut.of(a) for a in step.attempt_rows.all()],
        )


class TransactionFields(BaseModel):
    id: UUID
    name: str
    status: TransactionStatus
    agent: str | None = Field(description="The agent that opened it; null when an operator did.")
    created_by: str | None = Field(description="The operator who opened it; null when an agent did.")
    task_id: str | None
    deadline_at: datetime | None
    rollback_reason: str
    needs_human: bool
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @staticmethod
    def fields_of(txn: Transaction) -> dict[str, Any]:
        return {
            "id": txn.pk,
            "name": txn.name,
            "status": txn.status,
            "agent": txn.agent.name if txn.agent is not None else None,
            "created_by": txn.created_by.get_username() if txn.created_by is not None else None,
            "task_id": txn.task.task_id if txn.task is not None else None,
            "deadline_at": txn.deadline_at,
            "rollback_reason": txn.rollback_reason,
            "needs_human": txn.needs_human,
            "created_at": txn.created_at,
            "updated_at": txn.updated_at,
            "finished_at": txn.finished_at,
        }


class TransactionOut(TransactionFields):
    step_count: int | None = Field(description="How many steps are recorded.")

    @classmethod
    def of(cls, txn: Transaction) -> TransactionOut:
        return cls.model_construct(**cls.fields_of(txn), step_count=getattr(txn, "step_count", None))


class TransactionPage(Page[TransactionOut]):
    """One page of transactions, newest first."""


class TransactionDetailOut(TransactionFields):
    steps: list[StepOut] = Field(description="Every step in order, each with its compensation attempts.")

    @classmethod
    def of(cls, txn: Transaction) -> TransactionDetailOut:
        return cls.model_construct(**cls.fields_of(txn), steps=[StepOut.of(s) for s in txn.steps.all()])

"""The task and checkpoint API's input and output shapes.

Outputs are built with `model_construct` from rows the services wrote (no second validation on the
checkpoint hot path). A read's state is not in a model at all: its canonical JSON is spliced in as stored
(api._with_state); `CheckpointReadOut` only declares the shape for the schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from core.api.parsers import text_problem
from core.api.schemas import Page

if TYPE_CHECKING:
    from recovery.checkpoints.models import Checkpoint, Task

TASK_ID = r"^[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,199}$"
TaskId = Annotated[str, StringConstraints(pattern=TASK_ID)]


def _storable(text: str) -> str:
    """Text PostgreSQL can keep. A checkpoint's body is read by the codec, not by the API's parser, which
    refuses these for every other body (core/api/parsers.py): the same refusal, here."""
    if (problem := text_problem(text)) is not None:
        raise ValueError(problem)
    return text


Text = Annotated[str, StringConstraints(max_length=200), AfterValidator(_storable)]
TaskStatus = Literal["running", "succeeded", "failed", "abandoned"]
Finished = Literal["succeeded", "failed", "abandoned"]
METADATA_MAX_BYTES = 16_384
MAX_SEQ = 2_147_483_647  # a checkpoint's seq is a PositiveIntegerField


def _texts(value: Any) -> Iterator[str]:
    """Every key and string in a JSON value."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            yield from item.keys()
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _small(value: dict[str, Any]) -> dict[str, Any]:
    for text in _texts(value):  # metadata is a jsonb column: the same text as any other, checked first
        _storable(text)
    try:
        size = len(json.dumps(value, ensure_ascii=False, default=str).encode())
    except RecursionError:  # the checkpoint body's parser reads up to 1,024 levels
        raise ValueError("nested too deeply") from None
    if size > METADATA_MAX_BYTES:
        raise ValueError(
            f"at most {METADATA_MAX_BYTES} bytes as JSON (this is {size}); state is for the rest"
        )
    return value


# --- Input -------------------------------------------------------------------------------------------------


class TaskIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task_id: TaskId = Field(description="The agent's own id for the job: letters, digits and . _ : @ + = -")
    name: Text = ""
    metadata: dict[str, Any] = Field(default_factory=dict)

    _metadata = field_validator("metadata")(_small)


class CheckpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: Any = Field(description="Any JSON: stored as canonical JSON, compressed, with its SHA-256.")
    progress: float = Field(default=0, ge=0, le=100, allow_inf_nan=False)
    step: Text = ""
    completed_steps: list[Text] = Field(default_factory=list, max_length=10_000)
    metadata: dict[str, Any] = Field(default_factory=dict)
    expected_seq: int | None = Field(
        default=None,
        ge=0,
        le=MAX_SEQ,
        description="The seq you believe is the latest (0 before the first): if another writer saved since, "
        "the answer is 409 and nothing is stored. Without it, the checkpoint gets the next seq.",
    )

    _metadata = field_validator("metadata")(_small)


class ForkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task_id: TaskId = Field(description="The new task's id (same agent).")
    name: Text = ""
    reason: Annotated[str, StringConstraints(max_length=2000)] = Field(
        default="", description="Required when a human forks (audited)."
    )


class CompleteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Finished
    reason: Annotated[str, StringConstraints(max_length=2000)] = Field(
        default="", description="Optional for agents; required for humans (audited)."
    )


class TaskQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")  # page and page_size belong to the paginator
    agent: Annotated[str, StringConstraints(max_length=100)] | None = None
    status: TaskStatus | None = None
    stale: bool | None = None


# --- Output --------------------------------------------------------------------------------------------------


class ForkedFromOut(BaseModel):
    task_id: str = Field(description="The task forked from (same agent).")
    seq: int | None = Field(description="Its checkpoint the fork started from; null once deleted.")


class TaskOut(BaseModel):
    task_id: str
    agent: str
    name: str
    status: TaskStatus
    metadata: dict[str, Any]
    last_seq: int = Field(description="The newest checkpoint's seq; 0 before the first.")
    progress: float | None = Field(description="The newest checkpoint's progress, 0 to 100.")
    step: str | None = Field(description="The newest checkpoint's step.")
    started_at: datetime
    last_checkpoint_at: datetime | None
    last_heartbeat_at: datetime | None
    stale_at: datetime | None = Field(description="Set when the running task went quiet for too long.")
    finished_at: datetime | None
    forked_from: ForkedFromOut | None

    @staticmethod
    def fields_of(task: Task) -> dict[str, Any]:
        # The annotations of selectors.tasks(), where present; the row's own fields otherwise.
        forked_task = getattr(task, "forked_from_task", None)
        return {
            "task_id": task.task_id,
            "agent": getattr(task, "agent_name", None) or task.agent.name,
            "name": task.name,
            "status": task.status,
            "metadata": task.metadata,
            "last_seq": task.last_seq,
            "progress": getattr(task, "progress", None),
            "step": getattr(task, "step", None),
            "started_at": task.started_at,
            "last_checkpoint_at": task.last_checkpoint_at,
            "last_heartbeat_at": task.last_heartbeat_at,
            "stale_at": task.stale_at,
            "finished_at": task.finished_at,
            "forked_from": (
                ForkedFromOut.model_construct(task_id=forked_task, seq=getattr(task, "forked_from_seq", None))
                if forked_task
                else None
            ),
        }

    @classmethod
    def of(cls, task: Task) -> TaskOut:
        return cls.model_construct(**cls.fields_of(task))


class TaskPage(Page[TaskOut]):
    """One page of tasks."""


class CompletedTaskOut(TaskOut):
    changed: bool = Field(description="False when the task had already ended this way (a repeat).")

    @classmethod
    def of_completion(cls, task: Task, changed: bool) -> CompletedTaskOut:
        return cls.model_construct(**cls.fields_of(task), changed=changed)


class HeartbeatOut(BaseModel):
    task_id: str
    status: Literal["running"]
    last_heartbeat_at: datetime


class CheckpointOut(BaseModel):
    """A checkpoint's metadata, without its state."""

    seq: int
    progress: float
    step: str
    completed_steps: list[str]
    metadata: dict[str, Any]
    sha256: str = Field(description="Of the state's canonical JSON.")
    size_bytes: int = Field(description="The state's canonical JSON, before compression.")
    stored_bytes: int = Field(description="As stored, compressed.")
    created_at: datetime

    @staticmethod
    def fields_of(checkpoint: Checkpoint) -> dict[str, Any]:
        return {
            "seq": checkpoint.seq,
            "progress": checkpoint.progress,
            "step": checkpoint.step,
            "completed_steps": checkpoint.completed_steps,
            "metadata": checkpoint.metadata,
            "sha256": checkpoint.sha256,
            "size_bytes": checkpoint.size_bytes,
            "stored_bytes": checkpoint.stored_bytes,
            "created_at": checkpoint.created_at,
        }

    @classmethod
    def of(cls, checkpoint: Checkpoint) -> CheckpointOut:
        return cls.model_construct(**cls.fields_of(checkpoint))


class CheckpointPage(Page[CheckpointOut]):
    """One page of a task's checkpoints, newest first."""


class SavedCheckpointOut(BaseModel):
    """A checkpoint's metadata, with its task's id."""

    task_id: str
    seq: int
    progress: float
    step: str
    completed_steps: list[str]
    metadata: dict[str, Any]
    sha256: str = Field(description="Of the state's canonical JSON.")
    size_bytes: int = Field(description="The state's canonical JSON, before compression.")
    stored_bytes: int = Field(description="As stored, compressed.")
    created_at: datetime

    @classmethod
    def of(cls, task_id: str, checkpoint: Checkpoint) -> SavedCheckpointOut:
        return cls.model_construct(task_id=task_id, **CheckpointOut.fields_of(checkpoint))


class CheckpointHead(SavedCheckpointOut):
    """A read's answer but its state (which is spliced in as stored): not itself in the schema."""

    skipped_corrupt: list[int] = Field(
        description="Newer checkpoints skipped because they failed their check, newest first."
    )

    @classmethod
    def of_read(cls, task_id: str, checkpoint: Checkpoint, skipped: list[int]) -> CheckpointHead:
        return cls.model_construct(
            task_id=task_id, **CheckpointOut.fields_of(checkpoint), skipped_corrupt=skipped
        )


class CheckpointReadOut(CheckpointHead):
    """A checkpoint with its state."""

    state: Any = Field(description="The state as saved (its canonical JSON: sorted keys, exact numbers).")

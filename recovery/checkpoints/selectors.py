"""Reads of tasks and checkpoints. Every read of a state checks it (recovery.checkpoints.decode); lists never
load the data column."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import F, OuterRef, QuerySet, Subquery

from core.access.models import Agent
from core.api.errors import InvalidInput, NotFound
from recovery.checkpoints.codec import CheckpointCorrupt, decode
from recovery.checkpoints.models import Checkpoint, Task

# What a list shows of a checkpoint: everything but the state itself.
METADATA_FIELDS = (
    "id",
    "task_id",
    "seq",
    "encoding",
    "sha256",
    "size_bytes",
    "stored_bytes",
    "progress",
    "step",
    "completed_steps",
    "metadata",
    "created_at",
)


def tasks(
    *,
    agent: Agent | None = None,
    agent_name: str | None = None,
    status: str | None = None,
    stale: bool | None = None,
) -> QuerySet[Task]:
    """Tasks newest first, with their agent's name, the newest checkpoint's progress and step, and where a
    fork came from. `agent` scopes to one agent's own tasks (an agent key), which may name only itself in
    `agent_name` (another name is a 404, as another agent's task is); `agent_name` filters (humans)."""
    newest = Checkpoint.objects.filter(task=OuterRef("pk"), seq=OuterRef("last_seq"))
    qs = Task.objects.all()
    if agent is not None:
        if agent_name and agent_name != agent.name:
            # The same answer whether that agent exists or not: an agent key learns nothing of the others.
            raise NotFound(
                "An agent key sees only its own tasks: ?agent= may name only this agent.", field="agent"
            )
        qs = qs.filter(agent=agent)
    elif agent_name:
        qs = qs.filter(agent__name=agent_name)
    if status:
        qs = qs.filter(status=status)
    if stale is not None:
        qs = qs.filter(stale_at__isnull=not stale)
    return qs.annotate(
        agent_name=F("agent__name"),
        progress=Subquery(newest.values("progress")[:1]),
        step=Subquery(newest.values("step")[:1]),
        forked_from_task=F("forked_from__task__task_id"),
        forked_from_seq=F("forked_from__seq"),
    ).order_by("-started_at", "-id")


def task_of(*, agent: Agent | None, agent_name: str | None, task_id: str, annotated: bool = True) -> Task:
    """One task. An agent key reaches only its own (another agent's is a 404 whatever `agent_name` says);
    a human names the agent (`?agent=`), since task ids are unique only per agent. Not `annotated`: the bare
    row, for reading its checkpoints (one cheap query on the hot path)."""
    if agent is not None:
        if agent_name and agent_name != agent.name:
            raise NotFound(f"No task {task_id!r}.", field="task_id")
        qs = tasks(agent=agent) if annotated else Task.objects.filter(agent=agent)
    else:
        if not agent_name:
            raise InvalidInput(
                "Task ids are unique per agent: name the task's agent with ?agent=<agent name>.",
                field="agent",
            )
        qs = tasks(agent_name=agent_name) if annotated else Task.objects.filter(agent__name=agent_name)
    found = qs.filter(task_id=task_id).first()
    if found is None:
        raise NotFound(f"No task {task_id!r}.", field="task_id")
    return found


def checkpoints(task: Task) -> QuerySet[Checkpoint]:
    """A task's checkpoints, newest first, metadata only (the state stays in the database)."""
    return Checkpoint.objects.filter(task=task).only(*METADATA_FIELDS).order_by("-seq")


@dataclass(frozen=True)
class Read:
    """A checkpoint with its state checked: `state` is its canonical JSON, and `skipped_corrupt` the newer
    checkpoints that failed the check on the way (newest first)."""

    checkpoint: Checkpoint
    state: bytes
    skipped_corrupt: list[int] = field(default_factory=list)


def latest_intact(task: Task) -> Read:
    """The newest checkpoint whose state matches its size and SHA-256, skipping (and naming) corrupt ones."""
    skipped: list[int] = []
    newest = Checkpoint.objects.filter(task=task).order_by("-seq")
    candidate = newest.first()
    if candidate is None:
        raise NotFound(f"Task {task.task_id!r} has no checkpoints.", field="task_id")
    while candidate is not None:
        try:
            return Read(candidate, decode(candidate), skipped)
        except CheckpointCorrupt:
            skipped.append(candidate.seq)
        candidate = newest.filter(seq__lt=candidate.seq).first()
    raise CheckpointCorrupt(
        f"Task {task.task_id!r} has no intact checkpoint: every one failed its check ({skipped}).",
        field="task_id",
    )


def checkpoint_at(task: Task, seq: int) -> Read:
    """One checkpoint by sequence number, checked; CheckpointCorrupt if it fails."""
    found = Checkpoint.objects.filter(task=task, seq=seq).first()
    if found is None:
        raise NotFound(f"Task {task.task_id!r} has no checkpoint {seq}.", field="seq")
    return Read(found, decode(found))


def stale_tasks() -> QuerySet[Task]:
    """Running tasks marked stale, the longest quiet first: what the escalation queue will pick up."""
    return (
        Task.objects.filter(status=Task.Status.RUNNING, stale_at__isnull=False)
        .select_related("agent")
        .order_by("stale_at", "id")
    )

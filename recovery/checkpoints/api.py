"""The task and checkpoint API. Views parse input, call one service or selector, and serialize the answer.

Agents reach only their own tasks (another agent's task is a 404, so ids do not leak). Humans read every
task and name its agent with `?agent=<name>`, since a task id is unique only per agent (docs/checkpoints.md).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from pydantic import TypeAdapter
from rest_framework import exceptions
from rest_framework import status as http
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.access import roles
from core.access.permissions import AgentOrOperator, IsAuthenticatedPrincipal
from core.api import hotlane
from core.api.errors import InvalidInput, PayloadTooLarge
from core.api.negotiation import JsonOnlyView
from core.api.pagination import Pagination
from core.api.schemas import answers
from core.api.validation import parse
from core.audit.services import Actor
from recovery.checkpoints import codec, selectors, services
from recovery.checkpoints.schemas import (
    MAX_SEQ,
    TASK_ID,
    CheckpointHead,
    CheckpointIn,
    CheckpointOut,
    CheckpointPage,
    CheckpointReadOut,
    CompletedTaskOut,
    CompleteIn,
    ForkIn,
    HeartbeatOut,
    SavedCheckpointOut,
    TaskIn,
    TaskOut,
    TaskPage,
    TaskQuery,
)

_TASK_ID = re.compile(TASK_ID)


class IsAgent(BasePermission):
    message = "Only agent keys save checkpoints and heartbeats: a task belongs to the agent that runs it."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return roles.is_agent(request.user)


_TASK = TypeAdapter(TaskIn)
_CHECKPOINT = TypeAdapter(CheckpointIn)
_FORK = TypeAdapter(ForkIn)
_COMPLETE = TypeAdapter(CompleteIn)
_QUERY = TypeAdapter(TaskQuery)


def _checkpoint_body(request: Request) -> bytes:
    """The body of a checkpoint, read here rather than by DRF's parser: DRF would read it through
    request.body, bounded by DATA_UPLOAD_MAX_MEMORY_SIZE (the general API limit), and a state may be larger.
    The read is bounded by CHECKPOINT_MAX_BODY_BYTES itself, also for a body sent without Content-Length."""
    media = request.content_type.split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise exceptions.UnsupportedMediaType(media or "none")
    limit = int(settings.CHECKPOINT_MAX_BODY_BYTES)
    raw = request.stream.read(limit + 1) if request.stream is not None else b""
    if len(raw) > limit:
        raise PayloadTooLarge(f"The request body is over the limit of {limit} bytes.", field="body")
    return bytes(raw)


def _checkpoint_object(raw: bytes) -> dict[str, Any]:
    """The body parsed once, by the checkpoint codec (orjson, exact; docs/checkpoints.md), at about a third of
    the standard library's cost: the parse is most of a large save's CPU. Not the API's strict parser, which
    refuses what a state may hold (integers beyond 64 bits, NUL characters, nesting past API_MAX_JSON_DEPTH)."""
    try:
        data = codec.parse_json(raw)
    except ValueError as error:
        raise InvalidInput(f"The body is not JSON: {error}", field="body") from None
    if not isinstance(data, dict):
        raise InvalidInput("The body must be a JSON object.", field="body")
    return data


def save(user: Any, task_id: str, raw: bytes) -> dict[str, Any]:
    """Save a checkpoint from a request's raw JSON body: the answer's fields. The one function behind
    `POST /api/v1/tasks/{task_id}/checkpoints`, whichever way the request came (the DRF view below, or a
    plain-case lane in front of it that hands the body over unparsed: `hot_save`).

    The state is parsed once and written once: parse_json's objects go to the codec's sorted-key
    serialization as they are (pydantic keeps an `Any` field by reference), which skips the NaN search a
    parsed state cannot need; the seq's compare-and-set and the insert are one statement (services)."""
    if not roles.is_agent(user):  # the view's IsAgent, here too: a lane may admit any principal
        raise exceptions.PermissionDenied(IsAgent.message)
    body = parse(_CHECKPOINT, _checkpoint_object(raw))
    saved = services.save_checkpoint(
        agent=roles.agent_of(user),
        task_id=_task_id(task_id),
        state=body.state,
        progress=body.progress,
        step=body.step,
        completed_steps=body.completed_steps,
        metadata=body.metadata,
        expected_seq=body.expected_seq,
        parsed=True,
    )
    return SavedCheckpointOut.of(task_id, saved).model_dump()


def hot_save(request: Any, task_id: str) -> tuple[int, dict[str, Any]]:
    """`save` for a request whose `user` is its principal and whose `data` is its raw body, as bytes: (201, the
    answer). For core/api/hotlane.py's routes, which call a handler with such a request."""
    return http.HTTP_201_CREATED, save(request.user, task_id, bytes(request.data))


def _object(request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise InvalidInput("The body must be a JSON object.", field="body")
    return request.data


def _task_id(value: str) -> str:
    if not _TASK_ID.match(value):
        raise InvalidInput(
            "a task id is 1 to 200 letters, digits and . _ : @ + = -, starting with a letter or digit",
            field="task_id",
        )
    return value


def _agent(request: Request) -> selectors.Agent:
    """The agent behind an agent key (the views that call this admit agent keys only)."""
    agent: selectors.Agent = roles.agent_of(request.user)
    return agent


def _task(request: Request, task_id: str, *, annotated: bool = True) -> selectors.Task:
    return selectors.task_of(
        agent=roles.agent_of(request.user),
        agent_name=request.query_params.get("agent") or None,
        task_id=_task_id(task_id),
        annotated=annotated,
    )


# --- output ---------------------------------------------------------------------------------------------


def _with_state(read: selectors.Read, task_id: str) -> HttpResponse:
    """The checkpoint and its state. The state's canonical JSON is spliced in as stored: parsing it only to
    serialize it again would be the most expensive part of the read, for the same bytes."""
    head = CheckpointHead.of_read(task_id, read.checkpoint, read.skipped_corrupt).model_dump_json()
    body = head.encode()[:-1] + b',"state":' + read.state + b"}"
    return HttpResponse(body, content_type="application/json")


# --- examples -------------------------------------------------------------------------------------------

STATE_EXAMPLE = {
    "messages": [{"role": "user", "content": "Summarise my inbox"}],
    "cursor": {"folder": "inbox", "page": 3},
}
CHECKPOINT_EXAMPLE = {
    "seq": 7,
    "progress": 60.0,
    "step": "summarise",
    "completed_steps": ["fetch", "classify"],
    "metadata": {"model": "gpt-4o"},
    "sha256": "9b1c3a6c0f4f3d8f2b8e1d8f0d3c2a1b9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b",
    "size_bytes": 104_211,
    "stored_bytes": 23_870,
    "created_at": "2026-11-22T09:00:00Z",
}
TASK_EXAMPLE = {
    "task_id": "inbox-2026-11-22",
    "agent": "mail-agent",
    "name": "Summarise the inbox",
    "status": "running",
    "metadata": {"user": "u-42"},
    "last_seq": 7,
    "progress": 60.0,
    "step": "summarise",
    "started_at": "2026-11-22T08:55:00Z",
    "last_checkpoint_at": "2026-11-22T09:00:00Z",
    "last_heartbeat_at": "2026-11-22T09:01:00Z",
    "stale_at": None,
    "finished_at": None,
    "forked_from": None,
}
AGENT_PARAMETER = OpenApiParameter(
    "agent",
    str,
    description="Humans: the agent whose task this is (task ids are unique per agent). Agent keys omit it.",
    examples=[OpenApiExample("An agent", value="mail-agent")],
)

SEQ_PARAMETER = OpenApiParameter(
    "seq",
    # A raw schema: drf-spectacular takes one for `type`, and the range is the model's (a PositiveIntegerField).
    {"type": "integer", "minimum": 1, "maximum": MAX_SEQ},
    OpenApiParameter.PATH,
    description="The checkpoint's sequence number, from 1; past the task's latest, a 404.",
)


def _page(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"count": len(items), "next": None, "previous": None, "results": items}


# --- views ----------------------------------------------------------------------------------------------


class TaskListView(APIView):
    def get_permissions(self) -> Sequence[BasePermission]:
        return [IsAgent()] if self.request.method == "POST" else [IsAuthenticatedPrincipal()]

    @extend_schema(
        operation_id="list_tasks",
        summary="Tasks, newest first (an agent sees its own; humans see all)",
        parameters=[
            OpenApiParameter("status", str, enum=["running", "succeeded", "failed", "abandoned"]),
            OpenApiParameter("stale", bool, description="Only running tasks marked stale (true) or not."),
            OpenApiParameter("agent", str, description="Humans: only this agent's tasks."),
        ],
        responses=answers({200: TaskPage}, 400, 404),
        examples=[OpenApiExample("A page", value=_page([TASK_EXAMPLE]), response_only=True)],
    )
    def get(self, request: Request) -> Response:
        query = parse(_QUERY, request.query_params.dict())
        agent = roles.agent_of(request.user)
        qs = selectors.tasks(
            agent=agent,
            agent_name=query.agent,
            status=query.status,
            stale=query.stale,
        )
        paginator = Pagination()
        page = paginator.paginate_queryset(qs, request, view=self) or []
        return paginator.get_paginated_response([TaskOut.of(t).model_dump() for t in page])

    @extend_schema(
        operation_id="create_task",
        summary="Start a task (agents; idempotent: an existing id answers the task as it is)",
        description="Optional: the first checkpoint or heartbeat creates the task too.",
        request=TaskIn,
        responses=answers({201: TaskOut, 200: TaskOut}, 400, 403, 413, 415),
        examples=[
            OpenApiExample(
                "Start",
                value={
                    "task_id": "inbox-2026-11-22",
                    "name": "Summarise the inbox",
                    "metadata": {"user": "u-42"},
                },
                request_only=True,
            ),
            OpenApiExample("The task", value=TASK_EXAMPLE, response_only=True),
        ],
    )
    def post(self, request: Request) -> Response:
        body = parse(_TASK, _object(request))
        agent = _agent(request)
        _, created = services.create_task(
            agent=agent, task_id=body.task_id, name=body.name, metadata=body.metadata
        )
        task = selectors.task_of(agent=agent, agent_name=None, task_id=body.task_id)
        status = http.HTTP_201_CREATED if created else http.HTTP_200_OK
        return Response(TaskOut.of(task).model_dump(), status=status)


class TaskDetailView(APIView):
    @extend_schema(
        operation_id="get_task",
        summary="One task, with its newest checkpoint's progress and step",
        parameters=[AGENT_PARAMETER],
        responses=answers({200: TaskOut}, 400, 404),
        examples=[OpenApiExample("A task", value=TASK_EXAMPLE, response_only=True)],
    )
    def get(self, request: Request, task_id: str) -> Response:
        return Response(TaskOut.of(_task(request, task_id)).model_dump())


class CheckpointListView(JsonOnlyView):
    def get_permissions(self) -> Sequence[BasePermission]:
        return [IsAgent()] if self.request.method == "POST" else [IsAuthenticatedPrincipal()]

    @extend_schema(
        operation_id="list_checkpoints",
        summary="A task's checkpoints, newest first: metadata only, no state",
        parameters=[AGENT_PARAMETER],
        responses=answers({200: CheckpointPage}, 400, 404),
        examples=[OpenApiExample("A page", value=_page([CHECKPOINT_EXAMPLE]), response_only=True)],
    )
    def get(self, request: Request, task_id: str) -> Response:
        paginator = Pagination()
        page = paginator.paginate_queryset(
            selectors.checkpoints(_task(request, task_id, annotated=False)), request, view=self
        )
        return paginator.get_paginated_response([CheckpointOut.of(c).model_dump() for c in page or []])

    @extend_schema(
        operation_id="save_checkpoint",
        summary="Save the task's state (agents); the task is created on first use",
        description="Stored as canonical JSON (orjson's form: sorted keys, no spaces, UTF-8), zlib-compressed, "
        "with its SHA-256 and size. Integers beyond 64 bits are kept exactly; NaN, Infinity and numbers beyond a "
        "double's range are a 400. A state over CHECKPOINT_MAX_BYTES as canonical JSON is a 413 naming the limit. "
        "With `expected_seq`, a writer that lost a race gets 409 (code `seq_conflict`) and nothing is stored; "
        "without it, the checkpoint takes the next seq. A finished task is a 409.",
        request=CheckpointIn,
        responses=answers({201: SavedCheckpointOut}, 400, 403, 404, 409, 413, 415),
        examples=[
            OpenApiExample(
                "A checkpoint",
                value={
                    "state": STATE_EXAMPLE,
                    "progress": 60,
                    "step": "summarise",
                    "completed_steps": ["fetch", "classify"],
                    "metadata": {"model": "gpt-4o"},
                    "expected_seq": 6,
                },
                request_only=True,
            ),
            OpenApiExample(
                "Saved", value={"task_id": "inbox-2026-11-22", **CHECKPOINT_EXAMPLE}, response_only=True
            ),
            OpenApiExample(
                "Lost a race (409)",
                value={
                    "detail": "expected_seq is 6 but the latest checkpoint is 7: another writer saved first. …",
                    "code": "seq_conflict",
                    "errors": [{"field": "expected_seq", "message": "…"}],
                },
                response_only=True,
                status_codes=["409"],
            ),
        ],
    )
    def post(self, request: Request, task_id: str) -> Response:
        return Response(save(request.user, task_id, _checkpoint_body(request)), status=http.HTTP_201_CREATED)


# A plain save (an agent's bearer key, a JSON body) skips the middleware chain and DRF's dispatch
# (core/api/hotlane.py); the body reaches `save` unparsed, as from the view.
hotlane.route(
    "v1:checkpoints", CheckpointListView, hot_save, json_body=True, raw_body=True, params=("task_id",)
)


READ_EXAMPLE = {
    "task_id": "inbox-2026-11-22",
    **CHECKPOINT_EXAMPLE,
    "skipped_corrupt": [],
    "state": STATE_EXAMPLE,
}


class LatestCheckpointView(JsonOnlyView):
    @extend_schema(
        operation_id="latest_checkpoint",
        summary="The newest intact checkpoint, with its state",
        description="Each candidate's state is decompressed and checked against its size and SHA-256; a corrupt "
        "one is skipped and its seq listed in `skipped_corrupt`. 404 when the task has no checkpoints.",
        parameters=[AGENT_PARAMETER],
        responses=answers({200: CheckpointReadOut}, 400, 404, 409),
        examples=[
            OpenApiExample("The latest", value=READ_EXAMPLE, response_only=True),
            OpenApiExample(
                "Seq 8 was corrupt",
                value={**READ_EXAMPLE, "skipped_corrupt": [8]},
                response_only=True,
            ),
        ],
    )
    def get(self, request: Request, task_id: str) -> HttpResponse:
        task = _task(request, task_id, annotated=False)
        return _with_state(selectors.latest_intact(task), task.task_id)


class CheckpointDetailView(JsonOnlyView):
    @extend_schema(
        operation_id="get_checkpoint",
        summary="One checkpoint by seq, with its state (409, code checkpoint_corrupt, if it fails its check)",
        parameters=[AGENT_PARAMETER, SEQ_PARAMETER],
        responses=answers({200: CheckpointReadOut}, 400, 404, 409),
        examples=[OpenApiExample("Checkpoint 7", value=READ_EXAMPLE, response_only=True)],
    )
    def get(self, request: Request, task_id: str, seq: int) -> HttpResponse:
        task = _task(request, task_id, annotated=False)
        return _with_state(selectors.checkpoint_at(task, seq), task.task_id)


class ForkView(APIView):
    permission_classes = [AgentOrOperator]

    @extend_schema(
        operation_id="fork_checkpoint",
        summary="Start a new task (same agent) from this checkpoint's state: time travel",
        description="The new task's checkpoint 1 is a copy of this one (checked intact first), and its "
        "`forked_from` names it. Operators must give a reason (audited).",
        parameters=[AGENT_PARAMETER, SEQ_PARAMETER],
        request=ForkIn,
        responses=answers({201: TaskOut}, 400, 403, 404, 409, 413, 415),
        examples=[
            OpenApiExample(
                "Fork",
                value={"task_id": "inbox-2026-11-22-retry", "name": "Summarise again from step 4"},
                request_only=True,
            ),
            OpenApiExample(
                "The new task",
                value={
                    **TASK_EXAMPLE,
                    "task_id": "inbox-2026-11-22-retry",
                    "last_seq": 1,
                    "forked_from": {"task_id": "inbox-2026-11-22", "seq": 4},
                },
                response_only=True,
            ),
        ],
    )
    def post(self, request: Request, task_id: str, seq: int) -> Response:
        body = parse(_FORK, _object(request))
        child = services.fork(
            task=_task(request, task_id),
            seq=seq,
            new_task_id=body.task_id,
            name=body.name,
            actor=Actor.from_request(request),
            reason=body.reason,
        )
        task = selectors.task_of(agent=None, agent_name=child.agent.name, task_id=child.task_id)
        return Response(TaskOut.of(task).model_dump(), status=http.HTTP_201_CREATED)


class HeartbeatView(JsonOnlyView):
    permission_classes = [IsAgent]

    @extend_schema(
        operation_id="task_heartbeat",
        summary="The task is alive (agents): clears its stale mark; creates the task on first use",
        request=None,
        responses=answers({200: HeartbeatOut}, 400, 403, 404, 409, 413),
        examples=[
            OpenApiExample(
                "Alive",
                value={
                    "task_id": "inbox-2026-11-22",
                    "status": "running",
                    "last_heartbeat_at": "2026-11-22T09:01:00Z",
                },
                response_only=True,
            )
        ],
    )
    def post(self, request: Request, task_id: str) -> Response:
        at = services.heartbeat(agent=_agent(request), task_id=_task_id(task_id))
        alive = HeartbeatOut.model_construct(task_id=task_id, status="running", last_heartbeat_at=at)
        return Response(alive.model_dump())


class CompleteView(APIView):
    permission_classes = [AgentOrOperator]

    @extend_schema(
        operation_id="complete_task",
        summary="End a running task: succeeded, failed or abandoned",
        description="Compare-and-set from running: a task that already ended otherwise is a 409; the same "
        "completion sent again answers 200 with `changed: false`. Operators must give a reason (audited).",
        parameters=[AGENT_PARAMETER],
        request=CompleteIn,
        responses=answers({200: CompletedTaskOut}, 400, 403, 404, 409, 413, 415),
        examples=[
            OpenApiExample("Done", value={"status": "succeeded"}, request_only=True),
            OpenApiExample(
                "An operator gives up on it",
                value={"status": "abandoned", "reason": "the customer cancelled the job"},
                request_only=True,
            ),
            OpenApiExample(
                "The task after",
                value={
                    **TASK_EXAMPLE,
                    "status": "succeeded",
                    "finished_at": "2026-11-22T09:05:00Z",
                    "changed": True,
                },
                response_only=True,
            ),
        ],
    )
    def post(self, request: Request, task_id: str) -> Response:
        body = parse(_COMPLETE, _object(request))
        task, changed = services.complete(
            task=_task(request, task_id),
            status=body.status,
            reason=body.reason,
            actor=Actor.from_request(request),
        )
        done = selectors.task_of(agent=None, agent_name=task.agent.name, task_id=task.task_id)
        return Response(CompletedTaskOut.of_completion(done, changed).model_dump())

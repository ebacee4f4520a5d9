"""The transactions API (sagas). Views parse input, call one service or selector, and serialize the answer."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any, Literal

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, extend_schema
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    model_validator,
)
from rest_framework import serializers, status
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.access.permissions import AgentOrOperator, IsAuthenticatedPrincipal
from core.api.errors import InvalidInput
from core.api.pagination import Pagination
from core.api.validation import parse
from core.audit.services import Actor
from recovery.sagas import selectors, services
from recovery.sagas.models import Transaction

Name = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]


class ReadOrReport(BasePermission):
    """Reads for every principal; writes for agents and operators (viewers only look)."""

    message = AgentOrOperator.message

    def has_permission(self, request: Any, view: Any) -> bool:
        if request.method in SAFE_METHODS:
            return IsAuthenticatedPrincipal().has_permission(request, view)
        return AgentOrOperator().has_permission(request, view)


# --- Input ---------------------------------------------------------------------------------------------------


class TransactionIn(BaseModel):
    """A transaction to open: a name, optionally the agent's task it belongs to, and a deadline."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    task_id: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        default=None, description="The agent's own task id (see /tasks); 404 if unknown."
    )
    deadline_s: float | None = Field(
        default=None, gt=0, description="Seconds from now; past it an open transaction is rolled back."
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


_TRANSACTION = TypeAdapter(TransactionIn)
_STEP = TypeAdapter(StepIn)
_ROLLBACK = TypeAdapter(RollbackIn)
_COMPENSATIONS: dict[str, TypeAdapter[Any]] = {
    "http": TypeAdapter(HttpCompensationIn),
    "task": TypeAdapter(TaskCompensationIn),
    "none": TypeAdapter(NoCompensationIn),
}


def _body(request: Request) -> dict[str, Any] | None:
    return request.data if isinstance(request.data, dict) else None


def parse_compensation(data: dict[str, Any]) -> services.Compensation:
    """The shape by kind (a 400 naming compensation.task.name, ...), then what only the server can check: the
    outbound allowlist, the task registry."""
    adapter = _COMPENSATIONS.get(str(data.get("kind")))
    if adapter is None:
        raise InvalidInput("must be one of http, task, none", field="compensation.kind")
    item = parse(adapter, data, prefix="compensation")
    return services.validate_compensation(item.model_dump())


class TransactionFilterSerializer(serializers.Serializer[Any]):
    status = serializers.ChoiceField(choices=Transaction.Status.choices, required=False)
    name = serializers.CharField(required=False, max_length=200, help_text="Part of the name.")
    task_id = serializers.CharField(required=False, max_length=200)
    needs_human = serializers.BooleanField(required=False, allow_null=True, default=None)
    since = serializers.DateTimeField(required=False, help_text="Opened at or after.")


# --- Examples ------------------------------------------------------------------------------------------------

TXN_ID = "6f1c2d3e-4a5b-4c6d-8e7f-901a2b3c4d5e"
HTTP_COMPENSATION = {
    "kind": "http",
    "request": {
        "method": "POST",
        "url": "https://billing.internal.example/refunds",
        "headers": {"Authorization": "Bearer sk-live-..."},
        "body": {"charge": "ch_123"},
        "success_statuses": [200, 201, 409],
        "timeout_s": 10,
    },
}
ATTEMPT_EXAMPLE = {
    "number": 1,
    "outcome": "success",
    "status_code": 201,
    "error_class": "",
    "kind": "",
    "error_type": "",
    "message": "",
    "duration_ms": 84.2,
    "task_id": "0b7f4f0e-2f7e-4a57-9a36-0d8f4c1e2a77",
    "started_at": "2026-11-22T09:05:00Z",
    "finished_at": "2026-11-22T09:05:00.084Z",
}
STEP_EXAMPLE = {
    "seq": 2,
    "name": "charge the card",
    "idempotency_key": "order-881/charge",
    "compensation": {
        "kind": "http",
        "request": {**HTTP_COMPENSATION["request"], "headers": {"Authorization": "[redacted]"}},  # type: ignore[dict-item]
    },
    "policy": None,
    "status": "compensated",
    "attempts": 1,
    "last_error": None,
    "created_at": "2026-11-22T09:01:00Z",
    "compensated_at": "2026-11-22T09:05:00.084Z",
    "compensation_attempts": [ATTEMPT_EXAMPLE],
}
TXN_EXAMPLE = {
    "id": TXN_ID,
    "name": "order-881",
    "status": "rolled_back",
    "agent": "checkout-agent",
    "created_by": None,
    "task_id": "order-881",
    "deadline_at": "2026-11-22T10:00:00Z",
    "rollback_reason": "payment provider refused the order",
    "needs_human": False,
    "created_at": "2026-11-22T09:00:00Z",
    "updated_at": "2026-11-22T09:05:01Z",
    "finished_at": "2026-11-22T09:05:01Z",
}
OPEN_EXAMPLE = {
    **TXN_EXAMPLE,
    "status": "open",
    "rollback_reason": "",
    "finished_at": None,
    "updated_at": "2026-11-22T09:00:00Z",
    "step_count": 0,
}
ROLLING_BACK_EXAMPLE = {
    **OPEN_EXAMPLE,
    "status": "rolling_back",
    "rollback_reason": "payment refused",
    "step_count": 3,
}


# --- Views ---------------------------------------------------------------------------------------------------


class TransactionListView(APIView):
    permission_classes = [ReadOrReport]

    @extend_schema(
        operation_id="list_transactions",
        summary="Transactions, newest first (an agent sees its own)",
        parameters=[TransactionFilterSerializer],
        responses={200: OpenApiTypes.OBJECT},
        examples=[
            OpenApiExample(
                "A page",
                value={
                    "count": 1,
                    "next": None,
                    "previous": None,
                    "results": [{**TXN_EXAMPLE, "step_count": 3}],
                },
                response_only=True,
            )
        ],
    )
    def get(self, request: Request) -> Response:
        filters = TransactionFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        qs = selectors.transactions(request.user, **filters.validated_data)
        paginator = Pagination()
        page = paginator.paginate_queryset(qs, request, view=self) or []
        return paginator.get_paginated_response([selectors.transaction_json(t) for t in page])

    @extend_schema(
        operation_id="open_transaction",
        summary="Open a transaction (a saga): record its steps as they complete, then commit or roll back",
        description="Past its deadline, an open transaction is rolled back automatically (reason "
        "`deadline passed`). `task_id` links the agent's own task (404 if unknown).",
        request=TransactionIn,
        responses={201: OpenApiTypes.OBJECT},
        examples=[
            OpenApiExample(
                "Open",
                value={"name": "order-881", "task_id": "order-881", "deadline_s": 3600},
                request_only=True,
            ),
            OpenApiExample("Opened", value=OPEN_EXAMPLE, response_only=True, status_codes=["201"]),
        ],
    )
    def post(self, request: Request) -> Response:
        body = parse(_TRANSACTION, _body(request))
        deadline = body.deadline_at or timezone.now() + timedelta(seconds=body.deadline_s or 0)
        txn = services.open_transaction(
            actor=Actor.from_request(request),
            name=body.name,
            task_id=body.task_id,
            deadline_at=deadline,
            deadline_field="deadline_at" if body.deadline_at else "deadline_s",
        )
        txn = selectors.transactions(request.user).get(pk=txn.pk)
        return Response(selectors.transaction_json(txn), status=status.HTTP_201_CREATED)


class TransactionDetailView(APIView):
    @extend_schema(
        operation_id="get_transaction",
        summary="A transaction with every step and each step's compensation attempts",
        description="Secret headers of HTTP compensations (Authorization, cookies, API keys, ...) are hidden.",
        responses={200: OpenApiTypes.OBJECT},
        examples=[
            OpenApiExample("Rolled back", value={**TXN_EXAMPLE, "steps": [STEP_EXAMPLE]}, response_only=True)
        ],
    )
    def get(self, request: Request, pk: uuid.UUID) -> Response:
        txn = selectors.get_for(request.user, pk)
        return Response(selectors.transaction_json(selectors.with_history(txn.pk), steps=True))


class StepsView(APIView):
    permission_classes = [AgentOrOperator]

    @extend_schema(
        operation_id="record_step",
        summary="Record a completed step and its compensation",
        description="Only while the transaction is open (409 otherwise). The compensation is checked now: an "
        "HTTP request against the outbound allowlist, a task against the registered tasks (400 naming the "
        "field). The same `idempotency_key` with the same step answers the stored step (200); with a "
        "different step, 409.",
        request=StepIn,
        responses={201: OpenApiTypes.OBJECT, 200: OpenApiTypes.OBJECT},
        examples=[
            OpenApiExample(
                "An HTTP compensation",
                value={
                    "name": "charge the card",
                    "idempotency_key": "order-881/charge",
                    "compensation": HTTP_COMPENSATION,
                },
                request_only=True,
            ),
            OpenApiExample(
                "A task compensation",
                value={
                    "name": "reserve stock",
                    "idempotency_key": "order-881/stock",
                    "compensation": {
                        "kind": "task",
                        "task": {
                            "name": "shop.tasks.release_stock",
                            "args": ["sku-42"],
                            "kwargs": {"count": 1},
                        },
                    },
                    "policy": "transient",
                },
                request_only=True,
            ),
            OpenApiExample(
                "Nothing to undo",
                value={
                    "name": "read the cart",
                    "idempotency_key": "order-881/cart",
                    "compensation": {"kind": "none"},
                },
                request_only=True,
            ),
            OpenApiExample(
                "Recorded",
                value={
                    **STEP_EXAMPLE,
                    "status": "done",
                    "attempts": 0,
                    "compensated_at": None,
                    "compensation_attempts": [],
                },
                response_only=True,
                status_codes=["201"],
            ),
        ],
    )
    def post(self, request: Request, pk: uuid.UUID) -> Response:
        txn = selectors.get_for(request.user, pk)
        body = parse(_STEP, _body(request))
        step, created = services.record_step(
            transaction_id=txn.pk,
            name=body.name,
            idempotency_key=body.idempotency_key,
            compensation=parse_compensation(body.compensation),
            policy_name=body.policy,
        )
        return Response(
            selectors.step_json(step), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class CommitView(APIView):
    permission_classes = [AgentOrOperator]

    @extend_schema(
        operation_id="commit_transaction",
        summary="Commit: the steps stand, nothing will be compensated",
        description="Only an open transaction (409 otherwise); committing a committed one again answers it.",
        request=None,
        responses={200: OpenApiTypes.OBJECT},
        examples=[
            OpenApiExample(
                "Committed",
                value={
                    **OPEN_EXAMPLE,
                    "status": "committed",
                    "finished_at": "2026-11-22T09:02:00Z",
                    "step_count": 3,
                },
                response_only=True,
            )
        ],
    )
    def post(self, request: Request, pk: uuid.UUID) -> Response:
        txn = selectors.get_for(request.user, pk)
        services.commit(transaction_id=txn.pk, actor=Actor.from_request(request))
        return Response(selectors.transaction_json(selectors.transactions(request.user).get(pk=txn.pk)))


class RollbackView(APIView):
    permission_classes = [AgentOrOperator]

    @extend_schema(
        operation_id="roll_back_transaction",
        summary="Roll back: workers run the compensations, newest step first",
        description="202 while the rollback runs (a second request starts nothing and answers the current "
        "state), 200 once it has ended (`rolled_back`, or `rollback_failed` with `needs_human`), 409 for a "
        "committed transaction. Each compensation is retried by its policy and sent with its idempotency key; "
        "follow it with `GET /transactions/{id}`.",
        request=RollbackIn,
        responses={202: OpenApiTypes.OBJECT, 200: OpenApiTypes.OBJECT},
        examples=[
            OpenApiExample("Why", value={"reason": "payment refused"}, request_only=True),
            OpenApiExample(
                "Rolling back", value=ROLLING_BACK_EXAMPLE, response_only=True, status_codes=["202"]
            ),
        ],
    )
    def post(self, request: Request, pk: uuid.UUID) -> Response:
        txn = selectors.get_for(request.user, pk)
        body = parse(_ROLLBACK, _body(request))
        services.request_rollback(
            transaction_id=txn.pk, reason=body.reason, actor=Actor.from_request(request)
        )
        current = selectors.transactions(request.user).get(pk=txn.pk)
        running = current.status == Transaction.Status.ROLLING_BACK
        return Response(
            selectors.transaction_json(current),
            status=status.HTTP_202_ACCEPTED if running else status.HTTP_200_OK,
        )

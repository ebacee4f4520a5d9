"""The transactions API (sagas). Views parse input, call one service or selector, and serialize the answer."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from pydantic import TypeAdapter
from rest_framework import status
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.access.permissions import AgentOrOperator, IsAuthenticatedPrincipal
from core.api.errors import InvalidInput
from core.api.pagination import Pagination
from core.api.schemas import answers
from core.api.validation import parse
from core.audit.services import Actor
from recovery.sagas import selectors, services
from recovery.sagas.schemas import (
    TRANSACTION_STATUSES,
    HttpCompensationIn,
    NoCompensationIn,
    RollbackIn,
    StepIn,
    StepOut,
    TaskCompensationIn,
    TransactionDetailOut,
    TransactionIn,
    TransactionOut,
    TransactionPage,
    TransactionQuery,
)


class ReadOrReport(BasePermission):
    """Reads for every principal; writes for agents and operators (viewers only look)."""

    message = AgentOrOperator.message

    def has_permission(self, request: Request, view: APIView) -> bool:
        if request.method in SAFE_METHODS:
            return IsAuthenticatedPrincipal().has_permission(request, view)
        return AgentOrOperator().has_permission(request, view)


_TRANSACTION = TypeAdapter(TransactionIn)
_STEP = TypeAdapter(StepIn)
_ROLLBACK = TypeAdapter(RollbackIn)
_QUERY = TypeAdapter(TransactionQuery)
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


# --- Examples ------------------------------------------------------------------------------------------------

TXN_ID = "6f1c2d3e-4a5b-4c6d-8e7f-901a2b3c4d5e"
HTTP_REQUEST: dict[str, Any] = {
    "method": "POST",
    "url": "https://billing.internal.example/refunds",
    "headers": {"Authorization": "Bearer sk-live-..."},
    "body": {"charge": "ch_123"},
    "success_statuses": [200, 201, 409],
    "timeout_s": 10,
}
HTTP_COMPENSATION = {"kind": "http", "request": HTTP_REQUEST}
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
        "request": {**HTTP_REQUEST, "headers": {"Authorization": "[redacted]"}},
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
        parameters=[
            OpenApiParameter("status", str, enum=list(TRANSACTION_STATUSES)),
            OpenApiParameter("name", str, description="Part of the name."),
            OpenApiParameter("task_id", str, description="The agent's task it belongs to."),
            OpenApiParameter(
                "needs_human",
                bool,
                description="Only failed rollbacks waiting for a human (true) or not (false).",
            ),
            OpenApiParameter(
                "since",
                str,
                description="Opened at or after this date and time (ISO 8601).",
                examples=[OpenApiExample("A date and time", value="2026-11-22T09:00:00Z")],
            ),
        ],
        responses=answers({200: TransactionPage}, 400, 404),
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
        query = parse(_QUERY, {k: v for k, v in request.query_params.dict().items() if v})
        qs = selectors.transactions(
            request.user,
            status=query.status,
            name=query.name,
            task_id=query.task_id,
            needs_human=query.needs_human,
            since=query.since,
        )
        paginator = Pagination()
        page = paginator.paginate_queryset(qs, request, view=self) or []
        return paginator.get_paginated_response([TransactionOut.of(t).model_dump() for t in page])

    @extend_schema(
        operation_id="open_transaction",
        summary="Open a transaction (a saga): record its steps as they complete, then commit or roll back",
        description="Past its deadline, an open transaction is rolled back automatically (reason "
        "`deadline passed`). `task_id` links the agent's own task (404 if unknown).",
        request=TransactionIn,
        responses=answers({201: TransactionOut}, 400, 403, 404, 413, 415),
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
        opened = TransactionOut.of(selectors.listed(request.user, txn.pk))
        return Response(opened.model_dump(), status=status.HTTP_201_CREATED)


class TransactionDetailView(APIView):
    @extend_schema(
        operation_id="get_transaction",
        summary="A transaction with every step and each step's compensation attempts",
        description="Secret headers of HTTP compensations (Authorization, cookies, API keys, ...) are hidden.",
        responses=answers({200: TransactionDetailOut}, 404),
        examples=[
            OpenApiExample("Rolled back", value={**TXN_EXAMPLE, "steps": [STEP_EXAMPLE]}, response_only=True)
        ],
    )
    def get(self, request: Request, pk: uuid.UUID) -> Response:
        txn = selectors.get_for(request.user, pk)
        return Response(TransactionDetailOut.of(selectors.with_history(txn.pk)).model_dump())


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
        responses=answers({201: StepOut, 200: StepOut}, 400, 403, 404, 409, 413, 415),
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
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(StepOut.of(step).model_dump(), status=code)


class CommitView(APIView):
    permission_classes = [AgentOrOperator]

    @extend_schema(
        operation_id="commit_transaction",
        summary="Commit: the steps stand, nothing will be compensated",
        description="Only an open transaction (409 otherwise); committing a committed one again answers it.",
        request=None,
        responses=answers({200: TransactionOut}, 403, 404, 409, 413),
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
        return Response(TransactionOut.of(selectors.listed(request.user, txn.pk)).model_dump())


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
        responses=answers({202: TransactionOut, 200: TransactionOut}, 400, 403, 404, 409, 413, 415),
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
        current = TransactionOut.of(selectors.listed(request.user, txn.pk))
        running = current.status == "rolling_back"
        return Response(
            current.model_dump(), status=status.HTTP_202_ACCEPTED if running else status.HTTP_200_OK
        )

"""The API of server-side retries (retry_operation). Views parse input, call one service or selector, and
serialize the answer (always through selectors.job_json, which hides secrets)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from pydantic import TypeAdapter
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.access.permissions import AgentOrOperator, IsAuthenticatedPrincipal, IsOperator
from core.api.pagination import Pagination
from core.api.schemas import PAGE_PARAMETERS, answers
from core.api.validation import parse
from core.audit.services import Actor
from recovery.retries import selectors, services
from recovery.retries.schemas import (
    JOB_STATES,
    ReasonIn,
    RetryJobDetailOut,
    RetryJobIn,
    RetryJobOut,
    RetryJobPage,
    RetryQuery,
)

_JOB_IN = TypeAdapter(RetryJobIn)
_REASON = TypeAdapter(ReasonIn)
_QUERY = TypeAdapter(RetryQuery)

HTTP_EXAMPLE_IN = {
    "service": "billing-api",
    "operation": "create_invoice",
    "kind": "http",
    "request": {
        "method": "POST",
        "url": "https://billing.internal.example/v1/invoices",
        "headers": {"Authorization": "Bearer sk-live-...", "Content-Type": "application/json"},
        "body": {"customer": "c_123", "amount": 4200},
        "success_statuses": [200, 201],
        "timeout_s": 10,
    },
    "idempotency_key": "invoice-c_123-2026-11",
}
TASK_EXAMPLE_IN = {
    "service": "reports",
    "operation": "rebuild",
    "kind": "task",
    "task": {"name": "recovery.demo_tasks.flaky", "args": [], "kwargs": {"key": "demo-1", "failures": 2}},
    "idempotency_key": "rebuild-2026-11-22",
    "policy": "transient",
}
ATTEMPT_EXAMPLES = [
    {
        "number": 1,
        "outcome": "failure",
        "status_code": 503,
        "error_class": "external_service",
        "kind": "service_unavailable",
        "severity": "high",
        "error_type": "HTTPStatusError",
        "message": "HTTP 503 Service Unavailable",
        "duration_ms": 41.2,
        "task_id": "5b0c1f0e9d8a4f4e8e6f3a2b1c0d9e8f",
        "started_at": "2026-11-22T09:00:00Z",
        "finished_at": "2026-11-22T09:00:00.041Z",
    },
    {
        "number": 2,
        "outcome": "success",
        "status_code": 201,
        "error_class": None,
        "kind": None,
        "severity": None,
        "error_type": None,
        "message": None,
        "duration_ms": 38.0,
        "task_id": "9e8f5b0c1f0e9d8a4f4e8e6f3a2b1c0d",
        "started_at": "2026-11-22T09:00:01.050Z",
        "finished_at": "2026-11-22T09:00:01.088Z",
    },
]
JOB_EXAMPLE: dict[str, Any] = {
    "id": "0d5c3a4e-8f1b-4c2d-9e7a-6b5c4d3e2f1a",
    "service": "billing-api",
    "operation": "create_invoice",
    "kind": "http",
    "request": {
        "method": "POST",
        "url": "https://billing.internal.example/v1/invoices",
        "headers": {"Authorization": "[redacted]", "Content-Type": "application/json"},
        "body": {"customer": "c_123", "amount": 4200},
        "success_statuses": [200, 201],
        "timeout_s": 10.0,
    },
    "task": None,
    "idempotency_key": "invoice-c_123-2026-11",
    "policy": {
        "id": 1,
        "name": "global default",
        "strategy": "exponential",
        "max_attempts": 3,
        "base_delay_s": 1.0,
        "multiplier": 2.0,
        "max_delay_s": 16.0,
        "deadline_s": None,
        "honour_retry_after": True,
        "retry_on": ["transient", "rate_limit", "resource", "external_service"],
    },
    "state": "succeeded",
    "attempts": 2,
    "next_attempt_at": None,
    "deadline_at": "2026-11-23T09:00:00Z",
    "needs_human": False,
    "last_error": None,
    "result": {"status_code": 201, "body": {"id": "inv_42"}},
    "agent": "planner-7",
    "created_by": None,
    "created_at": "2026-11-22T09:00:00Z",
    "updated_at": "2026-11-22T09:00:01.088Z",
    "finished_at": "2026-11-22T09:00:01.088Z",
}
JOB_WITH_ATTEMPTS = {**JOB_EXAMPLE, "attempt_history": ATTEMPT_EXAMPLES}
FAILED_EXAMPLE = {
    **JOB_EXAMPLE,
    "state": "failed",
    "attempts": 1,
    "needs_human": True,
    "result": None,
    "last_error": {
        "attempt": 1,
        "type": "HTTPStatusError",
        "message": "HTTP 400 Bad Request: amount must be positive",
        "status_code": 400,
        "retry_after_s": None,
        "error_class": "validation",
        "severity": "low",
        "kind": "invalid_input",
        "rule": "invalid input (400, 422)",
        "decision": "the policy 'global default' does not retry validation",
        "next_delay_s": None,
    },
}
# The answers with a job's whole history (GET /retries/{id}, cancel, rerun): every one has attempt_history.
FAILED_WITH_ATTEMPTS = {
    **FAILED_EXAMPLE,
    "attempt_history": [
        {
            **ATTEMPT_EXAMPLES[0],
            "status_code": 400,
            "error_class": "validation",
            "kind": "invalid_input",
            "severity": "low",
            "message": "HTTP 400 Bad Request: amount must be positive",
        }
    ],
}
PENDING_WITH_ATTEMPTS = {
    **JOB_EXAMPLE,
    "state": "pending",
    "attempts": 0,
    "finished_at": None,
    "attempt_history": [],
}


def _scope(request: Request) -> selectors.Agent | None:
    """Agents see their own jobs; operators and viewers see every job."""
    return Actor.from_request(request).agent


LIST_PARAMETERS = [
    OpenApiParameter(
        "state",
        str,
        enum=list(JOB_STATES),
        description="Only jobs in this state.",
        examples=[OpenApiExample("Failed", value="failed")],
    ),
    OpenApiParameter("service", str, description="Only jobs of this service."),
    OpenApiParameter(
        "needs_human",
        bool,
        description="Only jobs that ran out of retries (true) or not (false).",
        examples=[OpenApiExample("Waiting for a human", value=True)],
    ),
    *PAGE_PARAMETERS,
]


def _detail(job: selectors.RetryJob) -> dict[str, Any]:
    return RetryJobDetailOut.of_detail(job, selectors.attempts(job)).model_dump()


class RetryListView(APIView):
    def get_permissions(self) -> list[BasePermission]:
        # Reading is for every principal; handing over work is what agents (and operators' scripts) do.
        return [AgentOrOperator()] if self.request.method == "POST" else [IsAuthenticatedPrincipal()]

    @extend_schema(
        operation_id="list_retries",
        summary="Server-side retry jobs, newest first (agents see their own)",
        parameters=LIST_PARAMETERS,
        responses=answers({200: RetryJobPage}, 400, 404),
        examples=[
            OpenApiExample(
                "A page",
                value={"count": 2, "next": None, "previous": None, "results": [JOB_EXAMPLE, FAILED_EXAMPLE]},
                response_only=True,
            )
        ],
    )
    def get(self, request: Request) -> Response:
        query = parse(_QUERY, {k: v for k, v in request.query_params.dict().items() if v})
        qs = selectors.jobs(
            agent=_scope(request), state=query.state, service=query.service, needs_human=query.needs_human
        )
        paginator = Pagination()
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response([RetryJobOut.of(j).model_dump() for j in page or []])

    @extend_schema(
        operation_id="retry_operation",
        summary="Hand an operation to Rebound to run and retry on its workers",
        description="An HTTP request (to an allowlisted host: `OUTBOUND_ALLOWED_HOSTS`) or a registered Celery "
        "task, with an idempotency key and optionally a policy's name. Answers 201 with the new job, or 200 "
        "with the existing one when the same agent sends the same key and body again; the same key with "
        "another body is a 409. Every attempt asks the service's breaker first and counts into it after. "
        "Secret headers are stored to be sent and never shown.",
        request=RetryJobIn,
        responses=answers({201: RetryJobOut, 200: RetryJobOut}, 400, 403, 404, 409, 413, 415),
        examples=[
            OpenApiExample("An HTTP request", value=HTTP_EXAMPLE_IN, request_only=True),
            OpenApiExample("A registered task", value=TASK_EXAMPLE_IN, request_only=True),
            OpenApiExample(
                "The new job",
                value={**JOB_EXAMPLE, "state": "pending", "attempts": 0, "result": None, "finished_at": None},
                response_only=True,
                status_codes=["201"],
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        body = parse(_JOB_IN, request.data if isinstance(request.data, dict) else None)
        new = services.NewJob.of(body)
        job, created = services.create_job(new, actor=Actor.from_request(request))
        return Response(RetryJobOut.of(job).model_dump(), status=201 if created else 200)


class RetryDetailView(APIView):
    @extend_schema(
        operation_id="get_retry",
        summary="One retry job with every attempt",
        responses=answers({200: RetryJobDetailOut}, 404),
        examples=[
            OpenApiExample("Succeeded on the second attempt", value=JOB_WITH_ATTEMPTS, response_only=True),
            OpenApiExample("Waiting for a human", value=FAILED_WITH_ATTEMPTS, response_only=True),
        ],
    )
    def get(self, request: Request, job_id: str) -> Response:
        job = selectors.job(job_id, agent=_scope(request))
        return Response(_detail(job))


REASON_EXAMPLE = OpenApiExample(
    "Why", value={"reason": "the provider fixed the outage (INC-42)"}, request_only=True
)


class RetryCancelView(APIView):
    permission_classes = [IsOperator]

    @extend_schema(
        operation_id="cancel_retry",
        summary="Cancel a pending or running job (operators; audited)",
        description="A call already under way finishes and its attempt is recorded, but no attempt follows. "
        "A job in another state is a 409.",
        request=ReasonIn,
        responses=answers({200: RetryJobDetailOut}, 400, 403, 404, 409, 413, 415),
        examples=[
            REASON_EXAMPLE,
            OpenApiExample(
                "The job after",
                value={**PENDING_WITH_ATTEMPTS, "state": "cancelled", "finished_at": "2026-11-22T09:00:05Z"},
                response_only=True,
            ),
        ],
    )
    def post(self, request: Request, job_id: str) -> Response:
        body = parse(_REASON, request.data if isinstance(request.data, dict) else None)
        job = services.cancel_job(job_id=job_id, actor=Actor.from_request(request), reason=body.reason)
        return Response(_detail(job))


class RetryRerunView(APIView):
    permission_classes = [IsOperator]

    @extend_schema(
        operation_id="rerun_retry",
        summary="Run a failed or cancelled job again (operators; audited)",
        description="The job returns to pending with a new fence and a fresh run of its policy's attempts; "
        "earlier attempts stay and numbering continues. A job in another state is a 409.",
        request=ReasonIn,
        responses=answers({200: RetryJobDetailOut}, 400, 403, 404, 409, 413, 415),
        examples=[
            REASON_EXAMPLE,
            OpenApiExample(
                "The job after",
                value={**FAILED_WITH_ATTEMPTS, "state": "pending", "needs_human": False, "finished_at": None},
                response_only=True,
            ),
        ],
    )
    def post(self, request: Request, job_id: str) -> Response:
        body = parse(_REASON, request.data if isinstance(request.data, dict) else None)
        job = services.rerun_job(job_id=job_id, actor=Actor.from_request(request), reason=body.reason)
        return Response(_detail(job))

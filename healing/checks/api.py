"""The health-check API: checks (every principal reads; operators write, audited), an operator's run now, a
heartbeat's ping (agent keys and operators), and a check's results. Views parse input, call one service or
selector, and shape the answer."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from pydantic import TypeAdapter
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.access.permissions import AgentOrOperator, IsOperator, ReadOrOperator
from core.api.errors import InvalidInput
from core.api.pagination import Pagination
from core.api.schemas import PAGE_PARAMETERS, answers, query_parameters
from core.api.validation import parse
from core.audit.services import Actor
from core.slugs import SLUG
from healing.checks import selectors, services
from healing.checks.schemas import (
    CHECK_IN_BY_KIND,
    CheckInBase,
    HealthCheckIn,
    HealthCheckOut,
    HealthCheckPage,
    HealthCheckPatchIn,
    HealthCheckQuery,
    HealthPingIn,
    HealthResultOut,
    HealthResultPage,
    HealthRunOut,
    KindIn,
)
from recovery.errors.schemas import ReasonIn

_KIND = TypeAdapter(KindIn)
_CREATE = {kind: TypeAdapter(model) for kind, model in CHECK_IN_BY_KIND.items()}
_PATCH = TypeAdapter(HealthCheckPatchIn)
_REASON = TypeAdapter(ReasonIn)
_PING = TypeAdapter(HealthPingIn)
_QUERY = TypeAdapter(HealthCheckQuery)

NAME_PATH = OpenApiParameter(
    "name",
    {"type": "string", "pattern": SLUG, "maxLength": 100},
    OpenApiParameter.PATH,
    description="The check's name: a lower-case slug.",
    examples=[OpenApiExample("A check", value="openai-api")],
)

RESULT_EXAMPLE: dict[str, Any] = {
    "id": 912,
    "ok": False,
    "latency_ms": 5003.2,
    "status_code": None,
    "error": "httpx.ReadTimeout: the response did not finish within 5 s",
    "source": "scheduled",
    "due_at": "2026-12-03T09:00:00Z",
    "started_at": "2026-12-03T09:00:00.041Z",
    "created_at": "2026-12-03T09:00:05.044Z",
}
CHECK_EXAMPLE: dict[str, Any] = {
    "id": 3,
    "name": "openai-api",
    "service": "openai",
    "kind": "http",
    "description": "The models endpoint answers.",
    "interval_s": 30.0,
    "timeout_s": 5.0,
    "rise": 2,
    "fall": 3,
    "enabled": True,
    "drives_breaker": True,
    "method": "GET",
    "url": "https://api.openai.com/v1/models",
    "expected_status": [200],
    "body_contains": "",
    "host": "",
    "port": None,
    "queue": "",
    "grace_s": 0.0,
    "state": "unhealthy",
    "consecutive_passes": 0,
    "consecutive_failures": 3,
    "last_result": RESULT_EXAMPLE,
    "next_due_at": "2026-12-03T09:00:30Z",
    "last_ping_at": None,
    "state_changed_at": "2026-12-03T09:00:05.044Z",
    "created_at": "2026-12-01T08:00:00Z",
    "updated_at": "2026-12-01T08:00:00Z",
}
CREATE_EXAMPLES = [
    OpenApiExample(
        "An http check that drives the breaker",
        value={
            "name": "openai-api",
            "service": "openai",
            "kind": "http",
            "url": "https://api.openai.com/v1/models",
            "expected_status": [200],
            "interval_s": 30,
            "timeout_s": 5,
            "drives_breaker": True,
            "reason": "watch the provider between agents' calls",
        },
        request_only=True,
    ),
    OpenApiExample(
        "A heartbeat",
        value={
            "name": "nightly-digest",
            "service": "digest-agent",
            "kind": "heartbeat",
            "interval_s": 86400,
            "grace_s": 3600,
            "reason": "the nightly digest must run",
        },
        request_only=True,
    ),
    OpenApiExample(
        "A celery queue",
        value={
            "name": "default-queue",
            "service": "rebound",
            "kind": "celery",
            "queue": "celery",
            "reason": "x",
        },
        request_only=True,
    ),
    OpenApiExample("The check", value=CHECK_EXAMPLE, response_only=True),
]


def _body(request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise InvalidInput("The body must be a JSON object.", field="body")
    return dict(request.data)


def _check(check: Any) -> dict[str, Any]:
    return HealthCheckOut.of(check, selectors.last_result(check)).model_dump()


class HealthCheckListView(APIView):
    permission_classes = [ReadOrOperator]

    @extend_schema(
        operation_id="list_health_checks",
        summary="Health checks by name, each with its state and newest result",
        parameters=query_parameters(HealthCheckQuery, paged=True),
        responses=answers({200: HealthCheckPage}, 400),
        examples=[
            OpenApiExample(
                "A page",
                value={"count": 1, "next": None, "previous": None, "results": [CHECK_EXAMPLE]},
                response_only=True,
            )
        ],
    )
    def get(self, request: Request) -> Response:
        query = parse(_QUERY, {k: v for k, v in request.query_params.dict().items() if v})
        found = selectors.checks(**query.model_dump(exclude_none=True))
        paginator = Pagination()
        page = paginator.paginate_queryset(found, request, view=self) or []
        return paginator.get_paginated_response([_check(c) for c in page])

    @extend_schema(
        operation_id="create_health_check",
        summary="Add a health check (operators; audited); it runs at once",
        description="The fields of its `kind`: http needs `url` (and takes `method`, `expected_status`, "
        "`body_contains`), tcp `host` and `port`, celery `queue`, heartbeat takes `grace_s`. An http or tcp "
        "target must be allowed by OUTBOUND_ALLOWED_HOSTS. Each problem is a 400 naming its field.",
        request=HealthCheckIn,
        responses=answers(
            {201: HealthCheckOut},
            400,
            403,
            (409, "A check with this name was created by another request meanwhile."),
        ),
        examples=CREATE_EXAMPLES,
    )
    def post(self, request: Request) -> Response:
        data = _body(request)
        body: CheckInBase = parse(_CREATE[parse(_KIND, data).kind], data)
        check = services.create_check(
            data=body.model_dump(exclude={"reason"}), actor=Actor.from_request(request), reason=body.reason
        )
        return Response(_check(check), status=status.HTTP_201_CREATED)


class HealthCheckDetailView(APIView):
    permission_classes = [ReadOrOperator]

    @extend_schema(
        operation_id="get_health_check",
        summary="One health check: settings, state, streaks, newest result, next due time",
        parameters=[NAME_PATH],
        responses=answers({200: HealthCheckOut}, 404),
        examples=[OpenApiExample("A check", value=CHECK_EXAMPLE, response_only=True)],
    )
    def get(self, request: Request, name: str) -> Response:
        return Response(_check(selectors.check_detail(name)))

    @extend_schema(
        operation_id="update_health_check",
        summary="Change a health check (operators; audited); it runs again soon",
        request=HealthCheckPatchIn,
        parameters=[NAME_PATH],
        responses=answers(
            {200: HealthCheckOut}, 400, 403, 404, (409, "Another check took this name meanwhile.")
        ),
        examples=[
            OpenApiExample(
                "Slower, and stricter",
                value={"interval_s": 60, "fall": 2, "reason": "fewer calls to the provider"},
                request_only=True,
            ),
            OpenApiExample("The check after", value=CHECK_EXAMPLE, response_only=True),
        ],
    )
    def patch(self, request: Request, name: str) -> Response:
        check = selectors.get_check(name)
        body = parse(_PATCH, _body(request))
        updated = services.update_check(
            check_id=check.pk,
            data=body.model_dump(exclude={"reason"}, exclude_unset=True),
            actor=Actor.from_request(request),
            reason=body.reason,
        )
        return Response(_check(updated))

    @extend_schema(
        operation_id="delete_health_check",
        summary="Delete a health check with its results (operators; audited)",
        parameters=[
            NAME_PATH,
            OpenApiParameter(
                "reason",
                {"type": "string", "minLength": 1, "maxLength": 2000, "pattern": r"\S"},
                description="Why (required): as this parameter or as `reason` in a JSON body.",
                examples=[OpenApiExample("Why", value="the service was retired")],
            ),
        ],
        request=ReasonIn,
        responses=answers({204: None}, 400, 403, 404),
    )
    def delete(self, request: Request, name: str) -> Response:
        check = selectors.get_check(name)
        body = request.data if isinstance(request.data, dict) else {}
        given = body.get("reason") or request.query_params.get("reason") or ""
        reason = parse(_REASON, {"reason": given}).reason
        services.delete_check(check_id=check.pk, actor=Actor.from_request(request), reason=reason)
        return Response(status=status.HTTP_204_NO_CONTENT)


class RunView(APIView):
    permission_classes = [IsOperator]

    @extend_schema(
        operation_id="run_health_check",
        summary="Run a check now and answer its result (operators; recorded with source manual)",
        description="The probe runs within the request (at most the check's timeout); the result counts toward "
        "the check's state like any other. A heartbeat check answers whether its last ping came in time and "
        "said ok.",
        request=None,
        parameters=[NAME_PATH],
        responses=answers({200: HealthRunOut}, 403, 404, (409, "The check is disabled.")),
        examples=[
            OpenApiExample(
                "A failing run", value={"result": RESULT_EXAMPLE, "check": CHECK_EXAMPLE}, response_only=True
            )
        ],
    )
    def post(self, request: Request, name: str) -> Response:
        check = selectors.get_check(name)
        recorded = services.run_now(check_id=check.pk, actor=Actor.from_request(request))
        return Response(HealthRunOut.of(recorded).model_dump())


class PingView(APIView):
    permission_classes = [AgentOrOperator]

    @extend_schema(
        operation_id="ping_health_check",
        summary="A heartbeat check's ping (agent keys and operators)",
        description="Records a result (ok, or with `status: fail` a failure with the message) and moves the "
        "check's silence deadline to interval_s + grace_s from now. The body is optional.",
        request=HealthPingIn,
        parameters=[NAME_PATH],
        responses=answers(
            {200: HealthRunOut},
            400,
            403,
            404,
            (409, "Not a heartbeat check (Rebound runs the other kinds itself), or the check is disabled."),
        ),
        examples=[
            OpenApiExample("Alive", value={}, request_only=True),
            OpenApiExample(
                "A failure", value={"status": "fail", "message": "backup: disk full"}, request_only=True
            ),
            OpenApiExample(
                "The ping recorded",
                value={
                    "result": {
                        **RESULT_EXAMPLE,
                        "ok": True,
                        "latency_ms": None,
                        "error": "",
                        "source": "ping",
                        "due_at": None,
                    },
                    "check": {
                        **CHECK_EXAMPLE,
                        "name": "nightly-digest",
                        "kind": "heartbeat",
                        "url": "",
                        "expected_status": [],
                        "state": "healthy",
                        "consecutive_passes": 2,
                        "consecutive_failures": 0,
                    },
                },
                response_only=True,
            ),
        ],
    )
    def post(self, request: Request, name: str) -> Response:
        check = selectors.get_check(name)
        data = request.data
        # No body at all is an ok ping; a body must be an object.
        body = parse(_PING, {} if data is None or (isinstance(data, dict) and not data) else data)
        recorded = services.ping(
            check_id=check.pk,
            ok=body.status == "ok",
            message=body.message,
            actor=Actor.from_request(request),
        )
        return Response(HealthRunOut.of(recorded).model_dump())


class ResultListView(APIView):
    @extend_schema(
        operation_id="list_health_check_results",
        summary="A check's results, newest first",
        parameters=[NAME_PATH, *PAGE_PARAMETERS],
        responses=answers({200: HealthResultPage}, 400, 404),
        examples=[
            OpenApiExample(
                "A page",
                value={"count": 1, "next": None, "previous": None, "results": [RESULT_EXAMPLE]},
                response_only=True,
            )
        ],
    )
    def get(self, request: Request, name: str) -> Response:
        paginator = Pagination()
        found = selectors.results(selectors.get_check(name))
        page = paginator.paginate_queryset(found, request, view=self) or []
        return paginator.get_paginated_response([HealthResultOut.of(r).model_dump() for r in page])

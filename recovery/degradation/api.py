"""The degradation API: the level in force and what to skip (every principal), forcing and clearing a level
(operators; audited), and the history of changes. Views parse input, call one service or selector, and answer."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from pydantic import TypeAdapter
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.access.permissions import IsOperator, ReadOrOperator
from core.api.pagination import Pagination
from core.api.schemas import PAGE_PARAMETERS, answers
from core.api.validation import parse
from core.audit.services import Actor
from core.slugs import SLUG
from recovery.breakers import selectors as breaker_selectors
from recovery.degradation import selectors
from recovery.degradation import services as degradation_services
from recovery.degradation.schemas import (
    SCOPE,
    ClearIn,
    DegradationEventOut,
    DegradationEventPage,
    DegradationEventQuery,
    DegradationOut,
    ForceIn,
    OverviewOut,
    ServiceLevelOut,
    StateOut,
)

_FORCE = TypeAdapter(ForceIn)
_CLEAR = TypeAdapter(ClearIn)
_EVENTS = TypeAdapter(DegradationEventQuery)

SINCE = "2026-11-22T09:00:00Z"
REASON = "rule “essential breaker open” (degraded): 1 essential breaker(s) open (openai), threshold 1"
OVERVIEW_EXAMPLE = {
    "scope": "*",
    "level": "degraded",
    "source": "automatic",
    "reason": REASON,
    "since": SINCE,
    "until": None,
    "services": [
        {
            "scope": "openai",
            "level": "degraded",
            "source": "automatic",
            "reason": "rule “service breaker open” (degraded): the breaker of openai is open, threshold 1",
            "since": SINCE,
            "until": None,
        }
    ],
    "skip": [
        {"service": "web-search", "criticality": "non_critical", "level": "degraded", "skip_from": "degraded"}
    ],
}
SERVICE_EXAMPLE = {
    "service": "web-search",
    "criticality": "non_critical",
    "scope": "*",
    "level": "minimal",
    "source": "operator",
    "reason": "forced to minimal by user:alice: provider incident INC-42",
    "since": SINCE,
    "until": "2026-11-22T12:00:00Z",
    "skip": True,
    "skip_from": "minimal",
}
STATE_EXAMPLE = {
    "scope": "*",
    "level": "minimal",
    "source": "operator",
    "reason": "provider incident INC-42",
    "since": SINCE,
    "until": "2026-11-22T12:00:00Z",
    "automatic": {"level": "degraded", "reason": REASON, "pending_level": None, "pending_since": None},
    "forced": {
        "level": "minimal",
        "reason": "provider incident INC-42",
        "until": "2026-11-22T12:00:00Z",
        "by": "alice",
        "in_force": True,
    },
}


class DegradationView(APIView):
    permission_classes = [ReadOrOperator]

    @extend_schema(
        operation_id="get_degradation",
        summary="The degradation level in force, and which services to skip",
        description="Without `service`: the fleet's level (with its source, reason, since and until), every "
        "service whose own level is not normal, and `skip`: the services agents should skip at the levels in "
        "force, non-critical first. With `service`: that service's level, the worse of the fleet's and its own.",
        parameters=[
            OpenApiParameter(
                "service",
                {"type": "string", "pattern": SLUG, "maxLength": 100},
                description="One service's level instead of the whole picture: the answer is then a "
                "ServiceLevelOut, not an OverviewOut.",
                examples=[OpenApiExample("A service", value="web-search")],
            )
        ],
        responses=answers({200: DegradationOut}, 400, 404),
        examples=[
            OpenApiExample("The fleet", value=OVERVIEW_EXAMPLE, response_only=True),
            OpenApiExample("One service (?service=web-search)", value=SERVICE_EXAMPLE, response_only=True),
        ],
    )
    def get(self, request: Request) -> Response:
        name = request.query_params.get("service")
        if name is not None:
            level = selectors.for_service(breaker_selectors.known_service(name))
            return Response(ServiceLevelOut.of(level).model_dump())
        return Response(OverviewOut.of_overview(selectors.overview()).model_dump())

    @extend_schema(
        operation_id="force_degradation",
        summary="Force a degradation level on the fleet or a service (operators; audited)",
        description="The forced level wins over the automatic one until `expires_at` (or `ttl_s` seconds from "
        "now), or until cleared; `normal` pins the scope at normal. Answers the scope's state.",
        request=ForceIn,
        responses=answers({200: StateOut}, 400, 403, 404, 409, 413, 415),
        examples=[
            OpenApiExample(
                "Minimal for two hours",
                value={"scope": "*", "level": "minimal", "reason": "provider incident INC-42", "ttl_s": 7200},
                request_only=True,
            ),
            OpenApiExample(
                "One service, until a time",
                value={
                    "scope": "web-search",
                    "level": "emergency",
                    "reason": "quota exhausted",
                    "expires_at": "2026-11-22T12:00:00Z",
                },
                request_only=True,
            ),
            OpenApiExample("The state after", value=STATE_EXAMPLE, response_only=True),
        ],
    )
    def post(self, request: Request) -> Response:
        body = parse(_FORCE, request.data if isinstance(request.data, dict) else None)
        degradation_services.force(
            scope=body.scope,
            level=body.level,
            reason=body.reason,
            expires_at=body.ends_at(),
            actor=Actor.from_request(request),
        )
        return Response(StateOut.of_state(selectors.scope_state(body.scope)).model_dump())


class ClearView(APIView):
    permission_classes = [IsOperator]

    @extend_schema(
        operation_id="clear_degradation",
        summary="End an operator's level: the scope returns to its automatic level (operators; audited)",
        request=ClearIn,
        responses=answers({200: StateOut}, 400, 403, 404, 409, 413, 415),
        examples=[
            OpenApiExample(
                "Clear the fleet",
                value={"scope": "*", "reason": "INC-42 resolved"},
                request_only=True,
            ),
            OpenApiExample(
                "The state after",
                value={
                    **STATE_EXAMPLE,
                    "level": "degraded",
                    "source": "automatic",
                    "reason": REASON,
                    "until": None,
                    "forced": None,
                },
                response_only=True,
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        body = parse(_CLEAR, request.data if isinstance(request.data, dict) else None)
        degradation_services.clear(scope=body.scope, reason=body.reason, actor=Actor.from_request(request))
        return Response(StateOut.of_state(selectors.scope_state(body.scope)).model_dump())


EVENT_EXAMPLE = {
    "id": 7,
    "scope": "*",
    "from_level": "normal",
    "to_level": "degraded",
    "source": "automatic",
    "reason": REASON,
    "actor": None,
    "expires_at": None,
    "signals": {
        "essential_breakers_open": 1,
        "breakers_open": 1,
        "errors_per_minute": 4.2,
        "open": ["openai"],
        "essential_open": ["openai"],
        "unknown": [],
        "rules": [
            {
                "rule": "essential breaker open",
                "signal": "essential_breakers_open",
                "value": 1.0,
                "threshold": 1.0,
                "level": "degraded",
            }
        ],
    },
    "created_at": SINCE,
}


class EventListView(APIView):
    @extend_schema(
        operation_id="list_degradation_events",
        summary="Every change of a degradation level, newest first",
        parameters=[
            OpenApiParameter(
                "scope",
                {"type": "string", "pattern": SCOPE, "maxLength": 100},
                description="Only this scope: '*' for the fleet, or a service.",
                examples=[OpenApiExample("The fleet", value="*")],
            ),
            *PAGE_PARAMETERS,
        ],
        responses=answers({200: DegradationEventPage}, 400, 404),
        examples=[
            OpenApiExample(
                "A page",
                value={"count": 1, "next": None, "previous": None, "results": [EVENT_EXAMPLE]},
                response_only=True,
            )
        ],
    )
    def get(self, request: Request) -> Response:
        query = parse(_EVENTS, {k: v for k, v in request.query_params.dict().items() if v})
        paginator = Pagination()
        page = paginator.paginate_queryset(selectors.events(query.scope), request, view=self) or []
        return paginator.get_paginated_response([DegradationEventOut.of(e).model_dump() for e in page])

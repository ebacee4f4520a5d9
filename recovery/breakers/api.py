"""The breaker and service API. Views parse input, call one service or selector, and shape the answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from pydantic import TypeAdapter
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.access.permissions import AgentOrOperator, IsOperator, ReadOrOperator
from core.api import hotlane, idempotency
from core.api.hotlane import Caller
from core.api.negotiation import JsonOnlyView
from core.api.schemas import answers
from core.api.validation import parse
from core.audit.services import Actor
from core.infra.conf import rebound
from core.slugs import SLUG, service_slug
from recovery.breakers import selectors, services, waits
from recovery.breakers.schemas import (
    MAX_ID,
    MAX_WAIT_S,
    OUTCOMES_EXAMPLE,
    SSE_TRANSITION_EVENT,
    BreakerEventsOut,
    BreakerList,
    BreakerOut,
    BreakerSnapshotOut,
    EventsQuery,
    OutcomeAnswer,
    OutcomesReportIn,
    OverrideIn,
    PermitOut,
    PermitOutDict,
    ServiceList,
    ServiceOut,
    ServicePatchIn,
)
from recovery.errors.idempotency import idempotent

_OVERRIDE = TypeAdapter(OverrideIn)
_SERVICE_PATCH = TypeAdapter(ServicePatchIn)
_EVENTS = TypeAdapter(EventsQuery)


# The service a route names: a slug (anything else is a 400 naming `service`).
SERVICE_PATH = OpenApiParameter(
    "service",
    {"type": "string", "pattern": SLUG, "maxLength": 100},
    OpenApiParameter.PATH,
    description="The service's name: a lower-case slug.",
)

PERMIT_EXAMPLES = [
    OpenApiExample(
        "Closed",
        value={
            "service": "openai",
            "allowed": True,
            "state": "closed",
            "retry_after_s": None,
            "permit_id": None,
            "reason": "closed",
        },
        response_only=True,
    ),
    OpenApiExample(
        "Open",
        value={
            "service": "openai",
            "allowed": False,
            "state": "open",
            "retry_after_s": 12.4,
            "permit_id": None,
            "reason": "open",
        },
        response_only=True,
    ),
    OpenApiExample(
        "A half-open trial",
        value={
            "service": "openai",
            "allowed": True,
            "state": "half_open",
            "retry_after_s": None,
            "permit_id": "2f1c9a7e5b3d4c6e8a0b1c2d3e4f5a6b",
            "reason": "half-open: a trial call",
        },
        response_only=True,
    ),
]


class PermitView(JsonOnlyView):
    permission_classes = [AgentOrOperator]

    @extend_schema(
        operation_id="request_permit",
        summary="May I call this service now?",
        description="One Redis round trip. In half-open, at most `half_open_max_calls` trial permits are granted "
        "across the fleet; send the `permit_id` back with the outcome.",
        request=None,
        parameters=[SERVICE_PATH],
        responses=answers({200: PermitOut}, 400, 403, 404),
        examples=PERMIT_EXAMPLES,
    )
    def post(self, request: Request, service: str) -> Response:
        code, body = request_permit(request, service)
        return Response(body, status=code)


def request_permit(request: Caller, service: str) -> tuple[int, PermitOutDict]:
    """POST /breakers/{service}/permit's work and answer, for PermitView and for the hot lane."""
    answer = services.request_permit(service_slug(service), actor=Actor.from_request(request))
    body: PermitOutDict = {  # PermitOut as a plain dict: the hot path
        "service": answer.service,
        "allowed": answer.allowed,
        "state": answer.state,
        "retry_after_s": answer.retry_after_s,
        "permit_id": answer.permit_id,
        "reason": answer.reason,
    }
    return 200, body


# Plain permits (a bearer key) skip the middleware chain and DRF's dispatch (core/api/hotlane.py).
hotlane.route("v1:breaker-permit", PermitView, request_permit, json_body=False, params=("service",))


OUTCOME_ANSWER: dict[str, Any] = {
    "service": "openai",
    "state": "closed",
    "transition": None,
    "error_class": "rate_limit",
    "counted": True,
    "retry_after_capped": False,
}


class OutcomesView(JsonOnlyView):
    permission_classes = [AgentOrOperator]

    @extend_schema(
        operation_id="report_outcomes",
        summary="Report the outcome of one call or a batch",
        description='Send one outcome, a list, or `{"outcomes": [...]}`. Each counts into its service\'s breaker; '
        "a failure's `error` is classified and recorded as in `POST /errors`. Validation and authentication "
        "errors do not count (the caller's fault). All outcomes are validated before any is counted. "
        "`plan_id` names the recovery plan the call followed (the first outcome naming it sets whether it "
        "worked); a success's `result` is kept under `cache_key` for cache fallbacks. A `Retry-After` over "
        "`MAX_RETRY_AFTER_S` (default a day) opens the breaker for that long only, and the answer says so "
        "(`retry_after_capped`). One outcome is answered with one result; a list or a batch with "
        '`{"results": [...]}`, one per outcome in order. With an `Idempotency-Key`, a repeat (a client '
        "retrying after a lost connection) is answered with the first answer and counted once.",
        request=OutcomesReportIn,
        parameters=[idempotency.PARAMETER, idempotency.replayed_header(200)],
        responses=answers(
            {200: OutcomeAnswer},
            400,
            403,
            404,
            idempotency.CONFLICT_IN_FLIGHT,
            413,
            415,
            idempotency.REUSED_KEY,
        ),
        examples=[
            OpenApiExample(
                "A success",
                value={"service": "github-mcp", "operation": "search", "success": True, "duration_ms": 182},
                request_only=True,
            ),
            OpenApiExample(
                "A success after a recovery plan, with a result to cache",
                value={
                    "service": "github-mcp",
                    "operation": "search",
                    "success": True,
                    "duration_ms": 240,
                    "plan_id": "6f1c2a9e-5b3d-4c6e-8a0b-1c2d3e4f5a6b",
                    "cache_key": "repo:rebound is:open",
                    "result": {"total": 12, "titles": ["Breakers flap under load"]},
                },
                request_only=True,
            ),
            OpenApiExample(
                "A failure",
                value={
                    "service": "openai",
                    "success": False,
                    "duration_ms": 950,
                    "error": {"status_code": 429, "headers": {"Retry-After": "20"}},
                },
                request_only=True,
            ),
            OpenApiExample(
                "A batch from the SDK: runs of successes between failures, and what it dropped",
                value=OUTCOMES_EXAMPLE,
                request_only=True,
            ),
            OpenApiExample(
                "Answer",
                value=OUTCOME_ANSWER,
                response_only=True,
            ),
            OpenApiExample(
                "Answer to a list or a batch",
                value={"results": [OUTCOME_ANSWER, {**OUTCOME_ANSWER, "error_class": None}]},
                response_only=True,
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        return idempotent(request, "outcomes", lambda: self._record(request))

    def _record(self, request: Request) -> Response:
        return Response(services.report_outcomes(request.data, actor=Actor.from_request(request)))


BREAKER_EXAMPLE: dict[str, Any] = {
    "service": "openai",
    "criticality": "essential",
    "state": "open",
    "automatic_state": "open",
    "window": {"calls": 0, "failures": 0, "rate": 0.0, "consecutive_failures": 0, "trial_permits_in_use": 0},
    "opened_at": "2026-11-22T09:00:00Z",
    "open_until": "2026-11-22T09:00:30Z",
    "override": None,
    "why": {
        "reason": "failure rate 60% over the last 20 calls (threshold 50%)",
        "from_state": "closed",
        "to_state": "open",
        "at": "2026-11-22T09:00:00Z",
        "window": {
            "calls": 20,
            "failures": 12,
            "rate": 60.0,
            "consecutive": 4,
            "patterns": [
                {
                    "pattern": 12,
                    "error_class": "external_service",
                    "type_name": "",
                    "message_template": "Service Unavailable",
                    "count": 11,
                }
            ],
        },
        "actor": "automatic",
        "actor_name": "",
        "actor_label": "automatic",
    },
    "settings": {
        "failure_rate_threshold": 50.0,
        "window_type": "count",
        "window_size": 20,
        "minimum_calls": 10,
        "consecutive_failures": 5,
        "slow_call_ms": 0,
        "wait_duration_s": 30.0,
        "half_open_max_calls": 3,
        "success_threshold": 2,
        "wait_multiplier": 1.0,
        "max_wait_s": 300.0,
    },
}


def _breaker(view: dict[str, Any]) -> dict[str, Any]:
    """A selector's breaker view, checked against and shaped as BreakerOut."""
    return BreakerOut.model_validate(view).model_dump()


class BreakerListView(APIView):
    @extend_schema(
        operation_id="list_breakers",
        summary="Every breaker: state, window, settings and why",
        responses=answers({200: BreakerList}),
        examples=[OpenApiExample("Breakers", value=[BREAKER_EXAMPLE], response_only=True)],
    )
    def get(self, request: Request) -> Response:
        return Response([_breaker(selectors.breaker_view(s)) for s in selectors.services()])


class BreakerSnapshotView(JsonOnlyView):
    @extend_schema(
        operation_id="breaker_snapshot",
        summary="Every breaker at once, and the id of the last transition before it (SDKs' live views)",
        description="Read the breakers here, then long-poll `/breakers/events?after=<last_event_id>`: no "
        "transition is missed in between (one committed while the states are read comes again as an event). "
        "`server_time` lets a client convert `open_until` to its own clock.",
        responses=answers({200: BreakerSnapshotOut}),
        examples=[
            OpenApiExample(
                "Snapshot",
                value={
                    "last_event_id": 41,
                    "server_time": "2026-11-22T09:00:05Z",
                    "breakers": [BREAKER_EXAMPLE],
                },
                response_only=True,
            )
        ],
    )
    def get(self, request: Request) -> Response:
        # The id before the states: a transition committed in between is delivered again, never lost.
        last = selectors.last_transition_id()
        breakers = [selectors.breaker_view(s) for s in selectors.services()]
        snapshot = BreakerSnapshotOut.model_validate(
            {"last_event_id": last, "server_time": timezone.now(), "breakers": breakers}
        )
        return Response(snapshot.model_dump())


class BreakerDetailView(APIView):
    @extend_schema(
        operation_id="get_breaker",
        summary="One breaker, and why it is in its state",
        parameters=[SERVICE_PATH],
        responses=answers({200: BreakerOut}, 400, 404),
        examples=[OpenApiExample("An open breaker", value=BREAKER_EXAMPLE, response_only=True)],
    )
    def get(self, request: Request, service: str) -> Response:
        return Response(_breaker(selectors.breaker_view(selectors.known_service(service))))


class OverrideView(APIView):
    permission_classes = [IsOperator]

    @extend_schema(
        operation_id="override_breaker",
        summary="Force a breaker open or closed, disable it, or return it to automatic (operators; audited)",
        request=OverrideIn,
        parameters=[SERVICE_PATH],
        responses=answers({200: BreakerOut}, 400, 403, 404, 413, 415),
        examples=[
            OpenApiExample(
                "Force open",
                value={
                    "mode": "forced_open",
                    "reason": "provider incident INC-42",
                    "expires_at": "2026-11-22T12:00:00Z",
                },
                request_only=True,
            ),
            OpenApiExample("The breaker after", value=BREAKER_EXAMPLE, response_only=True),
        ],
    )
    def post(self, request: Request, service: str) -> Response:
        body = parse(_OVERRIDE, request.data if isinstance(request.data, dict) else None)
        updated = services.set_override(
            name=selectors.known_service(service).name,
            mode=body.mode,
            reason=body.reason,
            expires_at=body.expires_at,
            actor=Actor.from_request(request),
        )
        return Response(_breaker(selectors.breaker_view(updated)))


SERVICE_EXAMPLE = {
    "name": "openai",
    "kind": "model_provider",
    "criticality": "essential",
    "description": "",
    **BREAKER_EXAMPLE["settings"],
    "auto_registered": True,
    "override": "auto",
    "override_reason": "",
    "override_until": None,
    "created_at": "2026-11-22T08:00:00Z",
    "updated_at": "2026-11-22T08:00:00Z",
}


def _service(service: object) -> dict[str, Any]:
    return ServiceOut.model_validate(service).model_dump()


class ServiceListView(APIView):
    @extend_schema(
        operation_id="list_services",
        responses=answers({200: ServiceList}),
        examples=[OpenApiExample("Services", value=[SERVICE_EXAMPLE], response_only=True)],
    )
    def get(self, request: Request) -> Response:
        return Response([_service(s) for s in selectors.services()])


class ServiceDetailView(APIView):
    permission_classes = [ReadOrOperator]

    @extend_schema(
        operation_id="get_service",
        parameters=[SERVICE_PATH],
        responses=answers({200: ServiceOut}, 400, 404),
        examples=[OpenApiExample("A service", value=SERVICE_EXAMPLE, response_only=True)],
    )
    def get(self, request: Request, service: str) -> Response:
        return Response(_service(selectors.known_service(service)))

    @extend_schema(
        operation_id="update_service",
        summary="Change criticality and breaker settings (operators; audited; no restart needed)",
        request=ServicePatchIn,
        parameters=[SERVICE_PATH],
        responses=answers({200: ServiceOut}, 400, 403, 404, 413, 415),
        examples=[
            OpenApiExample(
                "Tighten",
                value={
                    "failure_rate_threshold": 30,
                    "window_size": 50,
                    "reason": "flaky since the provider's migration",
                },
                request_only=True,
            )
        ],
    )
    def patch(self, request: Request, service: str) -> Response:
        known = selectors.known_service(service)
        body = parse(_SERVICE_PATCH, request.data if isinstance(request.data, dict) else None)
        updated = services.update_service(
            name=known.name,
            data=body.model_dump(exclude={"reason"}, exclude_unset=True),
            actor=Actor.from_request(request),
            reason=body.reason,
        )
        return Response(_service(updated))


TRANSITION_EXAMPLE = {
    "id": 7,
    "service": "openai",
    "from_state": "closed",
    "to_state": "open",
    "reason": "failure rate 60% over the last 20 calls (threshold 50%)",
    "actor": "automatic",
    "actor_name": "",
    "actor_label": "automatic",
    "window": BREAKER_EXAMPLE["why"]["window"],
    "at": "2026-11-22T09:00:00+00:00",
}

EVENT_PARAMETERS = [
    OpenApiParameter(
        "after",
        {"type": "integer", "minimum": 0, "maximum": MAX_ID},
        description="Only transitions with a larger id (the last you saw); a stream also takes it from "
        "`Last-Event-ID`.",
        examples=[OpenApiExample("From the start", value=0)],
    ),
    OpenApiParameter(
        "wait",
        {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S},
        description="Seconds to wait for the first one (long-poll); the server waits at most "
        "BREAKER_EVENTS_MAX_WAIT_SECONDS (25 by default).",
        examples=[OpenApiExample("Long-poll", value=25)],
    ),
]


def _events_query(request: Request) -> EventsQuery:
    """`after` (or the Last-Event-ID header of a reconnecting stream) and `wait`; blank means not given."""
    given = {
        "after": request.query_params.get("after", request.headers.get("Last-Event-ID")),
        "wait": request.query_params.get("wait"),
    }
    return parse(_EVENTS, {name: value for name, value in given.items() if value not in (None, "")})


class BreakerEventsView(APIView):
    @extend_schema(
        operation_id="breaker_events",
        summary="Breaker transitions after an id, waiting up to `wait` seconds for the first (long-poll)",
        parameters=EVENT_PARAMETERS,
        responses=answers({200: BreakerEventsOut}, 400),
        examples=[
            OpenApiExample(
                "Events",
                value={"events": [TRANSITION_EXAMPLE], "last_id": 7},
                response_only=True,
            )
        ],
    )
    def get(self, request: Request) -> Response:
        query = _events_query(request)
        after = query.after
        wait = min(query.wait, rebound("BREAKER_EVENTS_MAX_WAIT_SECONDS"))
        return Response(waits.events(after, wait))


class EventStreamRenderer(BaseRenderer):
    media_type = "text/event-stream"
    format = "sse"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        return str(data).encode()


class BreakerStreamView(APIView):
    renderer_classes = [EventStreamRenderer, *APIView.renderer_classes]

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        # An error is answered in JSON, as everywhere in the API, not rendered as an event stream.
        if isinstance(response, Response) and response.status_code >= 400:
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)

    @extend_schema(
        operation_id="breaker_stream",
        summary="Breaker transitions as Server-Sent Events (reconnect with Last-Event-ID)",
        description="Each transition is one event, `id: 7`, `event: transition` and `data:` the transition as "
        "JSON (`TransitionOut`), after a first `retry: 1000`; a `: keep-alive` comment while nothing happens. The "
        "stream ends after `BREAKER_STREAM_MAX_SECONDS`: reconnect with `Last-Event-ID` (or `after`).",
        parameters=EVENT_PARAMETERS[:1],
        responses={**answers({}, 400), (200, "text/event-stream"): SSE_TRANSITION_EVENT},
        examples=[
            OpenApiExample(
                "An event",
                response_only=True,
                media_type="text/event-stream",
                value={
                    "id": "7",
                    "event": "transition",
                    "data": '{"id": 7, "service": "openai", "from_state": "closed", "to_state": "open"}',
                },
            )
        ],
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        after = _events_query(request).after
        max_seconds = rebound("BREAKER_STREAM_MAX_SECONDS")

        def events() -> Iterator[str]:
            yield "retry: 1000\n\n"
            for event_id, payload in waits.stream(after, max_seconds):
                yield (
                    f"id: {event_id}\nevent: transition\ndata: {payload}\n\n"
                    if event_id
                    else ": keep-alive\n\n"
                )

        response = StreamingHttpResponse(events(), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response

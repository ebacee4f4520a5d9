"""The escalation API: the review queue (every principal reads; agents only their own), an agent raising an
escalation itself, and the humans' acts on one (reviewers and operators: acknowledge, assign, comment, snooze,
resolve, reopen; audited). Views parse input, call one service or selector, and shape the answer."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from pydantic import BaseModel, TypeAdapter
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.access import roles
from core.access.permissions import AgentOrReviewer, IsAuthenticatedPrincipal, IsReviewer
from core.api.errors import NotFound
from core.api.pagination import Pagination
from core.api.schemas import answers, query_parameters
from core.api.validation import parse
from core.audit.services import Actor
from healing.escalations import selectors, services
from healing.escalations.schemas import (
    EscalationAssignIn,
    EscalationCommentIn,
    EscalationDetailOut,
    EscalationIn,
    EscalationOut,
    EscalationPage,
    EscalationQuery,
    EscalationRaisedOut,
    EscalationReopenIn,
    EscalationResolveIn,
    EscalationSnoozeIn,
)

_RAISE = TypeAdapter(EscalationIn)
_ASSIGN = TypeAdapter(EscalationAssignIn)
_COMMENT = TypeAdapter(EscalationCommentIn)
_SNOOZE = TypeAdapter(EscalationSnoozeIn)
_RESOLVE = TypeAdapter(EscalationResolveIn)
_REOPEN = TypeAdapter(EscalationReopenIn)
_QUERY = TypeAdapter(EscalationQuery)

# An id: up to 18 digits, so it is always within a bigint primary key's range.
_WHOLE = re.compile(r"[0-9]{1,18}")

AT = "2026-12-03T09:00:00Z"
ESCALATION_EXAMPLE: dict[str, Any] = {
    "id": 17,
    "level": "emergency",
    "state": "open",
    "title": "The rollback of transaction book-trip failed",
    "summary": "Step charge-card could not be compensated: POST /refunds answered 500 three times.",
    "trigger": "rollback_failed",
    "dedup_key": "rollback_failed:0b6f7c52-5d0e-4f3a-9a57-1c2f5e9d8a10",
    "service": "billing",
    "links": {
        "pattern": None,
        "task": None,
        "transaction": "0b6f7c52-5d0e-4f3a-9a57-1c2f5e9d8a10",
        "retry_job": None,
        "healing_run": None,
        "breaker_transition": None,
        "plan": None,
    },
    "occurrences": 1,
    "first_seen_at": AT,
    "last_seen_at": AT,
    "assignee": None,
    "acknowledged_by": None,
    "acknowledged_at": None,
    "snoozed_until": None,
    "resolved_by": None,
    "resolved_at": None,
    "resolution": None,
    "auto_resolved": False,
    "context": {"step": "charge-card", "status_code": 500},
    "recommended_action": "1. Check deployment logs\n2. Verify staging smoke tests passed\n"
    "3. Check for open incidents\n4. Consider manual deployment or rollback",
    "raised_by": "trigger:rollback_failed",
    "created_at": AT,
    "updated_at": AT,
}
RAISED_EVENT: dict[str, Any] = {
    "id": 301,
    "kind": "raised",
    "actor": "trigger:rollback_failed",
    "from_level": None,
    "to_level": "emergency",
    "text": "",
    "data": {},
    "at": AT,
}
DELIVERY_EXAMPLE: dict[str, Any] = {
    "id": 88,
    "channel": "oncall-slack",
    "level": "emergency",
    "status": "sent",
    "attempts": 1,
    "error": "",
    "sent_at": "2026-12-03T09:00:01Z",
    "created_at": AT,
}
DETAIL_EXAMPLE: dict[str, Any] = {
    **ESCALATION_EXAMPLE,
    "events": [
        RAISED_EVENT,
        {
            **RAISED_EVENT,
            "id": 302,
            "kind": "notified",
            "actor": "system",
            "to_level": None,
            "text": "oncall-slack",
            "at": "2026-12-03T09:00:01Z",
        },
    ],
    "deliveries": [DELIVERY_EXAMPLE],
}
ACKED_AT = "2026-12-03T09:04:00Z"
ACKED_EXAMPLE: dict[str, Any] = {
    **DETAIL_EXAMPLE,
    "state": "acknowledged",
    "acknowledged_by": "alice",
    "acknowledged_at": ACKED_AT,
    "updated_at": ACKED_AT,
    "events": [
        *DETAIL_EXAMPLE["events"],
        {
            **RAISED_EVENT,
            "id": 305,
            "kind": "acknowledged",
            "actor": "user:alice",
            "to_level": None,
            "at": ACKED_AT,
        },
    ],
}
AGENT_IN_EXAMPLE: dict[str, Any] = {
    "level": "critical",
    "title": "The nightly export wrote 0 rows three nights running",
    "summary": "export-orders finished without error but the warehouse table is empty.",
    "dedup_key": "export-orders-empty",
    "service": "warehouse",
    "context": {"nights": ["2026-12-01", "2026-12-02", "2026-12-03"], "rows": 0},
}
AGENT_EXAMPLE: dict[str, Any] = {
    **ESCALATION_EXAMPLE,
    "id": 18,
    "level": "critical",
    "title": AGENT_IN_EXAMPLE["title"],
    "summary": AGENT_IN_EXAMPLE["summary"],
    "trigger": "agent",
    "dedup_key": "agent:exporter:export-orders-empty",
    "service": "warehouse",
    "links": {**ESCALATION_EXAMPLE["links"], "transaction": None},
    "context": AGENT_IN_EXAMPLE["context"],
    "recommended_action": "Review error logs and tool documentation",
    "raised_by": "agent:exporter",
}
RAISED_EXAMPLE: dict[str, Any] = {
    **AGENT_EXAMPLE,
    "events": [{**RAISED_EVENT, "id": 310, "actor": "agent:exporter", "to_level": "critical"}],
    "deliveries": [],
    "outcome": "raised",
}
REPEATED_EXAMPLE: dict[str, Any] = {
    **RAISED_EXAMPLE,
    "occurrences": 2,
    "last_seen_at": "2026-12-04T03:00:00Z",
    "updated_at": "2026-12-04T03:00:00Z",
    "events": [
        *RAISED_EXAMPLE["events"],
        {**RAISED_EVENT, "id": 377, "kind": "repeated", "actor": "agent:exporter", "to_level": None},
    ],
    "outcome": "repeated",
}


def _body(request: Request) -> Any:
    return request.data if isinstance(request.data, dict) else None


def _query(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.query_params.dict().items() if v}


def _escalation_id(text: str) -> int:
    """The id in the path as a number: anything else names no escalation (404), never a 500."""
    if not _WHOLE.fullmatch(text):
        raise NotFound(f"No escalation {text}.", field="id")
    return int(text)


def _detail(request: Request, escalation_id: int) -> dict[str, Any]:
    """The escalation as the caller may see it: an agent only its own (another's is a 404)."""
    found = selectors.detail(escalation_id, agent=roles.agent_of(request.user))
    return EscalationDetailOut.of_detail(found).model_dump()


def _page(view: APIView, request: Request, found: Any, shape: Callable[[Any], BaseModel]) -> Response:
    paginator = Pagination()
    page: list[Any] = paginator.paginate_queryset(found, request, view=view) or []
    return paginator.get_paginated_response([shape(row).model_dump() for row in page])


# --- the queue ---------------------------------------------------------------------------------------------------


class EscalationListView(APIView):
    def get_permissions(self) -> list[BasePermission]:
        # Every principal reads (agents their own); agents raise, and so may the humans who work the queue.
        return [AgentOrReviewer()] if self.request.method == "POST" else [IsAuthenticatedPrincipal()]

    @extend_schema(
        operation_id="list_escalations",
        summary="The escalation review queue: not resolved first, by level (emergency first), then oldest first",
        description="Viewers, reviewers and operators see every escalation; an agent sees those it raised. "
        "`mine=true` keeps those assigned to the caller.",
        parameters=query_parameters(EscalationQuery, paged=True),
        responses=answers({200: EscalationPage}, 400, 404),
        examples=[
            OpenApiExample(
                "A page",
                value={
                    "count": 2,
                    "next": None,
                    "previous": None,
                    "results": [ESCALATION_EXAMPLE, AGENT_EXAMPLE],
                },
                response_only=True,
            )
        ],
    )
    def get(self, request: Request) -> Response:
        query = parse(_QUERY, _query(request))
        agent = roles.agent_of(request.user)
        found = selectors.queue(
            state=query.state,
            level=query.level,
            service=query.service,
            assignee=query.assignee,
            mine=request.user if query.mine and agent is None else None,
            agent=agent,
        )
        return _page(self, request, found, EscalationOut.of)

    @extend_schema(
        operation_id="raise_escalation",
        summary="Raise an escalation (agents; reviewers and operators may too)",
        description="Trigger `agent`: the key is namespaced by the caller, so two agents never share one. While "
        "an escalation with the key is not resolved, raising it again counts into it (200, `outcome` "
        "`repeated`): occurrences and last_seen_at go up, the level rises if the new one is higher (and only "
        "then are its channels notified again). Raised again within ESCALATION_REOPEN_WINDOW_SECONDS of its "
        "resolution, the resolved one is reopened (200, `reopened`). Otherwise a new one (201, `raised`).",
        request=EscalationIn,
        responses=answers(
            {201: EscalationRaisedOut, 200: EscalationRaisedOut},
            400,
            (
                403,
                "Not an agent, a reviewer or an operator (viewers read only), or escalations raised through the "
                "API are turned off (the trigger `agent` is disabled).",
            ),
            413,
            415,
        ),
        examples=[
            OpenApiExample("An agent's escalation", value=AGENT_IN_EXAMPLE, request_only=True),
            OpenApiExample("A new one", value=RAISED_EXAMPLE, response_only=True, status_codes=["201"]),
            OpenApiExample(
                "Counted into the open one", value=REPEATED_EXAMPLE, response_only=True, status_codes=["200"]
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        body = parse(_RAISE, _body(request))
        raised = services.raise_by_agent(
            level=body.level,
            title=body.title,
            summary=body.summary,
            dedup_key=body.dedup_key,
            service=body.service,
            context=body.context,
            actor=Actor.from_request(request),
        )
        answer = EscalationRaisedOut.of_raised(selectors.detail(raised.escalation.pk), raised.outcome)
        return Response(answer.model_dump(), status=201 if raised.outcome == "raised" else 200)


ESCALATION_ID = OpenApiParameter(
    "escalation_id",
    {"type": "string"},
    OpenApiParameter.PATH,
    description="The escalation's id.",
    examples=[OpenApiExample("An escalation", value="17")],
)


class EscalationDetailView(APIView):
    permission_classes = [IsAuthenticatedPrincipal]

    @extend_schema(
        operation_id="get_escalation",
        summary="One escalation with its events and deliveries",
        description="An agent sees only the escalations it raised (another's is a 404).",
        parameters=[ESCALATION_ID],
        responses=answers({200: EscalationDetailOut}, 404),
        examples=[
            OpenApiExample("Raised and notified", value=DETAIL_EXAMPLE, response_only=True),
            OpenApiExample("Acknowledged", value=ACKED_EXAMPLE, response_only=True),
        ],
    )
    def get(self, request: Request, escalation_id: str) -> Response:
        return Response(_detail(request, _escalation_id(escalation_id)))


# --- the humans' acts --------------------------------------------------------------------------------------------

NOT_NOW = (
    409,
    "The escalation's state does not allow this: it is resolved (only reopen acts on a resolved one), or the "
    "act is done already (acknowledging an acknowledged one, reopening an open one). The detail names the state.",
)


def _act(operation_id: str, summary: str, **schema: Any) -> Any:
    """The schema of a human's act on an escalation: its id in the path, the escalation after it as the answer."""
    has_body = schema.get("request") is not None
    return extend_schema(
        operation_id=operation_id,
        summary=summary,
        parameters=[ESCALATION_ID],
        responses=answers(
            {200: EscalationDetailOut},
            *((400,) if has_body else ()),
            (403, "Not a reviewer or an operator (agents and viewers do not change an escalation)."),
            404,
            NOT_NOW,
            *((413, 415) if has_body else ()),
        ),
        **schema,
    )


def _after(state: str, **changes: Any) -> OpenApiExample:
    return OpenApiExample(
        "The escalation after", value={**ACKED_EXAMPLE, "state": state, **changes}, response_only=True
    )


class EscalationAckView(APIView):
    permission_classes = [IsReviewer]

    @_act(
        "acknowledge_escalation",
        "Acknowledge an escalation: someone is on it (reviewers and operators; audited)",
        description="The escalation policy stops raising its level. A snoozed one is acknowledged too. No body.",
        request=None,
        examples=[OpenApiExample("The escalation after", value=ACKED_EXAMPLE, response_only=True)],
    )
    def post(self, request: Request, escalation_id: str) -> Response:
        found = services.acknowledge(
            escalation_id=_escalation_id(escalation_id), actor=Actor.from_request(request)
        )
        return Response(_detail(request, found.pk))


class EscalationAssignView(APIView):
    permission_classes = [IsReviewer]

    @_act(
        "assign_escalation",
        "Assign an escalation to a reviewer or an operator (reviewers and operators; audited)",
        description="`user` is a user name; one who is not a reviewer or an operator is a 400 naming `user`. "
        "Assigning it to whom it is assigned already is a 409.",
        request=EscalationAssignIn,
        examples=[
            OpenApiExample("To bob", value={"user": "bob"}, request_only=True),
            _after("acknowledged", assignee="bob"),
        ],
    )
    def post(self, request: Request, escalation_id: str) -> Response:
        body = parse(_ASSIGN, _body(request))
        found = services.assign(
            escalation_id=_escalation_id(escalation_id), username=body.user, actor=Actor.from_request(request)
        )
        return Response(_detail(request, found.pk))


class EscalationCommentView(APIView):
    permission_classes = [IsReviewer]

    @_act(
        "comment_escalation",
        "Comment on an escalation (reviewers and operators)",
        description="The comment is an event of the escalation (kind `commented`), with its author.",
        request=EscalationCommentIn,
        examples=[
            OpenApiExample(
                "A note", value={"text": "Refund 4411 done by hand; checking the others."}, request_only=True
            ),
            OpenApiExample(
                "The escalation after",
                value={
                    **ACKED_EXAMPLE,
                    "events": [
                        *ACKED_EXAMPLE["events"],
                        {
                            **RAISED_EVENT,
                            "id": 306,
                            "kind": "commented",
                            "actor": "user:alice",
                            "to_level": None,
                            "text": "Refund 4411 done by hand; checking the others.",
                            "at": "2026-12-03T09:10:00Z",
                        },
                    ],
                },
                response_only=True,
            ),
        ],
    )
    def post(self, request: Request, escalation_id: str) -> Response:
        body = parse(_COMMENT, _body(request))
        event = services.comment(
            escalation_id=_escalation_id(escalation_id), text=body.text, actor=Actor.from_request(request)
        )
        return Response(_detail(request, event.escalation_id))


class EscalationSnoozeView(APIView):
    permission_classes = [IsReviewer]

    @_act(
        "snooze_escalation",
        "Snooze an escalation until a moment (reviewers and operators; audited)",
        description="It leaves the open part of the queue until `until`, then wakes: open again, unacknowledged, "
        "with an event `woke`.",
        request=EscalationSnoozeIn,
        examples=[
            OpenApiExample(
                "Until the vendor answers",
                value={"until": "2026-12-03T13:00:00Z", "reason": "billing vendor promised a fix by 13:00"},
                request_only=True,
            ),
            _after("snoozed", snoozed_until="2026-12-03T13:00:00Z"),
        ],
    )
    def post(self, request: Request, escalation_id: str) -> Response:
        body = parse(_SNOOZE, _body(request))
        found = services.snooze(
            escalation_id=_escalation_id(escalation_id),
            until=body.until,
            reason=body.reason,
            actor=Actor.from_request(request),
        )
        return Response(_detail(request, found.pk))


class EscalationResolveView(APIView):
    permission_classes = [IsReviewer]

    @_act(
        "resolve_escalation",
        "Resolve an escalation with what was done (reviewers and operators; audited)",
        description="A repeat of its key within ESCALATION_REOPEN_WINDOW_SECONDS reopens it; later, a new one "
        "is raised.",
        request=EscalationResolveIn,
        examples=[
            OpenApiExample(
                "Done", value={"resolution": "Refunds 4411-4413 issued by hand (CHG-88)"}, request_only=True
            ),
            _after(
                "resolved",
                resolved_by="alice",
                resolved_at="2026-12-03T09:30:00Z",
                resolution="Refunds 4411-4413 issued by hand (CHG-88)",
            ),
        ],
    )
    def post(self, request: Request, escalation_id: str) -> Response:
        body = parse(_RESOLVE, _body(request))
        found = services.resolve(
            escalation_id=_escalation_id(escalation_id),
            resolution=body.resolution,
            actor=Actor.from_request(request),
        )
        return Response(_detail(request, found.pk))


class EscalationReopenView(APIView):
    permission_classes = [IsReviewer]

    @_act(
        "reopen_escalation",
        "Reopen a resolved escalation (reviewers and operators; audited)",
        description="Open again and unacknowledged, its channels notified again. Reopening one that is not "
        "resolved is a 409.",
        request=EscalationReopenIn,
        examples=[
            OpenApiExample("Not over", value={"reason": "refund 4414 failed too"}, request_only=True),
            _after("open", acknowledged_by=None, acknowledged_at=None),
        ],
    )
    def post(self, request: Request, escalation_id: str) -> Response:
        data = request.data
        # The body is optional: none (or an empty object) reopens without a reason.
        body = parse(_REOPEN, {} if data is None or (isinstance(data, dict) and not data) else data)
        found = services.reopen(
            escalation_id=_escalation_id(escalation_id), reason=body.reason, actor=Actor.from_request(request)
        )
        return Response(_detail(request, found.pk))

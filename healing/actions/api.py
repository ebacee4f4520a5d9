"""The healing API: the catalog of actions (every principal reads, operators write; audited), runs (agents and
operators ask; operators approve, reject and cancel), and holds. Views parse input, call one service or
selector, and shape the answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from pydantic import BaseModel, TypeAdapter
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.access.permissions import AgentOrOperator, IsAuthenticatedPrincipal, IsOperator, ReadOrOperator
from core.api.pagination import Pagination
from core.api.schemas import PAGE_PARAMETERS, answers
from core.api.validation import parse
from core.audit.services import Actor
from core.slugs import SLUG
from healing.actions import policy, selectors, services
from healing.actions.schemas import (
    RUN_STATES,
    HealingActionIn,
    HealingActionOut,
    HealingActionPage,
    HealingActionPatchIn,
    HealingApproveIn,
    HealingHoldOut,
    HealingHoldPage,
    HealingHoldQuery,
    HealingReasonIn,
    HealingRunDetailOut,
    HealingRunIn,
    HealingRunOut,
    HealingRunPage,
    HealingRunQuery,
)

_ACTION_IN = TypeAdapter(HealingActionIn)
_ACTION_PATCH = TypeAdapter(HealingActionPatchIn)
_RUN_IN = TypeAdapter(HealingRunIn)
_APPROVE = TypeAdapter(HealingApproveIn)
_REASON = TypeAdapter(HealingReasonIn)
_RUNS = TypeAdapter(HealingRunQuery)
_HOLDS = TypeAdapter(HealingHoldQuery)

AT = "2026-11-22T09:00:00Z"
ACTION_EXAMPLE: dict[str, Any] = {
    "name": "restart-search-pods",
    "description": "Roll the search pods through the deploy tool.",
    "kind": "webhook",
    "builtin": None,
    "risk": "high",
    "enabled": True,
    "cooldown_s": 900,
    "max_runs_per_hour": 2,
    "timeout_s": 30.0,
    "parameters_schema": {
        "type": "object",
        "properties": {"replicas": {"type": "integer", "minimum": 1, "maximum": 20}},
        "required": ["replicas"],
        "additionalProperties": False,
    },
    "verify_check": "search-http",
    "verify_within_s": 120,
    "url": "https://deploy.internal.example/hooks/restart",
    "method": "POST",
    "body_template": {"service": "{{service}}", "replicas": "{{replicas}}", "run": "{{run_id}}"},
    "created_at": AT,
    "updated_at": AT,
}
BUILTIN_EXAMPLE: dict[str, Any] = {
    **ACTION_EXAMPLE,
    "name": "reset_breaker",
    "description": "Close the target service's breaker and empty its window: traffic flows again at once.",
    "kind": "builtin",
    "builtin": "reset_breaker",
    "risk": "medium",
    "cooldown_s": 120,
    "max_runs_per_hour": 6,
    "timeout_s": 60.0,
    "parameters_schema": {"type": "object", "properties": {}, "additionalProperties": False},
    "verify_check": None,
    "url": None,
    "method": None,
    "body_template": None,
}
# What an operator sends: the input's fields (kind and enabled left to their defaults) and a reason.
ACTION_IN_EXAMPLE = {
    key: ACTION_EXAMPLE[key]
    for key in HealingActionIn.model_fields
    if key not in ("kind", "enabled", "reason")
} | {"reason": "INC-42: give the search team a one-click restart"}

RUN_EXAMPLE: dict[str, Any] = {
    "id": 41,
    "action": "restart-search-pods",
    "service": "web-search",
    "state": "pending_approval",
    "risk": "high",
    "parameters": {"replicas": 3},
    "trigger": "agent",
    "requested_by": "agent:planner-7",
    "reason": "search answers 503 for 5 minutes",
    "state_reason": None,
    "approvals_required": 2,
    "approval_deadline": "2026-11-22T10:00:00Z",
    "not_before": None,
    "created_at": AT,
    "started_at": None,
    "acted_at": None,
    "verify_deadline": None,
    "finished_at": None,
    "updated_at": AT,
}
RUN_DETAIL_EXAMPLE: dict[str, Any] = {
    **RUN_EXAMPLE,
    "approvals": [{"who": "alice", "decision": "approve", "reason": "", "at": "2026-11-22T09:02:00Z"}],
    "history": [
        {
            "from_state": None,
            "to_state": "pending_approval",
            "reason": "high risk: 2 different operators approve, neither of them the requester",
            "actor": "agent:planner-7",
            "at": AT,
        }
    ],
    "output": {},
}
SUCCEEDED_EXAMPLE: dict[str, Any] = {
    **RUN_DETAIL_EXAMPLE,
    "state": "succeeded",
    "state_reason": "verified: the health check search-http passed",
    "started_at": "2026-11-22T09:05:00Z",
    "acted_at": "2026-11-22T09:05:01Z",
    "verify_deadline": "2026-11-22T09:07:01Z",
    "finished_at": "2026-11-22T09:05:31Z",
    "updated_at": "2026-11-22T09:05:31Z",
    "approvals": [
        {"who": "alice", "decision": "approve", "reason": "", "at": "2026-11-22T09:02:00Z"},
        {"who": "bob", "decision": "approve", "reason": "seen the 503s too", "at": "2026-11-22T09:04:59Z"},
    ],
    "history": [
        *RUN_DETAIL_EXAMPLE["history"],
        {
            "from_state": "pending_approval",
            "to_state": "approved",
            "reason": "approved by 2 operator(s) of 2 required (last: user:bob)",
            "actor": "user:bob",
            "at": "2026-11-22T09:04:59Z",
        },
        {
            "from_state": "approved",
            "to_state": "running",
            "reason": "started by task 5b0c1f0e",
            "actor": "system",
            "at": "2026-11-22T09:05:00Z",
        },
        {
            "from_state": "running",
            "to_state": "verifying",
            "reason": "acted; waiting up to 120 s for the health check search-http to pass",
            "actor": "system",
            "at": "2026-11-22T09:05:01Z",
        },
        {
            "from_state": "verifying",
            "to_state": "succeeded",
            "reason": "verified: the health check search-http passed",
            "actor": "system",
            "at": "2026-11-22T09:05:31Z",
        },
    ],
    "output": {
        "method": "POST",
        "url": "https://deploy.internal.example/hooks/restart",
        "status_code": 202,
        "duration_ms": 84.2,
        "body": {"accepted": True},
    },
}
SKIPPED_EXAMPLE: dict[str, Any] = {
    **RUN_DETAIL_EXAMPLE,
    "id": 42,
    "state": "skipped",
    "approvals_required": 2,
    "approval_deadline": None,
    "state_reason": "cooldown: run 41 finished at 2026-11-22T09:05:31+00:00; the action's cooldown is 900 s",
    "not_before": "2026-11-22T09:20:31Z",
    "finished_at": AT,
    "approvals": [],
    "history": [
        {
            "from_state": None,
            "to_state": "skipped",
            "reason": "skipped: cooldown: run 41 finished at 2026-11-22T09:05:31+00:00; the action's cooldown is "
            "900 s; may run again from 2026-11-22T09:20:31+00:00",
            "actor": "agent:planner-7",
            "at": AT,
        }
    ],
}
HOLD_EXAMPLE = {
    "id": 3,
    "action": "restart-search-pods",
    "service": "web-search",
    "reason": "3 verifications of restart-search-pods on web-search failed within an hour (the last: run 44): "
    "requests from agents and rules now wait for an operator's approval until a human clears this hold",
    "open": True,
    "created_at": AT,
    "cleared_at": None,
    "cleared_by": None,
    "cleared_reason": None,
}
WHY = "the provider's status page says it is their outage"
REASON_EXAMPLE = OpenApiExample("Why", value={"reason": WHY}, request_only=True)


def _body(request: Request) -> Any:
    return request.data if isinstance(request.data, dict) else None


def _detail(run: selectors.HealingRun) -> dict[str, Any]:
    return HealingRunDetailOut.of_detail(
        run, selectors.approvals(run), selectors.transitions(run)
    ).model_dump()


def _query(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.query_params.dict().items() if v}


def _page(view: APIView, request: Request, found: Any, shape: Callable[[Any], BaseModel]) -> Response:
    paginator = Pagination()
    page: list[Any] = paginator.paginate_queryset(found, request, view=view) or []
    return paginator.get_paginated_response([shape(row).model_dump() for row in page])


# --- actions -----------------------------------------------------------------------------------------------------


class ActionListView(APIView):
    permission_classes = [ReadOrOperator]

    @extend_schema(
        operation_id="list_healing_actions",
        summary="The healing catalog: every action with its risk level, by name",
        parameters=PAGE_PARAMETERS,
        responses=answers({200: HealingActionPage}, 400, 404),
        examples=[
            OpenApiExample(
                "A page",
                value={
                    "count": 2,
                    "next": None,
                    "previous": None,
                    "results": [BUILTIN_EXAMPLE, ACTION_EXAMPLE],
                },
                response_only=True,
            )
        ],
    )
    def get(self, request: Request) -> Response:
        return _page(self, request, selectors.actions(), HealingActionOut.of)

    @extend_schema(
        operation_id="create_healing_action",
        summary="Add a webhook action to the catalog (operators; audited)",
        description="Its URL's host must be in OUTBOUND_ALLOWED_HOSTS; its parameters_schema must be a valid "
        "JSON Schema (Draft 2020-12) that Rebound runs safely (no patternProperties, no remote $ref, "
        "patterns RE2 takes). A name already taken is a 409.",
        request=HealingActionIn,
        responses=answers({201: HealingActionOut}, 400, 403, 409, 413, 415),
        examples=[
            OpenApiExample("A webhook", value=ACTION_IN_EXAMPLE, request_only=True),
            OpenApiExample("The action", value=ACTION_EXAMPLE, response_only=True, status_codes=["201"]),
        ],
    )
    def post(self, request: Request) -> Response:
        body = parse(_ACTION_IN, _body(request))
        created = services.create_action(
            data=body.model_dump(exclude={"reason"}), actor=Actor.from_request(request), reason=body.reason
        )
        return Response(HealingActionOut.of(created).model_dump(), status=201)


ACTION_NAME = OpenApiParameter(
    "name",
    {"type": "string"},
    OpenApiParameter.PATH,
    description="The action's name.",
    examples=[OpenApiExample("A built-in", value="reset_breaker")],
)


class ActionDetailView(APIView):
    permission_classes = [ReadOrOperator]

    @extend_schema(
        operation_id="get_healing_action",
        summary="One healing action",
        parameters=[ACTION_NAME],
        responses=answers({200: HealingActionOut}, 404),
        examples=[OpenApiExample("A built-in", value=BUILTIN_EXAMPLE, response_only=True)],
    )
    def get(self, request: Request, name: str) -> Response:
        return Response(HealingActionOut.of(selectors.action(name)).model_dump())

    @extend_schema(
        operation_id="update_healing_action",
        summary="Change a healing action (operators; audited)",
        description="Only the fields sent change. A built-in's risk, cooldown, limits, schema and verify check "
        "may change; it has no url, method or body_template. A run already asked for keeps the risk it was "
        "asked with.",
        parameters=[ACTION_NAME],
        request=HealingActionPatchIn,
        responses=answers({200: HealingActionOut}, 400, 403, 404, 413, 415),
        examples=[
            OpenApiExample(
                "Make it high risk",
                value={"risk": "high", "reason": "it restarted the wrong pool once (INC-51)"},
                request_only=True,
            ),
            OpenApiExample("The action after", value={**BUILTIN_EXAMPLE, "risk": "high"}, response_only=True),
        ],
    )
    def patch(self, request: Request, name: str) -> Response:
        body = parse(_ACTION_PATCH, _body(request))
        updated = services.update_action(
            name=name,
            data=body.model_dump(exclude={"reason"}, exclude_unset=True),
            actor=Actor.from_request(request),
            reason=body.reason,
        )
        return Response(HealingActionOut.of(updated).model_dump())


# --- runs --------------------------------------------------------------------------------------------------------

RUN_FILTERS = [
    OpenApiParameter(
        "state",
        str,
        enum=list(RUN_STATES),
        description="Only runs in this state.",
        examples=[OpenApiExample("Waiting for operators", value="pending_approval")],
    ),
    OpenApiParameter(
        "action",
        {"type": "string", "pattern": SLUG, "maxLength": 100},
        description="Only runs of this action.",
    ),
    OpenApiParameter(
        "service",
        {"type": "string", "pattern": SLUG, "maxLength": 100},
        description="Only runs on this target service.",
    ),
    *PAGE_PARAMETERS,
]


class RunListView(APIView):
    def get_permissions(self) -> list[BasePermission]:
        # Every principal reads; agents (trigger_healing) and operators ask for runs.
        return [AgentOrOperator()] if self.request.method == "POST" else [IsAuthenticatedPrincipal()]

    @extend_schema(
        operation_id="list_healing_runs",
        summary="Healing runs, newest first",
        parameters=RUN_FILTERS,
        responses=answers({200: HealingRunPage}, 400, 404),
        examples=[
            OpenApiExample(
                "A page",
                value={"count": 1, "next": None, "previous": None, "results": [RUN_EXAMPLE]},
                response_only=True,
            )
        ],
    )
    def get(self, request: Request) -> Response:
        query = parse(_RUNS, _query(request))
        found = selectors.runs(state=query.state, action=query.action, service=query.service)
        return _page(self, request, found, HealingRunOut.of)

    @extend_schema(
        operation_id="request_healing_run",
        summary="Ask for a run of a healing action on a service (agents and operators)",
        description="The parameters are checked against the action's schema (a 400 names `parameters.<path>`). "
        "By risk: low runs at once; medium waits for one operator (an operator's own request is that "
        "approval); high waits for two operators other than the requester; critical is refused to agents "
        "(403) and waits for two other operators when an operator asks. While a run of the action on the "
        "service is open, the answer is that run (200). Within the action's cooldown or past its hourly "
        "limit the new run is `skipped`, with `not_before`. An unknown action is a 404, a disabled one a "
        "409.",
        request=HealingRunIn,
        responses=answers(
            {201: HealingRunDetailOut, 200: HealingRunDetailOut},
            400,
            (403, "Not an agent or an operator, or a critical action asked for by an agent."),
            404,
            (409, "The action is disabled."),
            413,
            415,
        ),
        examples=[
            OpenApiExample(
                "Restart the search pods",
                value={
                    "action": "restart-search-pods",
                    "service": "web-search",
                    "parameters": {"replicas": 3},
                    "reason": "search answers 503 for 5 minutes",
                },
                request_only=True,
            ),
            OpenApiExample(
                "Waiting for approval", value=RUN_DETAIL_EXAMPLE, response_only=True, status_codes=["201"]
            ),
            OpenApiExample(
                "In the cooldown", value=SKIPPED_EXAMPLE, response_only=True, status_codes=["201"]
            ),
            OpenApiExample(
                "The open run, joined", value=RUN_DETAIL_EXAMPLE, response_only=True, status_codes=["200"]
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        body = parse(_RUN_IN, _body(request))
        actor = Actor.from_request(request)
        run, created = services.request_run(
            action=body.action,
            service=body.service,
            parameters=body.parameters,
            reason=body.reason,
            trigger=policy.AGENT if actor.agent is not None else policy.OPERATOR,
            actor=actor,
        )
        return Response(_detail(selectors.run(run.pk)), status=201 if created else 200)


RUN_ID = OpenApiParameter(
    "run_id",
    {"type": "string"},
    OpenApiParameter.PATH,
    description="The run's id.",
    examples=[OpenApiExample("A run", value="41")],
)


class RunDetailView(APIView):
    permission_classes = [IsAuthenticatedPrincipal]

    @extend_schema(
        operation_id="get_healing_run",
        summary="One healing run with its approvals, history and output",
        parameters=[RUN_ID],
        responses=answers({200: HealingRunDetailOut}, 404),
        examples=[
            OpenApiExample("Waiting for a second operator", value=RUN_DETAIL_EXAMPLE, response_only=True),
            OpenApiExample("Verified", value=SUCCEEDED_EXAMPLE, response_only=True),
        ],
    )
    def get(self, request: Request, run_id: str) -> Response:
        return Response(_detail(selectors.run(run_id)))


NOT_NOW = (409, "The run is not in a state that allows this (e.g. approving a running run).")


def _decision(operation_id: str, summary: str, **schema: Any) -> Any:
    """The schema of an operator's decision on a run: its id in the path, the run after it as the answer."""
    return extend_schema(
        operation_id=operation_id,
        summary=summary,
        parameters=[RUN_ID],
        responses=answers({200: HealingRunDetailOut}, 400, 403, 404, NOT_NOW, 413, 415),
        **schema,
    )


def _ended(state: str) -> OpenApiExample:
    """The run after an operator rejected or cancelled it, with REASON_EXAMPLE's reason."""
    return OpenApiExample(
        "The run after",
        value={
            **RUN_DETAIL_EXAMPLE,
            "state": state,
            "state_reason": f"{state} by user:alice: {WHY}",
            "finished_at": "2026-11-22T09:03:00Z",
        },
        response_only=True,
    )


def _decide(
    request: Request, run_id: str, adapter: TypeAdapter[Any], decide: Callable[..., selectors.HealingRun]
) -> Response:
    body = parse(adapter, _body(request))
    return Response(_detail(decide(run_id=run_id, actor=Actor.from_request(request), reason=body.reason)))


class RunApproveView(APIView):
    permission_classes = [IsOperator]

    @_decision(
        "approve_healing_run",
        "Approve a run pending approval (operators; audited)",
        description="Once enough distinct operators approved, the run starts (exactly once, however many "
        "approvals arrive at once). The same operator approving again changes nothing and answers the run. "
        "The requester of a high or critical run may not approve it (403).",
        request=HealingApproveIn,
        examples=[
            OpenApiExample("Approve", value={"reason": "seen the 503s too"}, request_only=True),
            OpenApiExample("The run after", value=RUN_DETAIL_EXAMPLE, response_only=True),
        ],
    )
    def post(self, request: Request, run_id: str) -> Response:
        return _decide(request, run_id, _APPROVE, services.approve)


class RunRejectView(APIView):
    permission_classes = [IsOperator]

    @_decision(
        "reject_healing_run",
        "Reject a run pending approval (operators; a reason required; audited)",
        request=HealingReasonIn,
        examples=[REASON_EXAMPLE, _ended("rejected")],
    )
    def post(self, request: Request, run_id: str) -> Response:
        return _decide(request, run_id, _REASON, services.reject)


class RunCancelView(APIView):
    permission_classes = [IsOperator]

    @_decision(
        "cancel_healing_run",
        "Cancel a run pending approval or approved (operators; a reason required; audited)",
        description="A run already running is not cancelled (409): its action may be acting.",
        request=HealingReasonIn,
        examples=[REASON_EXAMPLE, _ended("cancelled")],
    )
    def post(self, request: Request, run_id: str) -> Response:
        return _decide(request, run_id, _REASON, services.cancel)


# --- holds -------------------------------------------------------------------------------------------------------


class HoldListView(APIView):
    permission_classes = [IsAuthenticatedPrincipal]

    @extend_schema(
        operation_id="list_healing_holds",
        summary="Holds: actions that stopped being automatic for a target, newest first",
        description="An action whose verification failed HEALING_HOLD_AFTER_FAILED_VERIFICATIONS times within an "
        "hour on a target is held there: agents' and rules' requests wait for an operator until the hold is "
        "cleared.",
        parameters=[
            OpenApiParameter(
                "open",
                bool,
                description="Only holds in force (true) or cleared (false).",
                examples=[OpenApiExample("In force", value=True)],
            ),
            OpenApiParameter(
                "action",
                {"type": "string", "pattern": SLUG, "maxLength": 100},
                description="Only holds of this action.",
            ),
            *PAGE_PARAMETERS,
        ],
        responses=answers({200: HealingHoldPage}, 400, 404),
        examples=[
            OpenApiExample(
                "A page",
                value={"count": 1, "next": None, "previous": None, "results": [HOLD_EXAMPLE]},
                response_only=True,
            )
        ],
    )
    def get(self, request: Request) -> Response:
        query = parse(_HOLDS, _query(request))
        return _page(self, request, selectors.holds(open=query.open, action=query.action), HealingHoldOut.of)


class HoldClearView(APIView):
    permission_classes = [IsOperator]

    @extend_schema(
        operation_id="clear_healing_hold",
        summary="Clear a hold: the action is automatic again for its target (operators; a reason; audited)",
        parameters=[
            OpenApiParameter(
                "hold_id",
                {"type": "string"},
                OpenApiParameter.PATH,
                description="The hold's id.",
                examples=[OpenApiExample("A hold", value="3")],
            )
        ],
        request=HealingReasonIn,
        responses=answers(
            {200: HealingHoldOut}, 400, 403, 404, (409, "The hold is cleared already."), 413, 415
        ),
        examples=[
            OpenApiExample(
                "Why", value={"reason": "the search cluster was resized (CHG-77)"}, request_only=True
            ),
            OpenApiExample(
                "The hold after",
                value={
                    **HOLD_EXAMPLE,
                    "open": False,
                    "cleared_at": "2026-11-22T11:00:00Z",
                    "cleared_by": "alice",
                    "cleared_reason": "the search cluster was resized (CHG-77)",
                },
                response_only=True,
            ),
        ],
    )
    def post(self, request: Request, hold_id: str) -> Response:
        body = parse(_REASON, _body(request))
        hold = services.clear_hold(hold_id=hold_id, actor=Actor.from_request(request), reason=body.reason)
        return Response(HealingHoldOut.of(hold).model_dump())

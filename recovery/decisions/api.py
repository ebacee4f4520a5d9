"""The recovery API: plans, options, fallback chains (read by all, replaced by operators) and retry policies.
Views parse input, call one service or selector, and serialize the answer."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from pydantic import TypeAdapter
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.access.permissions import AgentOrOperator, ReadOrOperator
from core.api.negotiation import JsonOnlyView
from core.api.schemas import answers
from core.api.validation import parse
from core.audit.services import Actor
from core.slugs import SLUG
from recovery.breakers import selectors as breaker_selectors
from recovery.decisions import fallbacks, policies, selectors, services
from recovery.decisions.schemas import (
    ChainIn,
    ChainOut,
    ChainQuery,
    OptionsOut,
    OptionsQuery,
    PlanIn,
    PlanOut,
    ResolvedPolicyOut,
    ResolveQuery,
    RetryPolicyList,
    RetryPolicyOut,
)
from recovery.errors.taxonomy import ErrorClass, ErrorKind

_PLAN = TypeAdapter(PlanIn)
_OPTIONS = TypeAdapter(OptionsQuery)
_CHAIN = TypeAdapter(ChainQuery)
_CHAIN_IN = TypeAdapter(ChainIn)
_RESOLVE = TypeAdapter(ResolveQuery)


def _query(request: Request) -> dict[str, str]:
    # The last value of each parameter, as Django reads a query string.
    return {key: str(request.query_params.get(key, "")) for key in request.query_params}


# --- Plans and options -------------------------------------------------------------------------------------

PLAN_REQUEST = {
    "service": "openai",
    "operation": "chat.completions",
    "error": {"type": "APITimeoutError", "message": "Request timed out."},
    "attempt": 1,
    "task_id": "summarise-inbox-42",
    "elapsed_s": 30.2,
}
PLAN_ANSWER = {
    "plan_id": "6f1c2a9e-5b3d-4c6e-8a0b-1c2d3e4f5a6b",
    "action": "retry",
    "delay_s": 1.0,
    "fallback": None,
    "attempts_left": 3,
    "reason": "a transient error (connection_timeout): retry in 1 s, attempt 2 of 4 (policy connection timeout)",
    "error_class": "transient",
    "severity": "medium",
    "kind": "connection_timeout",
    "retry_after_s": None,
    "breaker_state": "closed",
    "degradation_level": "normal",
    "policy": "connection timeout",
}
FALLBACK_ANSWER = {
    **PLAN_ANSWER,
    "action": "fallback",
    "delay_s": None,
    "fallback": {
        "kind": "cache",
        "position": 1,
        "service": None,
        "operation": None,
        "value": {"summary": "3 unread, none urgent"},
        "cached_at": "2026-11-22T08:59:12+00:00",
        "warning": None,
    },
    "attempts_left": 0,
    "reason": "a transient error (connection_timeout), not retried: policy connection timeout is exhausted: it "
    "allows 4 attempt(s) and attempt 4 failed; fall back to the cached result of 48 s ago (position 1)",
}


class PlanView(JsonOnlyView):
    permission_classes = [AgentOrOperator]

    @extend_schema(
        operation_id="plan_recovery",
        summary="It failed: what now?",
        description="Classifies the error and answers one plan: `retry` after `delay_s`, `fallback` to the option "
        "given, `wait` `delay_s` (rate limit, open breaker), `degrade` (skip it), `escalate` (a human is needed) "
        "or `abort` (back to the caller), with the reason in words. Send the `plan_id` back with the outcome of "
        "what you did, so Rebound learns whether the plan worked. A `retry` spends from the service's retry "
        "budget. The decision tree is in docs/recovery.md.",
        request=PlanIn,
        responses=answers({200: PlanOut}, 400, 403, 404, 413, 415),
        examples=[
            OpenApiExample("A timeout", value=PLAN_REQUEST, request_only=True),
            OpenApiExample("Retry", value=PLAN_ANSWER, response_only=True),
            OpenApiExample("Fall back to the cache", value=FALLBACK_ANSWER, response_only=True),
        ],
    )
    def post(self, request: Request) -> Response:
        body = parse(_PLAN, request.data if isinstance(request.data, dict) else None)
        planned = services.make_plan(
            body.to_request(),
            actor=Actor.from_request(request),
        )
        return Response(PlanOut.of(planned).model_dump())


OPTIONS_EXAMPLE = {
    "service": "openai",
    "operation": "chat.completions",
    "error_class": "transient",
    "kind": "",
    "policy": {"name": "transient", "scope": "error_class"},
    "breaker": {"state": "closed", "open_for_s": None},
    "budget": {"allowed": True, "retries": 1, "calls": 40, "limit": 8, "window_s": 10, "note": ""},
    "degradation": {"level": "normal", "skips_service": False},
    "critical": True,
    "options": [
        {
            "action": "retry",
            "available": True,
            "why": "policy transient: 2 more attempt(s), next after 1 s; budget: 1 of 8 retries used in the last "
            "10 s (40 calls); breaker closed",
            "delay_s": 1.0,
            "fallback": None,
        },
        {
            "action": "fallback",
            "available": False,
            "why": "anthropic/messages: breaker open for 12.5 s more",
            "delay_s": None,
            "fallback": {
                "kind": "service",
                "position": 1,
                "service": "anthropic",
                "operation": "messages",
                "value": None,
                "cached_at": None,
                "warning": None,
            },
        },
        {
            "action": "wait",
            "available": False,
            "why": "nothing to wait for",
            "delay_s": None,
            "fallback": None,
        },
        {
            "action": "degrade",
            "available": False,
            "why": "operation chat.completions is critical: it may not be skipped; degradation level normal",
            "delay_s": None,
            "fallback": None,
        },
        {
            "action": "escalate",
            "available": True,
            "why": "a human can always be asked",
            "delay_s": None,
            "fallback": None,
        },
        {
            "action": "abort",
            "available": True,
            "why": "return the error to the caller",
            "delay_s": None,
            "fallback": None,
        },
    ],
}


class OptionsView(APIView):
    @extend_schema(
        operation_id="recovery_options",
        summary="Every recovery option for an error class now, and why each is or is not available",
        parameters=[
            OpenApiParameter(
                "service", str, required=True, examples=[OpenApiExample("A service", value="openai")]
            ),
            OpenApiParameter("operation", str),
            OpenApiParameter("error_class", str, required=True, enum=ErrorClass.values),
            OpenApiParameter("kind", str, enum=ErrorKind.values),
            OpenApiParameter("cache_key", str),
        ],
        responses=answers({200: OptionsOut}, 400, 404),
        examples=[OpenApiExample("Options", value=OPTIONS_EXAMPLE, response_only=True)],
    )
    def get(self, request: Request) -> Response:
        query = parse(_OPTIONS, _query(request))
        options = services.list_options(
            service=breaker_selectors.known_service(query.service),
            operation=query.operation,
            error_class=query.error_class.value,
            kind=query.kind,
            cache_key=query.cache_key,
        )
        return Response(OptionsOut.of(options).model_dump())


# --- Fallback chains ---------------------------------------------------------------------------------------

CHAIN_EXAMPLE = {
    "service": "openai",
    "operation": "chat.completions",
    "critical": True,
    "chain": [
        {
            "id": 3,
            "position": 1,
            "kind": "service",
            "scope": "chat.completions",
            "available": False,
            "why": "anthropic/messages: breaker open for 12.5 s more",
            "service": "anthropic",
            "operation": "messages",
            "value": None,
            "cached_at": None,
            "age_s": None,
            "warning": None,
        },
        {
            "id": 4,
            "position": 1,
            "kind": "cache",
            "scope": "",
            "available": True,
            "why": "a result cached 48 s ago",
            "service": None,
            "operation": None,
            "value": {"summary": "3 unread, none urgent"},
            "cached_at": "2026-11-22T08:59:12+00:00",
            "age_s": 48.0,
            "warning": None,
        },
    ],
    "exhausted": False,
}


CHAIN_SERVICE = OpenApiParameter(
    "service",
    {"type": "string", "pattern": SLUG, "maxLength": 100},
    OpenApiParameter.PATH,
    description="The service's name: a lower-case slug.",
    examples=[OpenApiExample("A service", value="openai")],
)
CHAIN_REQUEST = {
    "operation": "chat.completions",
    "options": [
        {"kind": "service", "target_service": "anthropic", "target_operation": "messages"},
        {"kind": "cache", "max_age_s": 600, "warning": "an answer from up to 10 minutes ago"},
        {"kind": "static", "static_value": {"summary": "unavailable"}, "description": "last resort"},
    ],
    "reason": "anthropic is our second provider since INC-42",
}


class FallbackChainView(APIView):
    permission_classes = [ReadOrOperator]  # GET for every reader, PUT for operators

    @extend_schema(
        operation_id="fallback_chain",
        summary="A service's fallback chain, with each option's availability now",
        description="The options configured for the operation come first, then those for every operation. "
        "`exhausted` is true when none is available now.",
        parameters=[CHAIN_SERVICE, OpenApiParameter("operation", str), OpenApiParameter("cache_key", str)],
        responses=answers({200: ChainOut}, 400, 404),
        examples=[OpenApiExample("A chain", value=CHAIN_EXAMPLE, response_only=True)],
    )
    def get(self, request: Request, service: str) -> Response:
        query = parse(_CHAIN, {**_query(request), "service": service})
        chain = fallbacks.chain_now(
            breaker_selectors.known_service(query.service), query.operation, query.cache_key
        )
        return Response(ChainOut.of(chain).model_dump())

    @extend_schema(
        operation_id="replace_fallback_chain",
        summary="Replace a service's fallback chain for one operation (operators; audited)",
        description="The options given, in order, become the chain of `operation` (empty: every operation) at "
        "positions 1..n, in one transaction; an option that is already at its position is left as it is, so "
        "sending the same chain again changes and audits nothing. Each field belongs to one kind: "
        "`target_service` and `target_operation` to `service` (another known service, or another operation of "
        "this one), `static_value` to `static`, `max_age_s` to `cache`. At most 20 options; a reason is "
        "required. Answers the chain as GET answers it for that operation.",
        request=ChainIn,
        parameters=[CHAIN_SERVICE],
        responses=answers({200: ChainOut}, 400, 403, 404, 413, 415),
        examples=[
            OpenApiExample("A chain of three", value=CHAIN_REQUEST, request_only=True),
            OpenApiExample("The chain after", value=CHAIN_EXAMPLE, response_only=True),
        ],
    )
    def put(self, request: Request, service: str) -> Response:
        known = breaker_selectors.known_service(service)
        body = parse(_CHAIN_IN, request.data if isinstance(request.data, dict) else None)
        fallbacks.replace_chain(
            known, body.operation, body.to_options(), actor=Actor.from_request(request), reason=body.reason
        )
        return Response(ChainOut.of(fallbacks.chain_now(known, body.operation)).model_dump())


# --- Retry policies (read-only: operators edit them in the admin) -------------------------------------------


POLICY_EXAMPLE = {
    "id": 7,
    "name": "database lock",
    "description": "3 retries at 100 ms (004).",
    "builtin": True,
    "scope": "kind",
    "service": None,
    "operation": "",
    "error_class": "",
    "kind": "database_lock",
    "strategy": "fixed",
    "max_attempts": 4,
    "base_delay_s": 0.1,
    "multiplier": 2.0,
    "max_delay_s": 0.1,
    "deadline_s": None,
    "honour_retry_after": True,
    "retry_on": ["transient", "rate_limit", "resource", "external_service"],
}


class RetryPolicyListView(APIView):
    @extend_schema(
        operation_id="list_retry_policies",
        summary="Retry policies, each with its scope (operation, service, kind, error_class or global)",
        responses=answers({200: RetryPolicyList}),
        examples=[OpenApiExample("Policies", value=[POLICY_EXAMPLE], response_only=True)],
    )
    def get(self, request: Request) -> Response:
        return Response([RetryPolicyOut.of(p).model_dump() for p in selectors.retry_policies()])


class RetryPolicyResolveView(APIView):
    @extend_schema(
        operation_id="resolve_retry_policy",
        summary="Which retry policy applies to a call and error, and why (the precedence chain)",
        parameters=[
            OpenApiParameter("service", str, examples=[OpenApiExample("A service", value="postgres")]),
            OpenApiParameter("operation", str),
            OpenApiParameter("error_class", str, enum=ErrorClass.values),
            OpenApiParameter("kind", str, enum=ErrorKind.values),
        ],
        responses=answers({200: ResolvedPolicyOut}, 400, 404),
        examples=[
            OpenApiExample(
                "A database lock",
                response_only=True,
                value={
                    "policy": POLICY_EXAMPLE,
                    "scope": "kind",
                    "why": "no policy for service postgres; kind database_lock: policy 'database lock'",
                    "chain": [
                        {"scope": "service", "looked_for": "service postgres", "policy": None},
                        {"scope": "kind", "looked_for": "kind database_lock", "policy": "database lock"},
                        {
                            "scope": "error_class",
                            "looked_for": "error class transient",
                            "policy": "transient",
                        },
                        {"scope": "global", "looked_for": "the global default", "policy": "global default"},
                    ],
                },
            )
        ],
    )
    def get(self, request: Request) -> Response:
        query = parse(_RESOLVE, _query(request))
        service = breaker_selectors.known_service(query.service) if query.service else None
        steps = policies.explain(service, query.operation, query.error_class, query.kind)
        return Response(ResolvedPolicyOut.of(steps).model_dump())

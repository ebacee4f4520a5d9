"""The error API. Views parse input, call one service or selector, and shape the answer."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from pydantic import TypeAdapter
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.access import roles
from core.access.permissions import AgentOrOperator, ReadOrOperator
from core.api import hotlane, idempotency
from core.api.errors import InvalidInput
from core.api.hotlane import Caller
from core.api.negotiation import JsonOnlyView
from core.api.pagination import Pagination
from core.api.schemas import Page, answers, query_parameters
from core.api.validation import parse
from core.audit.services import Actor
from core.infra.conf import rebound
from recovery.errors import selectors, services, writes
from recovery.errors.idempotency import idempotent
from recovery.errors.schemas import (
    BatchOutDict,
    ClassifyOut,
    ErrorAnswer,
    ErrorBatchIn,
    ErrorIn,
    ErrorOutDict,
    ErrorReportIn,
    PatternFilter,
    PatternOut,
    ReasonIn,
    RuleIn,
    RuleList,
    RuleOut,
    RulePatchIn,
    RuleRef,
)

_ONE = TypeAdapter(ErrorIn)
_LIST = TypeAdapter(list[ErrorIn])
_BATCH = TypeAdapter(ErrorBatchIn)
_PATTERN_FILTER = TypeAdapter(PatternFilter)
_RULE = TypeAdapter(RuleIn)
_RULE_PATCH = TypeAdapter(RulePatchIn)
_REASON = TypeAdapter(ReasonIn)

RATE_LIMIT_EXAMPLE = {
    "service": "openai",
    "operation": "chat.completions",
    "type": "RateLimitError",
    "message": "Rate limit reached for gpt-4o",
    "status_code": 429,
    "headers": {"Retry-After": "20"},
}


def _parse_errors(data: object) -> tuple[list[ErrorIn], int, bool]:
    """One error, a list of errors, or `{"errors": [...], "successes": N}`: (errors, successes, is_batch)."""
    if isinstance(data, list):
        items, successes, prefix = parse(_LIST, data), 0, ""
    elif isinstance(data, dict) and "errors" in data:
        batch = parse(_BATCH, data)
        items, successes, prefix = batch.errors, batch.successes, "errors"
    elif isinstance(data, dict):
        return [parse(_ONE, data)], 0, False
    else:
        raise InvalidInput("The body must be an error object or a list of them.", field="body")
    limit = rebound("ERRORS_BATCH_MAX")
    if not items:
        raise InvalidInput("A batch needs at least one error.", field=prefix or "body")
    if len(items) > limit:
        raise InvalidInput(
            f"A batch holds at most {limit} errors; this one has {len(items)}.", field=prefix or "body"
        )
    return items, successes, True


def _answer(c: writes.Classified, pattern_id: int | None, pattern_total: int) -> ErrorOutDict:
    """What every answer about a reported error says: its classification, Retry-After, fingerprint and pattern
    (ErrorOut, built as a plain dict: this is the intake's hot path)."""
    v = c.verdict
    return {
        "error_class": v.error_class,
        "severity": v.severity,
        "kind": v.kind,
        "retryable": v.retryable,
        "counts_toward_breaker": v.counts_toward_breaker,
        "needs_human": v.needs_human,
        "retry_after_s": c.report.retry_after_s,
        "fingerprint": c.fingerprint,
        "pattern": {"id": pattern_id, "total_count": pattern_total},
    }


def _out(recorded: services.Recorded) -> ErrorOutDict:
    return _answer(recorded.classified, recorded.pattern_id, recorded.pattern_total)


class ErrorsView(JsonOnlyView):
    permission_classes = [AgentOrOperator]

    @extend_schema(
        operation_id="report_errors",
        summary="Report one error or a batch",
        description=(
            "Classifies each error, counts it into its pattern and records it. Send one error object, a "
            'list of them (1 to ERRORS_BATCH_MAX, 1000 unless configured), or `{"errors": [...], '
            '"successes": N}` to get a success rate in the summary: one error answers `ErrorOut`, a list or '
            "a batch answers `BatchOut`. All or nothing: if one item is invalid, nothing is recorded (400 "
            "naming each field, as `[2].message`). Send an `Idempotency-Key` to make a retry safe: a repeat "
            "is counted once and answered with the first answer. 201 means kept: the report is in the "
            "database, or in the intake's buffer in a Redis that persists writes (docs/intake.md)."
        ),
        parameters=[idempotency.PARAMETER, idempotency.replayed_header(201)],
        request=ErrorReportIn,
        responses=answers(
            {201: ErrorAnswer},
            400,
            403,
            413,
            idempotency.CONFLICT_IN_FLIGHT,
            idempotency.REUSED_KEY,
            (503, "The database is unreachable and the report cannot be buffered; nothing was recorded."),
        ),
        examples=[
            OpenApiExample("One error", value=RATE_LIMIT_EXAMPLE, request_only=True),
            OpenApiExample(
                "A batch",
                value={
                    "errors": [RATE_LIMIT_EXAMPLE, {"service": "github-mcp", "status_code": 503}],
                    "successes": 8,
                },
                request_only=True,
            ),
            OpenApiExample(
                "Answer for one error",
                value={
                    "error_class": "rate_limit",
                    "severity": "medium",
                    "kind": "rate_limit",
                    "retryable": True,
                    "counts_toward_breaker": True,
                    "needs_human": False,
                    "retry_after_s": 20.0,
                    "fingerprint": "9f2c1e0b7d4a3f5e6c8b9a0d1e2f3a4b5c6d7e8f",
                    "pattern": {"id": 12, "total_count": 57},
                },
                response_only=True,
                status_codes=["201"],
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        return idempotent(request, "errors", lambda: self._record(request))

    def _record(self, request: Request) -> Response:
        code, body = report_errors(request)
        return Response(body, status=code)


def report_errors(request: Caller) -> tuple[int, ErrorOutDict | BatchOutDict]:
    """POST /errors's work and answer, for ErrorsView and for the hot lane (core/api/hotlane.py)."""
    items, successes, is_batch = _parse_errors(request.data)
    recorded = services.record_errors([i.to_report() for i in items], agent=roles.agent_of(request.user))
    if not is_batch:
        return status.HTTP_201_CREATED, _out(recorded[0])
    body: BatchOutDict = {
        "results": [_out(r) for r in recorded],
        "summary": services.summarize(recorded, successes),
    }
    return status.HTTP_201_CREATED, body


# Plain reports (a bearer key, no Idempotency-Key) skip the middleware chain and DRF's dispatch.
hotlane.route("v1:errors", ErrorsView, report_errors, json_body=True)


class ClassifyView(APIView):
    @extend_schema(
        operation_id="classify_error",
        summary="Classify an error without recording it (dry run)",
        description="The same answer as reporting it, plus the rule that matched and why. Nothing is stored.",
        request=ErrorIn,
        responses=answers({200: ClassifyOut}, 400, 403),
        examples=[
            OpenApiExample(
                "A timeout", value={"type": "httpx.ConnectTimeout", "message": "timed out"}, request_only=True
            ),
            OpenApiExample(
                "Answer",
                value={
                    "error_class": "transient",
                    "severity": "medium",
                    "kind": "connection_timeout",
                    "retryable": True,
                    "counts_toward_breaker": True,
                    "needs_human": False,
                    "retry_after_s": None,
                    "fingerprint": "0c5d7e9f1a2b3c4d5e6f708192a3b4c5d6e7f809",
                    "pattern": None,
                    "matched_rule": {"id": 7, "name": "connection timeout (type)", "priority": 230},
                    "why": [
                        "rule 'connection timeout (type)' (priority 230) matched",
                        "type 'httpx.ConnectTimeout' is one of the rule's types",
                    ],
                },
                response_only=True,
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        item = parse(_ONE, request.data if isinstance(request.data, dict) else None)
        c = services.classify_report(item.to_report())
        rule = c.verdict.rule
        answer = ClassifyOut.model_validate(
            {
                **_answer(c, None, 0),
                "pattern": None,
                "matched_rule": RuleRef(id=rule.id, name=rule.name, priority=rule.priority) if rule else None,
                "why": list(c.verdict.why),
            }
        )
        return Response(answer.model_dump())


PATTERN = {
    "id": 12,
    "fingerprint": "9f2c1e0b7d4a3f5e6c8b9a0d1e2f3a4b5c6d7e8f",
    "service": "openai",
    "operation": "chat.completions",
    "error_class": "rate_limit",
    "severity": "medium",
    "kind": "rate_limit",
    "type_name": "RateLimitError",
    "message_template": "Rate limit reached for gpt-<n>o",
    "sample_message": "Rate limit reached for gpt-4o",
    "first_seen_at": "2026-11-22T08:00:00Z",
    "last_seen_at": "2026-11-22T09:10:00Z",
    "total_count": 57,
    "recent_5m": 3,
    "recent_60m": 41,
}
PATTERN_EXAMPLE = OpenApiExample("A pattern", value=PATTERN, response_only=True)


class PatternListView(APIView):
    @extend_schema(
        operation_id="list_patterns",
        summary="Error patterns, newest first",
        parameters=query_parameters(PatternFilter, paged=True),
        responses=answers(
            {200: Page[PatternOut]},
            400,
            403,
            (404, "A page past the last one."),
        ),
        examples=[
            OpenApiExample(
                "A page",
                value={"count": 1, "next": None, "previous": None, "results": [PATTERN]},
                response_only=True,
            )
        ],
    )
    def get(self, request: Request) -> Response:
        filters = parse(_PATTERN_FILTER, request.query_params.dict())
        found = selectors.patterns(**filters.model_dump(exclude_none=True))
        paginator = Pagination()
        page = paginator.paginate_queryset(found, request, view=self) or []
        return paginator.get_paginated_response([PatternOut.model_validate(p).model_dump() for p in page])


class PatternDetailView(APIView):
    @extend_schema(
        operation_id="get_pattern",
        summary="One error pattern",
        responses=answers({200: PatternOut}, 403, 404),
        examples=[PATTERN_EXAMPLE],
    )
    def get(self, request: Request, pk: int) -> Response:
        return Response(PatternOut.model_validate(selectors.pattern(pk)).model_dump())


RULE_EXAMPLE = {
    "name": "vector store overloaded",
    "priority": 150,
    "type_names": [],
    "message_regex": "index (is )?overloaded",
    "service": "pinecone",
    "error_class": "resource",
    "severity": "medium",
    "kind": "temporary_resource",
    "retryable": True,
    "counts_toward_breaker": True,
    "needs_human": False,
    "reason": "Pinecone reports overload as a 400; it clears within seconds.",
}


RULE_OUT = {
    **{k: v for k, v in RULE_EXAMPLE.items() if k != "reason"},
    "id": 61,
    "description": "",
    "enabled": True,
    "builtin": False,
    "status_min": None,
    "status_max": None,
    "created_at": "2026-11-22T08:00:00Z",
    "updated_at": "2026-11-22T08:00:00Z",
}


def _rule(rule: object) -> dict[str, Any]:
    return RuleOut.model_validate(rule).model_dump()


class RuleListView(APIView):
    permission_classes = [ReadOrOperator]

    @extend_schema(
        operation_id="list_rules",
        summary="Classification rules in priority order",
        responses=answers({200: RuleList}, 403),
        examples=[OpenApiExample("Rules", value=[RULE_OUT], response_only=True)],
    )
    def get(self, request: Request) -> Response:
        return Response([_rule(r) for r in selectors.rules()])

    @extend_schema(
        operation_id="create_rule",
        summary="Add a classification rule (operators; audited)",
        request=RuleIn,
        responses=answers(
            {201: RuleOut},
            400,
            403,
            (409, "A rule with this name was created by another request meanwhile."),
        ),
        examples=[OpenApiExample("A service-specific rule", value=RULE_EXAMPLE, request_only=True)],
    )
    def post(self, request: Request) -> Response:
        body = parse(_RULE, request.data if isinstance(request.data, dict) else None)
        fields = body.model_dump(exclude={"reason"})
        rule = services.create_rule(data=fields, actor=Actor.from_request(request), reason=body.reason)
        return Response(_rule(rule), status=status.HTTP_201_CREATED)


class RuleDetailView(APIView):
    permission_classes = [ReadOrOperator]

    @extend_schema(
        operation_id="get_rule",
        responses=answers({200: RuleOut}, 403, 404),
        examples=[OpenApiExample("A rule", value=RULE_OUT, response_only=True)],
    )
    def get(self, request: Request, pk: int) -> Response:
        return Response(_rule(selectors.rule(pk)))

    @extend_schema(
        operation_id="update_rule",
        summary="Change a rule (operators; audited; in force everywhere within RULES_CACHE_SECONDS)",
        request=RulePatchIn,
        responses=answers(
            {200: RuleOut},
            400,
            403,
            404,
            (409, "Another rule took this name meanwhile."),
        ),
        examples=[
            OpenApiExample("Disable", value={"enabled": False, "reason": "too broad"}, request_only=True)
        ],
    )
    def patch(self, request: Request, pk: int) -> Response:
        rule = selectors.rule(pk)
        body = parse(_RULE_PATCH, request.data if isinstance(request.data, dict) else None)
        fields = body.model_dump(exclude={"reason"}, exclude_unset=True)
        rule = services.update_rule(
            rule=rule, data=fields, actor=Actor.from_request(request), reason=body.reason
        )
        return Response(_rule(rule))

    @extend_schema(
        operation_id="delete_rule",
        summary="Delete a rule (operators; audited). Built-in rules are disabled instead (409).",
        parameters=[
            OpenApiParameter(
                "reason",
                str,
                description="Why (required): as this parameter or as `reason` in a JSON body.",
                examples=[OpenApiExample("Why", value="superseded by rule 61")],
            )
        ],
        request=ReasonIn,
        responses=answers(
            {204: None},
            400,
            403,
            404,
            (409, "A built-in rule: disable it instead."),
        ),
    )
    def delete(self, request: Request, pk: int) -> Response:
        rule = selectors.rule(pk)
        body = request.data if isinstance(request.data, dict) else {}
        given = body.get("reason") or request.query_params.get("reason") or ""
        reason = parse(_REASON, {"reason": given}).reason
        services.delete_rule(rule=rule, actor=Actor.from_request(request), reason=reason)
        return Response(status=status.HTTP_204_NO_CONTENT)

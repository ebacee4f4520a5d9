"""The error API. Views parse input, call one service, and serialize the answer."""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, PolymorphicProxySerializer, extend_schema
from pydantic import TypeAdapter
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.access import roles
from core.access.permissions import AgentOrOperator, ReadOrOperator
from core.api.errors import InvalidInput
from core.api.negotiation import JsonOnlyView
from core.api.validation import parse
from core.audit.services import Actor
from core.infra.conf import rebound
from recovery.errors import selectors, services, writes
from recovery.errors.schemas import BatchOut, ClassifyOut, ErrorBatchIn, ErrorIn, ErrorOut
from recovery.errors.serializers import (
    PatternFilterSerializer,
    PatternSerializer,
    ReasonSerializer,
    RuleSerializer,
    RuleWriteSerializer,
)

_ONE = TypeAdapter(ErrorIn)
_LIST = TypeAdapter(list[ErrorIn])
_BATCH = TypeAdapter(ErrorBatchIn)

RATE_LIMIT_EXAMPLE = {
    "service": "openai",
    "operation": "chat.completions",
    "type": "RateLimitError",
    "message": "Rate limit reached for gpt-4o",
    "status_code": 429,
    "headers": {"Retry-After": "20"},
}


def _parse_errors(data: Any) -> tuple[list[ErrorIn], int, bool]:
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


def _verdict(c: writes.Classified) -> dict[str, Any]:
    """What every answer about an error says: its classification, Retry-After and fingerprint."""
    return {
        "error_class": c.verdict.error_class,
        "severity": c.verdict.severity,
        "kind": c.verdict.kind,
        "retryable": c.verdict.retryable,
        "counts_toward_breaker": c.verdict.counts_toward_breaker,
        "needs_human": c.verdict.needs_human,
        "retry_after_s": c.report.retry_after_s,
        "fingerprint": c.fingerprint,
    }


def _out(recorded: services.Recorded) -> dict[str, Any]:
    c = recorded.classified
    return {
        **_verdict(c),
        "pattern": {"id": recorded.pattern_id, "total_count": recorded.pattern_total},
    }


class ErrorsView(JsonOnlyView):
    permission_classes = [AgentOrOperator]

    @extend_schema(
        operation_id="report_errors",
        summary="Report one error or a batch",
        description=(
            "Classifies each error, counts it into its pattern and records it. Send one error object, a "
            'list of them, or `{"errors": [...], "successes": N}` to get a success rate in the summary. '
            "All or nothing: if one item is invalid, nothing is recorded."
        ),
        request=PolymorphicProxySerializer(
            component_name="ErrorReport",
            serializers=[ErrorIn, ErrorBatchIn],  # type: ignore[list-item]
            resource_type_field_name=None,
            many=False,
        ),
        responses={
            201: PolymorphicProxySerializer(
                component_name="ErrorAnswer",
                serializers=[ErrorOut, BatchOut],  # type: ignore[list-item]
                resource_type_field_name=None,
            )
        },
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
        items, successes, is_batch = _parse_errors(request.data)
        recorded = services.record_errors([i.to_report() for i in items], agent=roles.agent_of(request.user))
        if not is_batch:
            return Response(_out(recorded[0]), status=status.HTTP_201_CREATED)
        body = {"results": [_out(r) for r in recorded], "summary": services.summarize(recorded, successes)}
        return Response(body, status=status.HTTP_201_CREATED)


class ClassifyView(APIView):
    @extend_schema(
        operation_id="classify_error",
        summary="Classify an error without recording it (dry run)",
        description="The same answer as reporting it, plus the rule that matched and why. Nothing is stored.",
        request=ErrorIn,
        responses={200: ClassifyOut},
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
        return Response(
            {
                **_verdict(c),
                "pattern": None,
                "matched_rule": {"id": rule.id, "name": rule.name, "priority": rule.priority}
                if rule
                else None,
                "why": list(c.verdict.why),
            }
        )


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


class PatternListView(generics.ListAPIView):  # type: ignore[type-arg]
    serializer_class = PatternSerializer

    @extend_schema(
        operation_id="list_patterns",
        summary="Error patterns, newest first",
        parameters=[PatternFilterSerializer],
        examples=[
            OpenApiExample(
                "A page",
                value={"count": 1, "next": None, "previous": None, "results": [PATTERN]},
                response_only=True,
            )
        ],
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> Any:
        filters = PatternFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        return selectors.patterns(**filters.validated_data)


class PatternDetailView(generics.RetrieveAPIView):  # type: ignore[type-arg]
    serializer_class = PatternSerializer

    @extend_schema(operation_id="get_pattern", summary="One error pattern", examples=[PATTERN_EXAMPLE])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> Any:
        return selectors.patterns()


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


class RuleListView(APIView):
    permission_classes = [ReadOrOperator]

    @extend_schema(
        operation_id="list_rules",
        summary="Classification rules in priority order",
        responses={200: RuleSerializer(many=True)},
        examples=[OpenApiExample("Rules", value=[RULE_OUT], response_only=True)],
    )
    def get(self, request: Request) -> Response:
        return Response(RuleSerializer(selectors.rules(), many=True).data)

    @extend_schema(
        operation_id="create_rule",
        summary="Add a classification rule (operators; audited)",
        request=RuleWriteSerializer,
        responses={201: RuleSerializer},
        examples=[OpenApiExample("A service-specific rule", value=RULE_EXAMPLE, request_only=True)],
    )
    def post(self, request: Request) -> Response:
        data = RuleWriteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        reason = fields.pop("reason")
        rule = services.create_rule(data=fields, actor=Actor.from_request(request), reason=reason)
        return Response(RuleSerializer(rule).data, status=status.HTTP_201_CREATED)


class RuleDetailView(APIView):
    permission_classes = [ReadOrOperator]

    @extend_schema(
        operation_id="get_rule",
        responses={200: RuleSerializer},
        examples=[OpenApiExample("A rule", value=RULE_OUT, response_only=True)],
    )
    def get(self, request: Request, pk: int) -> Response:
        return Response(RuleSerializer(get_object_or_404(selectors.rules(), pk=pk)).data)

    @extend_schema(
        operation_id="update_rule",
        summary="Change a rule (operators; audited; in force everywhere within RULES_CACHE_SECONDS)",
        request=RuleWriteSerializer(partial=True),
        responses={200: RuleSerializer},
        examples=[
            OpenApiExample("Disable", value={"enabled": False, "reason": "too broad"}, request_only=True)
        ],
    )
    def patch(self, request: Request, pk: int) -> Response:
        rule = get_object_or_404(selectors.rules(), pk=pk)
        data = RuleWriteSerializer(rule, data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        reason = fields.pop("reason", "")
        rule = services.update_rule(rule=rule, data=fields, actor=Actor.from_request(request), reason=reason)
        return Response(RuleSerializer(rule).data)

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
        request=ReasonSerializer,
        responses={204: None},
    )
    def delete(self, request: Request, pk: int) -> Response:
        rule = get_object_or_404(selectors.rules(), pk=pk)
        body = request.data if isinstance(request.data, dict) else {}
        reason = body.get("reason") or request.query_params.get("reason")
        services.delete_rule(rule=rule, actor=Actor.from_request(request), reason=reason or "")
        return Response(status=status.HTTP_204_NO_CONTENT)

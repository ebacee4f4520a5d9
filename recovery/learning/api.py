"""The learning API: what recovery has learned about which action works for which error (every principal reads
it), and forgetting it (operators; audited). Views parse input, call one service or selector, and shape."""

from __future__ import annotations

from collections.abc import Iterable

from drf_spectacular.utils import OpenApiExample, extend_schema
from pydantic import TypeAdapter
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.access.permissions import IsOperator, ReadOrOperator
from core.api.errors import InvalidInput, NotFound
from core.api.schemas import answers, query_parameters
from core.api.validation import parse
from core.audit.services import Actor
from recovery.errors import selectors as error_selectors
from recovery.learning import selectors, services
from recovery.learning.schemas import LearningOut, LearningQuery, ResetIn, ResetOut

_QUERY = TypeAdapter(LearningQuery)
_RESET = TypeAdapter(ResetIn)
NEITHER = "give a service, a pattern or both: what to forget"

ROW_EXAMPLE = {
    "scope": "pattern",
    "pattern": 12,
    "fingerprint": "9f2c1e0b7d4a3f5e6c8b9a0d1e2f3a4b5c6d7e8f",
    "service": "openai",
    "error_class": "rate_limit",
    "action": "fallback:cache",
    "tries": 50.0,
    "successes": 47.0,
    "success_rate": 0.94,
    "lower_bound": 0.8378,
    "upper_bound": 0.9794,
    "trusted": True,
    "recover_s": 0.412,
    "delay_s": None,
    "total_tries": 63,
    "total_successes": 58,
    "total_unknown": 1,
    "first_result_at": "2026-11-15T08:00:00Z",
    "last_result_at": "2026-11-22T09:10:00Z",
}
LEARNING_EXAMPLE = {"half_life_days": 7.0, "min_tries": 10.0, "rows": [ROW_EXAMPLE]}


def fingerprint_of(pattern_id: int) -> str:
    """The fingerprint of the pattern an argument names, or a 404 naming `pattern`."""
    try:
        return error_selectors.pattern(pattern_id).fingerprint
    except NotFound as missing:
        raise NotFound(missing.message, field="pattern") from None


def pattern_ids(fingerprints: Iterable[str]) -> dict[str, int]:
    """The ErrorPattern id of each fingerprint that has one (a row may outlive its pattern), in one query."""
    wanted = sorted({f for f in fingerprints if f})
    if not wanted:
        return {}
    return error_selectors.pattern_ids(wanted)


def learned(rows: list[selectors.Row]) -> LearningOut:
    """The rows as the API and the MCP tool answer them."""
    return LearningOut.of(rows, pattern_ids(r.fingerprint for r in rows))


class LearningView(APIView):
    permission_classes = [ReadOrOperator]

    @extend_schema(
        operation_id="get_learning",
        summary="What recovery has learned: each action's success for each error pattern and service",
        description="Per error pattern and action (scope `pattern`) and per service, error class and action "
        "(scope `service`): the decayed tries and successes (a result weighs half as much every "
        "`half_life_days`), the success rate with its Wilson 95 % bounds, whether the planner trusts it (at "
        "least `min_tries`), the mean time to recover and, for retries and waits, the delay that worked. Best "
        "lower bound first within each scope and key. Filters combine; none: every row, up to `limit`. "
        "docs/learning.md says how the planner uses them.",
        parameters=query_parameters(LearningQuery),
        responses=answers(
            {200: LearningOut},
            400,
            403,
            (404, "No error pattern with the `pattern` id (the answer names the field)."),
        ),
        examples=[OpenApiExample("One pattern's figures", value=LEARNING_EXAMPLE, response_only=True)],
    )
    def get(self, request: Request) -> Response:
        # An empty parameter (`?service=&pattern=`) is no filter, as the other lists read it.
        query = parse(_QUERY, {k: v for k, v in request.query_params.dict().items() if v})
        rows = selectors.statistics(
            service=query.service,
            fingerprint=fingerprint_of(query.pattern) if query.pattern is not None else None,
            error_class=query.error_class.value if query.error_class is not None else None,
            limit=query.limit,
        )
        return Response(learned(rows).model_dump())


class ResetView(APIView):
    permission_classes = [IsOperator]

    @extend_schema(
        operation_id="reset_learning",
        summary="Forget what was learned for a service or a pattern (operators; audited)",
        description="After a fix, the old figures mislead the planner: forget them. `service` forgets its "
        "service-scope rows and the rows of its patterns; `pattern` (an ErrorPattern id) that pattern's rows; "
        "at least one of the two. The planner's cache in this process is dropped at once; other processes "
        "follow within LEARNING_CACHE_SECONDS. Answers how many rows went.",
        request=ResetIn,
        responses=answers(
            {200: ResetOut},
            400,
            403,
            (404, "No error pattern with the `pattern` id (the answer names the field)."),
        ),
        examples=[
            OpenApiExample(
                "A service after a fix",
                value={"service": "openai", "reason": "INC-42 fixed: the old figures mislead"},
                request_only=True,
            ),
            OpenApiExample("Answer", value={"deleted": 7}, response_only=True),
        ],
    )
    def post(self, request: Request) -> Response:
        body = parse(_RESET, request.data if isinstance(request.data, dict) else None)
        if body.service is None and body.pattern is None:
            raise InvalidInput(
                NEITHER, errors=[{"field": f, "message": NEITHER} for f in ("service", "pattern")]
            )
        deleted = services.reset(
            service=body.service,
            fingerprint=fingerprint_of(body.pattern) if body.pattern is not None else None,
            actor=Actor.from_request(request),
            reason=body.reason,
        )
        return Response(ResetOut(deleted=deleted).model_dump())

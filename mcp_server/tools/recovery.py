"""get_recovery_options: what to do about a failed call. With the error: the plan (as POST /api/v1/recovery/plan,
which records it) and every option; with only an error class: the options (as GET /api/v1/recovery/options).
Both from recovery/decisions/api.py's services; and, either way, what recovery has learned of each action for
the service and the error's class, and for the error's pattern (as GET /api/v1/learning answers them)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, TypeAdapter

from core.api.errors import InvalidInput
from core.api.validation import parse
from core.slugs import Slug
from mcp_server import callers, running
from mcp_server.running import tool
from recovery.breakers import selectors as breaker_selectors
from recovery.decisions import services
from recovery.decisions.schemas import (
    MAX_ATTEMPT,
    MAX_ELAPSED_S,
    CacheKey,
    OptionsOut,
    OptionsQuery,
    PlanIn,
    PlanOut,
)
from recovery.errors.schemas import ErrorIn
from recovery.errors.taxonomy import ErrorClass, ErrorKind
from recovery.learning import api as learning_api
from recovery.learning import selectors as learning_selectors
from recovery.learning.schemas import LearningOut

_PLAN = TypeAdapter(PlanIn)
_OPTIONS = TypeAdapter(OptionsQuery)
NOTHING = "give the error that happened (type, status_code or message), or an error_class"
BOTH = "give the error (Rebound classifies it) or an error_class and kind, not both"


class RecoveryOptionsOut(BaseModel):
    plan: PlanOut | None = Field(
        description="Given an error: Rebound's one plan for it (retry, fallback, wait, degrade, escalate or "
        "abort) with the reason; send plan_id back with the outcome. null when only an error_class was given."
    )
    options: OptionsOut = Field(
        description="Every option for the error's class now, each with why it is or is not available."
    )
    learned: LearningOut = Field(
        description="What recovery has learned of each action: for this service and the error's class (scope "
        "`service`) and, given an error, for its pattern (scope `pattern`). Per action: tries and successes "
        "weighted toward recent results (half as much every half_life_days), the success rate with its 95 % "
        "bounds, whether it is `trusted` (at least min_tries), the mean seconds to recover and, for retries "
        "and waits, the delay that worked. The plan already uses them where its tree allows a choice; an "
        "empty list: nothing learned yet."
    )


@tool(title="Recovery options for a failed call", read_only=False, destructive=False, idempotent=False)
def get_recovery_options(
    caller: callers.Caller,
    service: Annotated[Slug, Field(description="The service whose call failed.")],
    operation: Annotated[str, Field(max_length=200, description="The operation that failed.")] = "",
    error: Annotated[
        ErrorIn | None,
        Field(
            description="The error that happened (at least one of type, status_code, message): Rebound "
            "classifies it and records a plan. The service and operation default to the ones above."
        ),
    ] = None,
    error_class: Annotated[
        ErrorClass | None, Field(description="Without an error: the options for this class of error.")
    ] = None,
    kind: Annotated[
        ErrorKind | None, Field(description="With error_class: the finer kind, if known.")
    ] = None,
    attempt: Annotated[
        int, Field(ge=1, le=MAX_ATTEMPT, description="With an error: the attempt that just failed, from 1.")
    ] = 1,
    task_id: Annotated[str, Field(max_length=200, description="With an error: the agent's task.")] = "",
    elapsed_s: Annotated[
        float | None,
        Field(ge=0, le=MAX_ELAPSED_S, description="With an error: seconds since the first attempt started."),
    ] = None,
    idempotency_key: Annotated[
        str,
        Field(max_length=200, description="With an error: makes a non-idempotent operation safe to retry."),
    ] = "",
    cache_key: Annotated[
        CacheKey, Field(description="Which cached result a cache fallback may offer (as sent with outcomes).")
    ] = "",
) -> RecoveryOptionsOut:
    """A call failed: what now? Give the error and Rebound answers one plan (retry after how long, fall back
    to what, wait, degrade, escalate or abort, and why) and every option with why it is or is not available
    now; the plan is recorded (a retry spends from the service's retry budget), so send its plan_id back with
    the outcome. Needs an agent's or an operator's key. With only an error_class (any key) it answers the
    options and records nothing."""
    if error is not None:
        callers.require_agent_or_operator(caller, "get_recovery_options with an error (it records a plan)")
        if error_class is not None or kind is not None:
            raise InvalidInput(BOTH, field="error_class" if error_class is not None else "kind")
        given = {
            "service": service,
            "operation": operation,
            "error": running.as_sent(error),
            "attempt": attempt,
            "task_id": task_id,
            "elapsed_s": elapsed_s,
            "idempotency_key": idempotency_key,
            "cache_key": cache_key,
        }
        return _plan(caller, given)
    callers.require_reader(caller, "get_recovery_options")
    if error_class is None:
        raise InvalidInput(NOTHING, field="error")
    query = parse(
        _OPTIONS,
        {
            "service": service,
            "operation": operation,
            "error_class": str(error_class),
            "kind": str(kind) if kind is not None else "",
            "cache_key": cache_key,
        },
    )
    options = services.list_options(
        service=breaker_selectors.known_service(query.service),
        operation=query.operation,
        error_class=query.error_class.value,
        kind=query.kind,
        cache_key=query.cache_key,
    )
    learned = _learned(service=query.service, error_class=query.error_class.value, fingerprint="")
    return RecoveryOptionsOut(plan=None, options=OptionsOut.of(options), learned=learned)


def _plan(caller: callers.Caller, given: dict[str, Any]) -> RecoveryOptionsOut:
    """PlanView's work, then OptionsView's for the class and kind the plan found."""
    try:
        body = parse(_PLAN, given)
    except InvalidInput as error:
        raise _error_service_named(error) from None
    planned = services.make_plan(
        body.to_request(),
        actor=caller.actor,
    )
    # The options for the class and kind the plan found, as GET /recovery/options answers them.
    options = services.list_options(
        service=breaker_selectors.known_service(body.service),
        operation=body.operation,
        error_class=planned.inputs.error_class,
        kind=planned.inputs.kind,
        cache_key=body.cache_key,
    )
    learned = _learned(
        service=body.service,
        error_class=planned.inputs.error_class,
        fingerprint=planned.classified.fingerprint,
    )
    return RecoveryOptionsOut(plan=PlanOut.of(planned), options=OptionsOut.of(options), learned=learned)


def _learned(*, service: str, error_class: str, fingerprint: str) -> LearningOut:
    """The service's figures for the error's class (service scope), then the error's pattern's."""
    rows = [
        row
        for row in learning_selectors.statistics(service=service, error_class=error_class)
        if row.scope == "service"
    ]
    if fingerprint:
        rows += learning_selectors.statistics(fingerprint=fingerprint)
    return learning_api.learned(rows)


def _error_service_named(error: InvalidInput) -> InvalidInput:
    """PlanIn's one check across fields (the error's service is the plan's) names the whole body, which this
    tool has no argument for: name error.service instead."""
    errors = [
        {**item, "field": "error.service"} if item.get("field") == "body" else item for item in error.errors
    ]
    return InvalidInput(error.message.replace("body: ", "error.service: "), errors=errors)

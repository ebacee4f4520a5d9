"""One attempt of an operation Rebound runs for an agent: an HTTP request (through `outbound`) or a registered
task (through `task_registry`), sent with the caller's idempotency key, its failure classified.

Server-side retries (retry_jobs) and saga compensations (sagas) both make their calls here, so that the two
agree on how a key travels, what an outcome holds and how a failure is read; each keeps its own policy for
what happens next.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from typing import Any

from recovery.calls import outbound, task_registry
from recovery.errors.classification import ErrorReport
from recovery.errors.services import classify_report
from recovery.errors.writes import Classified

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KWARG = "idempotency_key"


@dataclass(frozen=True)
class CallOutcome:
    ok: bool
    value: Any  # HTTP: {"status_code", "body"} on success; task: what it answered
    error: ErrorReport | None
    duration_ms: float
    status_code: int | None


def with_idempotency_key(req: outbound.OutboundRequest, key: str) -> outbound.OutboundRequest:
    # Sent on every attempt: it is what lets the target tell a retry from a new request (non-idempotent
    # operations are retried only because of it). A key the caller set in the headers wins.
    if any(name.lower() == IDEMPOTENCY_HEADER.lower() for name in req.headers):
        return req
    return replace(req, headers={**req.headers, IDEMPOTENCY_HEADER: key})


def call_http(request: dict[str, Any], idempotency_key: str) -> CallOutcome:
    """Make a stored request (OutboundRequest.to_json) once. Never raises for its failures."""
    req = with_idempotency_key(outbound.OutboundRequest.from_json(request), idempotency_key)
    result = outbound.execute(req)
    value = {"status_code": result.status_code, "body": result.body} if result.ok else None
    return CallOutcome(result.ok, value, result.error, result.duration_ms, result.status_code)


def call_task(name: str, args: list[Any], kwargs: dict[str, Any]) -> CallOutcome:
    """Run a registered task once in this worker. Never raises for its failures."""
    ran = task_registry.run(name, args, kwargs)
    status = ran.error.status_code if ran.error else None
    return CallOutcome(ran.ok, ran.value, ran.error, ran.duration_ms, status)


def accepts_idempotency_key(task_name: str) -> bool:
    """Whether the task's function takes `idempotency_key` (by name, or in **kwargs)."""
    task = task_registry.find(task_name)
    if task is None:
        return False
    try:
        parameters = inspect.signature(task.run).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == IDEMPOTENCY_KWARG or p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters)


def classify(outcome: CallOutcome, *, service: str = "", operation: str = "") -> Classified | None:
    """The failure as the classifier reads it (for this service and operation's rules); None on success."""
    if outcome.ok:
        return None
    report = outcome.error or ErrorReport(type_name="rebound.UnknownFailure", message="the call failed")
    return classify_report(replace(report, service=service, operation=operation))

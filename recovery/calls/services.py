"""One attempt of an operation Rebound runs for an agent: an HTTP request (through `outbound`) or a registered
task (through `task_registry`), sent with the caller's idempotency key, its failure classified.

Server-side retries (retry_jobs) and saga compensations (sagas) both make their calls here, so that the two
agree on how a key travels, what an outcome holds and how a failure is read; each keeps its own policy for
what happens next.
"""

from __future__ import annotations

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
    return task is not None and task_registry.accepts_keyword(task, IDEMPOTENCY_KWARG)


def keyed_kwargs(task_name: str, kwargs: dict[str, Any], key: str) -> dict[str, Any]:
    """The task's keyword arguments as it is called: with `idempotency_key` set to the caller's key when the
    task takes one and the caller's kwargs do not already name it (theirs wins, as a caller's own header
    does for HTTP)."""
    if IDEMPOTENCY_KWARG in kwargs or not accepts_idempotency_key(task_name):
        return dict(kwargs)
    return {**kwargs, IDEMPOTENCY_KWARG: key}


# What the HTTP methods promise (RFC 9110, 9.2.2): sending one of these twice does no more than once.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


def why_resend_is_safe(
    *, kind: str, request: dict[str, Any], task_name: str, task_kwargs: dict[str, Any]
) -> str:
    """Why sending a call again, when whether an attempt reached its target is unknown, does it no more than
    once; "" when nothing says so (then a human decides). HTTP: an idempotent method, else the Idempotency-Key
    header every attempt carries (the caller's, or the job's key). A task: declared idempotent, or given an
    idempotency key (its own `idempotency_key` argument, or the one Rebound passes to a task that takes one)."""
    if kind == "http":
        method = str(request.get("method", "GET")).upper()
        if method in IDEMPOTENT_METHODS:
            return f"{method} is idempotent"
        return f"every attempt of this {method} carries the same {IDEMPOTENCY_HEADER} header"
    task = task_registry.find(task_name)
    if task is None:
        return ""
    if task_registry.declared_idempotent(task):
        return f"{task_name} is declared idempotent"
    if IDEMPOTENCY_KWARG in task_kwargs or task_registry.accepts_keyword(task, IDEMPOTENCY_KWARG):
        return f"every attempt of {task_name} is given the same {IDEMPOTENCY_KWARG}"
    return ""


def classify(outcome: CallOutcome, *, service: str = "", operation: str = "") -> Classified | None:
    """The failure as the classifier reads it (for this service and operation's rules); None on success."""
    if outcome.ok:
        return None
    report = outcome.error or ErrorReport(type_name="rebound.UnknownFailure", message="the call failed")
    return classify_report(replace(report, service=service, operation=operation))

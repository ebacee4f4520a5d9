"""Every tool call counted and logged, whatever became of it: the SDK's own refusals (arguments that do not fit
the input schema, an unknown tool) never reach the tool, so this watches from the outside, as the SDK's
middleware around each inbound request."""

from __future__ import annotations

import logging
import time
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

from mcp_server import callers, metrics, running

log = logging.getLogger("mcp_server.calls")


def _tool_name(ctx: ServerRequestContext[Any, Any]) -> str:
    params = ctx.params if isinstance(ctx.params, dict) else {}
    name = str(params.get("name", ""))
    # A label per registered tool only: a client's made-up names must not grow the metric without bound.
    return name if running.is_tool(name) else "unknown"


def _principal(ctx: ServerRequestContext[Any, Any]) -> str:
    """Who called, when the tool never ran to verify the key (the SDK refused the arguments): over HTTP the
    bearer middleware verified it already (the AccessToken's subject is the caller's label); over stdio it is
    the process's key."""
    scope = getattr(ctx.request, "scope", None) or {}
    token = getattr(scope.get("user"), "access_token", None)
    if token is not None:
        return str(token.subject or token.client_id)
    return callers.process_label()


def _result(outcome: running.Outcome, answer: HandlerResult) -> str:
    if outcome.result is not None:
        return outcome.result
    failed = isinstance(answer, dict) and bool(answer.get("isError") or answer.get("is_error"))
    # The tool never ran: the SDK refused the arguments (or found no such tool).
    return "invalid" if failed else "ok"


async def count_tool_calls(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    if ctx.method != "tools/call":
        return await call_next(ctx)
    tool = _tool_name(ctx)
    outcome = running.Outcome()
    token = running.current_outcome.set(outcome)
    started = time.perf_counter()
    answer: HandlerResult = None
    try:
        answer = await call_next(ctx)
        return answer
    except BaseException:
        outcome.result = outcome.result or "error"
        raise
    finally:
        running.current_outcome.reset(token)
        elapsed = time.perf_counter() - started
        result = _result(outcome, answer)
        caller = outcome.caller or _principal(ctx)
        metrics.mcp_tool_calls_total.labels(tool=tool, result=result).inc()
        metrics.mcp_tool_call_seconds.labels(tool=tool).observe(elapsed)
        log.info(
            "mcp tool %s: %s",
            tool,
            result,
            extra={"tool": tool, "result": result, "caller": caller, "duration_ms": round(elapsed * 1000, 1)},
        )

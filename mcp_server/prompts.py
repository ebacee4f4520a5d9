"""The MCP prompt `call_failed`: "a call failed: what do I do". It walks an agent through Rebound's answer to a
failed call (ask for the recovery options, follow the plan, look for a wider outage, leave the fleet's level to
operators) with the service's breaker state and degradation level as they are now, read through the same
selectors as the REST API by a caller verified like a tool's."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.prompts.base import Message, UserMessage
from pydantic import Field

from core.api.errors import NotFound
from mcp_server import callers
from mcp_server.resources import read_as
from recovery.breakers import selectors as breaker_selectors
from recovery.degradation import selectors as degradation_selectors
from recovery.degradation.selectors import ServiceLevel

NAME = "call_failed"


@dataclass(frozen=True)
class Situation:
    """What Rebound knows of the service now; `breaker` and `level` are None for a service it does not know."""

    service: str
    breaker: dict[str, Any] | None
    level: ServiceLevel | None


def situation(caller: callers.Caller, service: str) -> Situation:
    """The service's breaker (as GET /api/v1/breakers/{name}) and degradation level (as GET
    /api/v1/degradation?service=); a bad name is InvalidInput naming `service`, an unknown one no reading."""
    try:
        known = breaker_selectors.known_service(service)
    except NotFound:
        return Situation(service, None, None)
    return Situation(
        known.name, breaker_selectors.breaker_view(known), degradation_selectors.for_service(known)
    )


def _at(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else ""


def _breaker_text(breaker: dict[str, Any]) -> str:
    state = str(breaker["state"])
    override = breaker.get("override")
    if override is not None:
        until = f" until {_at(override['until'])}" if override.get("until") else ""
        reason = f" ({override['reason']})" if override.get("reason") else ""
        return f"{state}: an operator's override{until}{reason}"
    if state == "open" and breaker.get("open_until"):
        return f"open: calls are refused until {_at(breaker['open_until'])}, then a trial call is let through"
    if state == "half_open":
        return "half_open: only a few trial calls are let through"
    if state == "unknown":
        return "unknown: Rebound cannot read its breaker store now"
    return state


def _level_text(level: ServiceLevel) -> str:
    view = level.level
    text = view.level
    if view.level != "normal":
        who = "forced by an operator" if view.source == "operator" else "set by the rules"
        text += f" ({who}{': ' + view.reason if view.reason else ''})"
    if level.skip:
        text += f"; at this level agents skip {level.service} (it is skipped from {level.skip_from})"
    return text


def _now_text(now: Situation) -> str:
    if now.breaker is None or now.level is None:
        return (
            f"Rebound does not know `{now.service}` yet: no breaker, no degradation level. Your first report "
            "(or the recovery plan below) registers it."
        )
    return (
        f"Rebound's view of `{now.service}` now: breaker {_breaker_text(now.breaker)}; degradation level "
        f"{_level_text(now.level)}."
    )


def walk_through(caller: callers.Caller, service: str, error: str, operation: str = "") -> str:
    """The prompt's text for this caller: the steps, with the service's state read now."""
    now = situation(caller, service)
    call = f"`{now.service}`" + (f" (operation `{operation}`)" if operation else "")
    arguments = {"service": now.service, **({"operation": operation} if operation else {})}
    return f"""A call to {call} failed: {error}

{_now_text(now)}

Do not guess what to do next and do not retry in a loop. Work through it with Rebound's tools:

1. Ask for the plan: call `get_recovery_options` with {json.dumps(arguments)}, `error` = the error as it
   happened ({{"type": "<the exception's type name>", "status_code": <the HTTP status>, "message": "<its
   message>"}}: any one is enough; add `headers` with the response's Retry-After if it had one) and `attempt` =
   the attempt that just failed (1 for the first). It answers a plan (`action`, `delay_s`, `reason`) and every
   recovery option with why it is or is not available now.
2. Follow the plan's `action`:
   - `retry`: call again after `delay_s` seconds. A call that is not idempotent (it creates, sends or charges
     something) is not yours to repeat: hand it to `retry_operation` with an `idempotency_key`, so that Rebound's
     workers retry it and a repeat of your request names the same job.
   - `wait`: wait `delay_s` seconds (a rate limit, or an open breaker), then call again.
   - `fallback`: use the plan's `fallback` (another service or operation, a cached result with its `cached_at`,
     or a static default). `get_fallback_status` shows the whole chain and the age of the cached results.
   - `degrade`: skip this call, carry on with a partial result, and say what is missing.
   - `escalate`: stop. A human will look at it (`rebound://escalations/open`); do not retry and do not work
     around it.
   - `abort`: stop and report the error: retrying cannot help.
3. If other calls fail too, or the breaker is open, call `get_error_status` (without a service: the whole
   fleet) to see whether this is a wider outage before you try anything else.
4. Never call `force_degradation`: the fleet's degradation level is for operators' keys, and yours would be
   refused. If you think the fleet should degrade, say so in your answer."""


def call_failed(
    service: Annotated[
        str, Field(description="The service whose call failed, as Rebound names it (a slug).")
    ],
    error: Annotated[
        str,
        Field(description="What failed, as you saw it: the exception's type, the HTTP status, its message."),
    ],
    ctx: Context,
    operation: Annotated[str, Field(description="The operation that failed (optional).")] = "",
) -> list[Message]:
    """A call failed: what do I do. The steps Rebound recommends, with the service's breaker state and
    degradation level now."""
    text = read_as(ctx, f"the prompt {NAME}", lambda caller: walk_through(caller, service, error, operation))
    return [UserMessage(text)]


def register(server: MCPServer[Any]) -> None:
    server.prompt(
        name=NAME,
        title="A call failed: what do I do",
        description="The steps Rebound recommends after a failed call (ask for the recovery options, follow the "
        "plan, look for a wider outage), with the service's breaker state and degradation level now.",
    )(call_failed)

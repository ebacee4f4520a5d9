"""How a tool runs. A tool is a plain function `(caller, **arguments) -> an output model`: it checks what the
caller may do, calls one service or selector of a lower floor, and shapes the answer (the tests call it so). Here
it becomes what the SDK registers: the same arguments with a `ctx` in place of the caller, run on the SDK's worker
thread with the database connection handled as Django handles it around a request, the caller verified from the
call's key, and Rebound's domain errors turned into tool errors that name the argument at fault."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import close_old_connections
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import BaseModel

from core.api.errors import (
    DATABASE_UNAVAILABLE,
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    ServiceUnavailable,
)
from mcp_server import callers

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., BaseModel])


@dataclass(frozen=True)
class ToolSpec:
    fn: Callable[..., BaseModel]
    name: str
    title: str
    annotations: ToolAnnotations


_specs: dict[str, ToolSpec] = {}


def tool(
    *, title: str, read_only: bool, destructive: bool = False, idempotent: bool = False
) -> Callable[[F], F]:
    """Mark a function as one of the server's tools (mcp_server/server.py registers every one). The annotations
    tell clients which tools only read and which change things; none reaches outside Rebound (open_world)."""

    def register(fn: F) -> F:
        annotations = ToolAnnotations(
            title=title,
            read_only_hint=read_only,
            destructive_hint=destructive if not read_only else None,
            idempotent_hint=idempotent if not read_only else None,
            open_world_hint=False,
        )
        _specs[fn.__name__] = ToolSpec(fn=fn, name=fn.__name__, title=title, annotations=annotations)
        return fn

    return register


def specs() -> list[ToolSpec]:
    return list(_specs.values())


def is_tool(name: str) -> bool:
    return name in _specs


def as_sent(value: Any) -> Any:
    """A nested argument as the REST API receives it, to parse with the REST view's input model: the SDK hands
    the tool a model it validated, a direct call (the tests) a dict."""
    return value.model_dump(exclude_unset=True) if isinstance(value, BaseModel) else value


# --- the outcome of one call, for the metrics and the log line (mcp_server/observe.py) -----------------------


@dataclass
class Outcome:
    result: str | None = (
        None  # ok, invalid, refused, unauthenticated, not_found, conflict, unavailable, error
    )
    caller: str = ""  # agent:<name> or the user's name, once the key is verified


# Set by the middleware around each tools/call; the worker thread that runs the tool shares the object.
current_outcome: ContextVar[Outcome | None] = ContextVar("mcp_outcome", default=None)


def _note(**values: Any) -> None:
    outcome = current_outcome.get()
    if outcome is not None:
        for name, value in values.items():
            setattr(outcome, name, value)


# --- domain errors as tool errors --------------------------------------------------------------------------


def _result_of(error: DomainError) -> str:
    if isinstance(error, Forbidden):
        return "refused"
    if isinstance(error, NotFound):
        return "not_found"
    if isinstance(error, Conflict):
        return "conflict"
    if isinstance(error, ServiceUnavailable):
        return "unavailable"
    return "invalid"


def describe(error: DomainError) -> str:
    """The tool error's text: the message, then each argument at fault (`service: not a known service`)."""
    fields = [f"{e['field']}: {e['message']}" for e in error.errors if e.get("field")]
    if not fields:
        return error.message
    if len(fields) == 1 and error.errors[0].get("message") == error.message:
        return fields[0]  # one field, whose message is the error's own: say it once
    return f"{error.message} ({'; '.join(fields)})"


def run(spec: ToolSpec, ctx: Context[Any, Any] | None, arguments: dict[str, Any]) -> BaseModel:
    """One call, on the SDK's worker thread: verify the key, run the tool, answer its model or a ToolError."""
    close_old_connections()
    try:
        caller = callers.caller_of(ctx)
        _note(caller=caller.label)
        answer = spec.fn(caller, **arguments)
    except callers.Unauthenticated as error:
        _note(result="unauthenticated")
        raise ToolError(str(error)) from None
    except DomainError as error:
        _note(result=_result_of(error))
        raise ToolError(describe(error)) from None
    except DATABASE_UNAVAILABLE:
        _note(result="unavailable")
        raise ToolError(
            "Rebound's database cannot answer now; nothing was recorded. Try again in a few seconds."
        ) from None
    except Exception:
        _note(result="error")
        raise  # the SDK answers "Error executing tool <name>" and logs the traceback; no detail leaks
    finally:
        close_old_connections()
    _note(result="ok")
    return answer


def sdk_function(spec: ToolSpec) -> Callable[..., BaseModel]:
    """What the SDK registers: `spec.fn`'s signature with `ctx: Context` in place of its first parameter (the
    caller), so the SDK derives the input schema from the tool's own arguments and the output schema from its
    return type. The SDK runs it on a worker thread (it is not a coroutine)."""
    signature = inspect.signature(spec.fn, eval_str=True)
    arguments = list(signature.parameters.values())[1:]
    ctx = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)

    @functools.wraps(spec.fn)
    def call(*, ctx: Context[Any, Any], **kwargs: Any) -> BaseModel:
        return run(spec, ctx, kwargs)

    ordered = [a.replace(kind=inspect.Parameter.KEYWORD_ONLY) for a in arguments]
    call.__signature__ = signature.replace(parameters=[*ordered, ctx])  # type: ignore[attr-defined]
    call.__annotations__ = {
        **{a.name: a.annotation for a in arguments},
        "ctx": Context,
        "return": signature.return_annotation,
    }
    del call.__wrapped__  # inspect must read __signature__, not the tool's own (which has the caller)
    return call

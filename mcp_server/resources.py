"""The MCP resources: what an agent reads as documents rather than calls as tools. `rebound://services` (every
service in one row: breaker, degradation, escalations, busiest pattern), `rebound://services/{name}` (one
service as the REST API answers it, with its breaker, its degradation and its fallback chain) and
`rebound://escalations/open` (what waits for a human, most urgent first). JSON, read through the same selectors
and shaped by the same output models as the REST API; any key that may read the API may read them.

Each read is checked like a tool call: the key of the request (or the stdio process's key) verified, the caller a
reader, on the SDK's worker thread with the database connection handled as around a request. The SDK hands a
resource template its Context but a static resource nothing, so a small middleware keeps the request of each
`resources/read` where the static resources' functions find it."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.db import close_old_connections
from django.utils import timezone
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST
from pydantic import BaseModel, Field

from core.api.errors import DATABASE_UNAVAILABLE, DomainError, Forbidden, NotFound, ServiceUnavailable
from healing.escalations import selectors as escalation_selectors
from healing.escalations.schemas import EscalationOut
from mcp_server import callers, running
from recovery.breakers import selectors as breaker_selectors
from recovery.breakers.schemas import BreakerOut, ServiceOut
from recovery.decisions import fallbacks
from recovery.decisions.schemas import ChainOut
from recovery.degradation import selectors as degradation_selectors
from recovery.degradation.schemas import LevelOut, ServiceLevelOut
from recovery.errors import selectors as error_selectors

T = TypeVar("T")

JSON = "application/json"
# Each service's busiest pattern: over the last hour, as on the console's fleet page.
PATTERN_WINDOW_MIN = 60
MAX_ESCALATIONS = 100
UNAVAILABLE = "Rebound's database cannot answer now; try again in a few seconds."


# --- reading as the caller -----------------------------------------------------------------------------------

# The request of the `resources/read` being served (the static resources' functions get no Context).
_request: ContextVar[ServerRequestContext[Any, Any] | None] = ContextVar("mcp_resource_request", default=None)


async def remember_request(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """SDK middleware: keep the request of a resources/read for the resource's function (its worker thread
    runs in a copy of this context)."""
    if ctx.method != "resources/read":
        return await call_next(ctx)
    token = _request.set(ctx)
    try:
        return await call_next(ctx)
    finally:
        _request.reset(token)


def current_context() -> Context[Any, Any]:
    """The Context of the resources/read being served; an empty one outside a request (the stdio key then)."""
    return Context(request_context=_request.get())


def read_as(ctx: Context[Any, Any] | None, what: str, read: Callable[[callers.Caller], T]) -> T:
    """On the SDK's worker thread: verify the call's key, require a reader, then read. Rebound's errors become
    MCP errors with a clear text (a resource or a prompt has no tool error to answer with): an unknown thing is
    the SDK's resource-not-found error (-32602), a bad argument -32602 naming it, a refused key -32600."""
    close_old_connections()
    try:
        caller = callers.caller_of(ctx)
        callers.require_reader(caller, what)
        return read(caller)
    except callers.Unauthenticated as error:
        raise MCPError(INVALID_REQUEST, str(error)) from None
    except Forbidden as error:
        raise MCPError(INVALID_REQUEST, running.describe(error)) from None
    except NotFound as error:
        raise ResourceNotFoundError(running.describe(error)) from None
    except (ServiceUnavailable, *DATABASE_UNAVAILABLE):
        raise MCPError(INTERNAL_ERROR, UNAVAILABLE) from None
    except DomainError as error:
        raise MCPError(INVALID_PARAMS, running.describe(error)) from None
    finally:
        close_old_connections()


def _json(model: BaseModel) -> str:
    return model.model_dump_json(indent=2)


# --- rebound://services ----------------------------------------------------------------------------------------


class TopPatternOut(BaseModel):
    """A service's busiest error pattern of the last hour."""

    id: int = Field(description="GET /api/v1/patterns/{id}.")
    error_class: str
    severity: str
    message_template: str = Field(description="The message with its variable parts masked.")
    count_last_hour: int = Field(description="Its errors over the last 60 minutes.")
    last_seen_at: datetime


class ServiceRowOut(BaseModel):
    """One service as the fleet overview shows it."""

    name: str
    criticality: str
    state: str = Field(
        description="The breaker's effective state: closed, open, half_open, an override in force "
        "(forced_open, forced_closed, disabled), or unknown when the breaker store cannot be read."
    )
    state_since: datetime | None = Field(description="The breaker's last transition; null: it never changed.")
    degradation: LevelOut = Field(description="The level in force: the worse of the fleet's and its own.")
    open_escalations: int = Field(description="Escalations of this service not resolved yet.")
    escalations_by_level: dict[str, int] = Field(description="The same, by level (only the levels present).")
    top_pattern: TopPatternOut | None = Field(
        description="Its busiest error pattern of the last hour, if any."
    )


class ServicesOut(BaseModel):
    """Every service Rebound knows, by name."""

    count: int
    services: list[ServiceRowOut]


def services_index(caller: callers.Caller) -> ServicesOut:
    """Every service with its breaker, degradation, open escalations and busiest pattern: one bulk read per
    room (the console's fleet page reads), so the queries do not grow with the number of services."""
    now = timezone.now()
    services = list(breaker_selectors.services())
    breakers = breaker_selectors.breaker_states(services)
    levels, _ = degradation_selectors.levels_of([s.name for s in services], now)
    escalations = escalation_selectors.open_by_service()
    patterns = error_selectors.top_pattern_by_service(now - timedelta(minutes=PATTERN_WINDOW_MIN))
    rows = []
    for service in services:
        by_level = escalations.get(service.name, {})
        pattern = patterns.get(service.name)
        rows.append(
            ServiceRowOut(
                name=service.name,
                criticality=service.criticality,
                state=breakers[service.name].state,
                state_since=breakers[service.name].since,
                degradation=LevelOut.of(levels[service.name]),
                open_escalations=sum(by_level.values()),
                escalations_by_level=by_level,
                top_pattern=_pattern(pattern) if pattern is not None else None,
            )
        )
    return ServicesOut(count=len(rows), services=rows)


def _pattern(pattern: Any) -> TopPatternOut:
    return TopPatternOut(
        id=pattern.pk,
        error_class=pattern.error_class,
        severity=pattern.severity,
        message_template=pattern.message_template,
        count_last_hour=pattern.recent,
        last_seen_at=pattern.last_seen_at,
    )


# --- rebound://services/{name} --------------------------------------------------------------------------------


class ServiceDetailOut(BaseModel):
    """One service: as GET /api/v1/services/{name}, its breaker as GET /api/v1/breakers/{name}, its level as
    GET /api/v1/degradation?service={name}, and its fallback chain as GET /api/v1/fallbacks/{name}."""

    service: ServiceOut
    breaker: BreakerOut
    degradation: ServiceLevelOut
    fallbacks: ChainOut = Field(description="The chain for every operation, each option's availability now.")


def service_detail(caller: callers.Caller, name: str) -> ServiceDetailOut:
    """One service; NotFound (naming `service`) when Rebound does not know it."""
    service = breaker_selectors.known_service(name)
    return ServiceDetailOut(
        service=ServiceOut.model_validate(service),
        breaker=BreakerOut.model_validate(breaker_selectors.breaker_view(service)),
        degradation=ServiceLevelOut.of(degradation_selectors.for_service(service)),
        fallbacks=ChainOut.of(fallbacks.chain_now(service, "")),
    )


# --- rebound://escalations/open -------------------------------------------------------------------------------


class OpenEscalationsOut(BaseModel):
    """The escalations not resolved yet (open, acknowledged, snoozed), most urgent first (emergency first, then
    the oldest), as GET /api/v1/escalations shapes them. An agent's key sees the escalations that agent raised."""

    count: int = Field(description="How many are not resolved (the list holds at most 100).")
    escalations: list[EscalationOut]


def open_escalations(caller: callers.Caller) -> OpenEscalationsOut:
    # The REST queue's order and visibility; the states not resolved, which the REST API filters one at a time.
    found = escalation_selectors.open_queue(agent=caller.agent)
    rows = [EscalationOut.of(e) for e in found[:MAX_ESCALATIONS]]
    count = len(rows) if len(rows) < MAX_ESCALATIONS else found.count()
    return OpenEscalationsOut(count=count, escalations=rows)


# --- registration -----------------------------------------------------------------------------------------------


def _services() -> str:
    return _json(read_as(current_context(), "rebound://services", services_index))


def _service(name: str, ctx: Context) -> str:
    return _json(read_as(ctx, "rebound://services/{name}", lambda caller: service_detail(caller, name)))


def _escalations() -> str:
    return _json(read_as(current_context(), "rebound://escalations/open", open_escalations))


def register(server: MCPServer[Any]) -> None:
    server.middleware.append(remember_request)
    server.resource(
        "rebound://services",
        name="services",
        title="Services",
        description="Every service Rebound knows: its breaker's state, its degradation level, its open "
        "escalations and its busiest error pattern of the last hour.",
        mime_type=JSON,
    )(_services)
    server.resource(
        "rebound://services/{name}",
        name="service",
        title="One service",
        description="One service: its settings, its breaker (state, window, why), its degradation level and its "
        "fallback chain with each option's availability now.",
        mime_type=JSON,
    )(_service)
    server.resource(
        "rebound://escalations/open",
        name="open_escalations",
        title="Open escalations",
        description="The escalations not resolved yet, most urgent first (at most 100): what waits for a human. "
        "An agent's key sees those it raised.",
        mime_type=JSON,
    )(_escalations)

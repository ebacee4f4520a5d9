"""force_degradation: force a degradation level on the fleet or one service (operators' keys only; audited).
The same input, service and output as POST /api/v1/degradation (recovery/degradation/api.py), with the REST
field `scope` named `service` here, as the issue names it, in the arguments and in every error."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, TypeAdapter

from core.api.errors import DomainError, InvalidInput, NotFound
from core.api.validation import parse
from mcp_server import callers
from mcp_server.running import tool
from recovery.breakers.schemas import Expiry
from recovery.degradation import selectors
from recovery.degradation import services as degradation_services
from recovery.degradation.schemas import MAX_TTL_S, ForceIn, LevelName, Reason, Scope, StateOut

_FORCE = TypeAdapter(ForceIn)


@tool(title="Force a degradation level", read_only=False, destructive=True, idempotent=True)
def force_degradation(
    caller: callers.Caller,
    service: Annotated[Scope, Field(description="'*' for the whole fleet, or a service's name.")],
    level: Annotated[
        LevelName,
        Field(description="normal, degraded, minimal or emergency; normal pins the scope at normal."),
    ],
    reason: Annotated[Reason, Field(description="Why: kept in the audit trail.")],
    expires_at: Annotated[
        Expiry | None,
        Field(description="When the forced level ends (ISO 8601 with an offset); default: until cleared."),
    ] = None,
    ttl_s: Annotated[
        float | None,
        Field(gt=0, le=MAX_TTL_S, description="Or: how many seconds from now it ends (at most 30 days)."),
    ] = None,
) -> StateOut:
    """Force the degradation level of the whole fleet ('*') or of one service, whatever the automatic rules
    say, until expires_at (or ttl_s seconds from now) or until an operator clears it: agents then skip the
    services that level sheds. Operators' keys only (an agent's key is refused); audited with the key's user.
    Answers the scope's state after the change."""
    callers.require_operator(caller, "force_degradation")
    data = {"scope": service, "level": level, "reason": reason, "expires_at": expires_at, "ttl_s": ttl_s}
    try:
        body = parse(_FORCE, {name: value for name, value in data.items() if value is not None})
        degradation_services.force(
            scope=body.scope,
            level=body.level,
            reason=body.reason,
            expires_at=body.ends_at(),
            actor=caller.actor,
        )
    except (InvalidInput, NotFound) as error:
        raise _named_service(error) from None
    return StateOut.of_state(selectors.scope_state(body.scope))


def _named_service(error: DomainError) -> DomainError:
    """The same error with the field `scope` (ForceIn's, the services') named `service`, as this tool's
    argument is."""

    errors = [{**item, "field": "service"} if item.get("field") == "scope" else item for item in error.errors]
    field = "service" if error.field == "scope" else error.field
    return type(error)(error.message.replace("scope: ", "service: "), field=field, errors=errors)

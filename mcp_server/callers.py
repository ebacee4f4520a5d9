"""Who calls a tool: the API key of the HTTP request, or the stdio process's key (REBOUND_API_KEY), verified
exactly as the REST API verifies it (core.access.authentication.verify: the same cache, the same refusals), and
what that principal may do (core.access.roles: the same rules as the REST API's permissions)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from mcp.server.mcpserver import Context
from rest_framework import exceptions

from core.access import roles
from core.access.authentication import Principal, verify
from core.access.models import Agent, ApiKey
from core.api.errors import Forbidden
from core.audit.models import AuditEvent
from core.audit.services import Actor


class Unauthenticated(Exception):
    """No key, or a key Rebound does not accept (unknown, revoked, its agent or user deactivated)."""


@dataclass(frozen=True)
class Caller:
    principal: Principal
    api_key: ApiKey

    @property
    def agent(self) -> Agent | None:
        agent: Agent | None = roles.agent_of(self.principal)
        return agent

    @property
    def user(self) -> AbstractBaseUser | None:
        return None if roles.is_agent(self.principal) else self.principal  # type: ignore[return-value]

    @property
    def label(self) -> str:
        """What the logs and the metrics' log lines name: `agent:<name>` or the user's name."""
        return str(self.principal.get_username())

    @property
    def actor(self) -> Actor:
        """The audit trail's actor: the key's agent or the key's user, through the MCP source."""
        if self.agent is not None:
            return Actor(agent=self.agent, source=AuditEvent.Source.MCP)
        return Actor(user=self.principal, source=AuditEvent.Source.MCP)


# The stdio transport's key: one process, one key, set once at start-up (mcp_server/transports.py).
_process_key: str | None = None
_process_label = ""


def use_process_key(plaintext: str | None, label: str = "") -> None:
    """The stdio process's key, and who it is (`agent:<name>` or the user's name) for the log lines of calls
    that never reach the key check (the SDK refused their arguments)."""
    global _process_key, _process_label
    _process_key = plaintext or None
    _process_label = label if plaintext else ""


def process_label() -> str:
    return _process_label


def bearer_of(headers: Any) -> str | None:
    """The token of an `Authorization: Bearer <key>` header, or None."""
    header = str(headers.get("authorization", "")) if headers is not None else ""
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def key_of(ctx: Context[Any, Any] | None) -> str | None:
    """The key of this call: the HTTP request's bearer key, else the stdio process's key."""
    request = None
    if ctx is not None:
        try:
            request = ctx.request_context.request
        except ValueError:  # no request: a call from inside the process (tests)
            request = None
    headers = getattr(request, "headers", None)
    if headers is not None:
        return bearer_of(headers)
    return _process_key


def authenticate(plaintext: str | None) -> Caller:
    """The caller behind a key; Unauthenticated when there is none or Rebound refuses it. A database outage
    raises core.api.errors.ServiceUnavailable, as it does for the REST API."""
    if not plaintext:
        raise Unauthenticated(
            "No API key: send `Authorization: Bearer <key>` (HTTP) or set REBOUND_API_KEY (stdio)."
        )
    try:
        principal, api_key = verify(plaintext)
    except exceptions.AuthenticationFailed as error:
        raise Unauthenticated(str(error.detail)) from None
    return Caller(principal=principal, api_key=api_key)


def caller_of(ctx: Context[Any, Any] | None) -> Caller:
    return authenticate(key_of(ctx))


# --- what a caller may do: the REST API's permission classes, as checks that name the tool ------------------


def require_reader(caller: Caller, what: str) -> None:
    """Reading: any agent key, or a user key whose user is a viewer, reviewer or operator (IsAuthenticatedPrincipal)."""
    if not (roles.is_agent(caller.principal) or roles.is_viewer(caller.principal)):
        raise Forbidden(
            f"{what} needs an agent key or the key of a user with a role (viewer, reviewer, operator)."
        )


def require_agent_or_operator(caller: Caller, what: str) -> None:
    """Handing work over: agent keys, and operators' keys (AgentOrOperator)."""
    if not (roles.is_agent(caller.principal) or roles.is_operator(caller.principal)):
        raise Forbidden(f"{what} needs an agent key or an operator's key; viewers and reviewers only read.")


def require_operator(caller: Caller, what: str) -> None:
    """Operators' actions (IsOperator): an agent key is refused, and says so."""
    if not roles.is_operator(caller.principal):
        who = "an agent key" if roles.is_agent(caller.principal) else "this user's key"
        raise Forbidden(f"{what} needs an operator's key; {who} may not do it.")

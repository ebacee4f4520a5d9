"""The MCP server: Rebound's tools, resources and prompt on the official SDK's MCPServer. Built once per process
by `manage.py mcp` (mcp_server/transports.py), for stdio or for streamable HTTP."""

from __future__ import annotations

import inspect
from typing import Any

from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer

from mcp_server import observe, prompts, resources, running
from mcp_server.tools import degradation, fallbacks, healing, recovery, retries, status

INSTRUCTIONS = """Rebound is the resilience control plane of this agent fleet. When a call to a tool, model or API
fails, ask Rebound what to do instead of guessing: get_recovery_options with the error answers retry (after how
long), fall back (to what), degrade, escalate or abort, and why. get_error_status shows what is broken now,
get_fallback_status what can stand in for a service, retry_operation hands a call to Rebound's own workers to
retry, trigger_healing asks for a repair under the fleet's approval policy. The prompt `call_failed` walks
through it."""

# Imported for their @running.tool registrations; named so that the order of the tools is this one.
TOOL_MODULES = (status, retries, recovery, healing, fallbacks, degradation)


def build(*, auth: AuthSettings | None = None, token_verifier: TokenVerifier | None = None) -> MCPServer[Any]:
    server: MCPServer[Any] = MCPServer(
        "rebound",
        title="Rebound",
        instructions=INSTRUCTIONS,
        version="1",
        auth=auth,
        token_verifier=token_verifier,
        middleware=[observe.count_tool_calls],
    )
    order = [module.__name__ for module in TOOL_MODULES]
    for spec in sorted(running.specs(), key=lambda spec: order.index(spec.fn.__module__)):
        server.add_tool(
            running.sdk_function(spec),
            name=spec.name,
            title=spec.title,
            description=inspect.cleandoc(spec.fn.__doc__ or ""),
            annotations=spec.annotations,
            structured_output=True,
        )
    resources.register(server)
    prompts.register(server)
    return server

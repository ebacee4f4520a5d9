"""A tool called as the SDK calls it, in the test's own thread and database transaction (no tests here)."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver.tools.base import Tool
from mcp_types import CallToolResult

from mcp_server import callers, running

# The six tools, as every client must find them.
TOOL_NAMES = {
    "get_error_status",
    "retry_operation",
    "get_recovery_options",
    "trigger_healing",
    "get_fallback_status",
    "force_degradation",
}


def through_sdk(caller: callers.Caller, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The call as the SDK makes it, minus the transport and the worker thread: the JSON arguments validated
    against the tool's input schema, the tool run, its answer checked against the output schema and dumped."""
    spec = next(s for s in running.specs() if s.name == name)
    sdk_tool = Tool.from_function(running.sdk_function(spec), name=name, structured_output=True)
    answer = spec.fn(caller, **sdk_tool.fn_metadata.validate_arguments(arguments))
    result = sdk_tool.fn_metadata.convert_result(answer)
    assert isinstance(result, CallToolResult) and result.structured_content is not None
    return result.structured_content

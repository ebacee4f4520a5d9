"""The MCP server's Prometheus metrics, named like the rest (recovery/metrics.py). With PROMETHEUS_MULTIPROC_DIR
set, the MCP process writes its samples beside gunicorn's and Celery's, and the web's /metrics adds them up."""

from prometheus_client import Counter, Histogram

# `result`: ok, invalid (bad arguments), refused (the key may not do this), unauthenticated (unknown or revoked
# key), not_found, conflict, unavailable (the database cannot answer now), error (a bug: see the log).
mcp_tool_calls_total = Counter(
    "mcp_tool_calls_total", "MCP tool calls, by tool and result.", ["tool", "result"]
)
mcp_tool_call_seconds = Histogram(
    "mcp_tool_call_seconds",
    "How long an MCP tool call took in the server, arguments checked to answer shaped.",
    ["tool"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

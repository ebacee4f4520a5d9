from django.apps import AppConfig


class McpServerConfig(AppConfig):
    """The agents' MCP tools: a face above healing, recovery and core, like the console; nothing imports it."""

    name = "mcp_server"
    verbose_name = "MCP server"

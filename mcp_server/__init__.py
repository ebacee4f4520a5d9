"""The MCP server: Rebound's six tools for agents on the official MCP SDK (`manage.py mcp`).

Reserved: the MCP issue builds it here. Named mcp_server, not mcp, so that it never shadows the SDK package.
"""

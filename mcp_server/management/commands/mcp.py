"""`python manage.py mcp`: Rebound's MCP server, over stdio (the key in REBOUND_API_KEY) or streamable HTTP."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.infra import tracing
from core.infra.conf import rebound
from mcp_server import transports


def port_number(value: str) -> int:
    """--port: a TCP port, 1 to 65535 (a CommandError naming --port otherwise)."""
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 1 <= port <= 65_535:
        raise CommandError(f"--port: {value!r} is not a TCP port (1 to 65535).")
    return port


class Command(BaseCommand):
    help = (
        "Serve Rebound's MCP server. stdio (the default, for desktop clients): acts with the API key in "
        "REBOUND_API_KEY. http: streamable HTTP at http://HOST:PORT/mcp (default MCP_HOST:MCP_PORT, "
        "127.0.0.1:8001), each request authenticated by its `Authorization: Bearer <key>`."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
        parser.add_argument("--host", default=None, help="HTTP: the address to listen on (MCP_HOST).")
        parser.add_argument("--port", default=None, help="HTTP: the port to listen on (MCP_PORT).")

    def handle(self, *args: Any, transport: str, host: str | None, port: str | None, **options: Any) -> None:
        tracing.configure("mcp")
        if transport == "stdio":
            if host is not None or port is not None:
                raise CommandError("--host and --port are for --transport http; stdio has neither.")
            transports.serve_stdio()
            return
        chosen = port_number(str(port if port is not None else rebound("MCP_PORT")))
        transports.serve_http(host or str(rebound("MCP_HOST")), chosen)

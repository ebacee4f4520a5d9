"""`rebound-mcp [--transport stdio|http] [--host H] [--port P]`: `manage.py mcp` from anywhere, for desktop MCP
clients that start the server themselves (the console script declared in pyproject.toml). Django's own command
line runs it, so a bad argument or a refused key ends with a message on stderr and a non-zero exit, never a
traceback, and stdout stays the protocol's."""

from __future__ import annotations

import os
import sys

from django.core.management import execute_from_command_line


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    arguments = sys.argv[1:] if argv is None else argv
    execute_from_command_line(["rebound-mcp", "mcp", *arguments])

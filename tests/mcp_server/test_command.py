"""`manage.py mcp` and `rebound-mcp`: which transport, host and port, and the refusals of bad arguments (nothing
is served: the transports are replaced by recorders)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from mcp_server import cli, transports
from tests.support import factories


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """What the command would serve: ("stdio",) or ("http", host, port)."""
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(transports, "serve_stdio", lambda: calls.append(("stdio",)))
    monkeypatch.setattr(transports, "serve_http", lambda host, port: calls.append(("http", host, port)))
    return calls


def test_it_serves_stdio_by_default(served: list[tuple[Any, ...]]) -> None:
    call_command("mcp")
    assert served == [("stdio",)]


def test_it_serves_http_on_mcp_host_and_mcp_port_by_default(served: list[tuple[Any, ...]]) -> None:
    with override_settings(REBOUND=factories.rebound_settings(MCP_HOST="127.0.0.1", MCP_PORT=8001)):
        call_command("mcp", "--transport", "http")
    assert served == [("http", "127.0.0.1", 8001)]


def test_it_serves_http_on_the_host_and_port_given(served: list[tuple[Any, ...]]) -> None:
    call_command("mcp", "--transport", "http", "--host", "0.0.0.0", "--port", "9123")
    assert served == [("http", "0.0.0.0", 9123)]


@pytest.mark.parametrize("port", ["nope", "0", "65536", "-1", "80.5"])
def test_it_refuses_a_bad_port_naming_it(served: list[tuple[Any, ...]], port: str) -> None:
    with pytest.raises(CommandError, match=r"^--port: .* is not a TCP port \(1 to 65535\)\.$"):
        call_command("mcp", "--transport", "http", "--port", port)
    assert served == []


def test_it_refuses_a_host_or_port_for_stdio(served: list[tuple[Any, ...]]) -> None:
    with pytest.raises(CommandError, match="--host and --port are for --transport http"):
        call_command("mcp", "--port", "9000")
    assert served == []


def test_it_refuses_an_unknown_transport(served: list[tuple[Any, ...]]) -> None:
    with pytest.raises(CommandError, match="invalid choice: 'sse'"):
        call_command("mcp", "--transport", "sse")
    assert served == []


def test_it_runs_the_command_as_rebound_mcp(served: list[tuple[Any, ...]]) -> None:
    cli.main(["--transport", "http", "--port", "9124"])
    assert served[0][0::2] == ("http", 9124)


def test_it_ends_rebound_mcp_with_the_message_on_stderr_and_exit_1(
    served: list[tuple[Any, ...]], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--transport", "http", "--port", "nope"])
    assert exited.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "--port: 'nope' is not a TCP port" in captured.err
    assert served == []

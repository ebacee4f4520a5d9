"""The MCP server as agents meet it, for the slow tests: `python manage.py mcp` as a real process, over stdio
(started by the SDK's own `stdio_client`) or over streamable HTTP (on a free port, `/mcp`, `/healthz`), in
production mode on the test database and the test Redis, beside a real gunicorn serving the REST API to
compare with. No tests here.

The SDK's client is asynchronous and the ORM is not: `Session` keeps one `mcp.ClientSession` open in an anyio
blocking portal (its event loop on a thread of its own), so that a test stays a plain function that makes state
with the ORM or the REST API, calls a tool, and reads rows again.

The fixtures `mcp_servers` (gunicorn and the MCP HTTP server of a test module, sharing one Prometheus folder)
and `rest_server` (gunicorn alone) are used by importing them as `from tests.support.mcp_processes import
mcp_servers as mcp_servers`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import httpx2
import mcp_types
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client._transport import TransportStreams
from mcp.client.streamable_http import streamable_http_client

from tests.support.processes import PYTHON, ROOT, free_port, process_env
from tests.support.sdk_server import SdkServer

MCP_COMMAND = [PYTHON, "manage.py", "mcp"]


def mcp_env(folder: Path, **extra: str) -> dict[str, str]:
    """The MCP process's environment: production mode on the test database and Redis (process_env), every key
    verified at each call (a revoked key is refused at once, not after the cache's few seconds), INFO logs in
    JSON (the tests read the call log lines)."""
    return process_env(folder, API_KEY_CACHE_SECONDS="0", LOG_LEVEL="INFO", **extra)


# --- streamable HTTP --------------------------------------------------------------------------------------


class McpHttpServer:
    """`manage.py mcp --transport http` on a free port of 127.0.0.1, in its own process group."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.env = env
        self.log = log
        self.process: subprocess.Popen[Any] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"{self.url}/mcp"

    def start(self, timeout: float = 60) -> McpHttpServer:
        args = [*MCP_COMMAND, "--transport", "http", "--host", "127.0.0.1", "--port", str(self.port)]
        self.process = subprocess.Popen(
            args,
            cwd=ROOT,
            env=self.env,
            stdout=self.log.open("a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the MCP server exited with {self.process.returncode}:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"the MCP server did not answer /healthz within {timeout:g} s:\n{self.tail()}")

    def stop(self) -> None:
        """SIGTERM (uvicorn's graceful stop), SIGKILL to the group if it takes too long."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log lines the server wrote so far."""
        return json_lines(self.log)


def json_lines(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
    return records


# --- the SDK's client, kept open from synchronous tests -----------------------------------------------------


class Session:
    """A synchronous face on an initialized `mcp.ClientSession`: each method runs the session's coroutine in
    the portal's event loop and waits for it."""

    def __init__(self, portal: BlockingPortal, session: ClientSession, problems: list[Exception]) -> None:
        self._portal = portal
        self.session = session
        # What the transport could not parse (e.g. a stray print on the stdio server's stdout).
        self.problems = problems

    def _run(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._portal.call(partial(method, *args, **kwargs))

    @property
    def server_info(self) -> mcp_types.Implementation | None:
        return self.session.server_info

    @property
    def instructions(self) -> str | None:
        return self.session.instructions

    def list_tools(self) -> mcp_types.ListToolsResult:
        answer: mcp_types.ListToolsResult = self._run(self.session.list_tools)
        return answer

    def call(self, name: str, **arguments: Any) -> mcp_types.CallToolResult:
        """tools/call; a tool error comes back as a result with is_error, not as an exception."""
        answer: mcp_types.CallToolResult = self._run(self.session.call_tool, name, arguments)
        return answer

    def list_resources(self) -> mcp_types.ListResourcesResult:
        answer: mcp_types.ListResourcesResult = self._run(self.session.list_resources)
        return answer

    def list_resource_templates(self) -> mcp_types.ListResourceTemplatesResult:
        answer: mcp_types.ListResourceTemplatesResult = self._run(self.session.list_resource_templates)
        return answer

    def read_resource(self, uri: str) -> mcp_types.ReadResourceResult:
        answer: mcp_types.ReadResourceResult = self._run(self.session.read_resource, uri)
        return answer

    def list_prompts(self) -> mcp_types.ListPromptsResult:
        answer: mcp_types.ListPromptsResult = self._run(self.session.list_prompts)
        return answer

    def get_prompt(self, name: str, **arguments: str) -> mcp_types.GetPromptResult:
        answer: mcp_types.GetPromptResult = self._run(self.session.get_prompt, name, arguments)
        return answer


Transport = Callable[[], AbstractAsyncContextManager[TransportStreams]]


@contextmanager
def session(transport: Transport) -> Iterator[Session]:
    """An initialized client session over `transport`, open for the `with` block."""
    problems: list[Exception] = []

    async def note(message: Any) -> None:
        if isinstance(message, Exception):
            problems.append(message)

    @asynccontextmanager
    async def opened() -> AsyncIterator[ClientSession]:
        async with transport() as (read, write), ClientSession(read, write, message_handler=note) as client:
            await client.initialize()
            yield client

    with start_blocking_portal() as portal, portal.wrap_async_context_manager(opened()) as client:
        yield Session(portal, client, problems)


def http_transport(endpoint: str, key: str | None) -> Transport:
    """The SDK's streamable HTTP client, each request with `Authorization: Bearer <key>` (none without a key)."""

    @asynccontextmanager
    async def opened() -> AsyncIterator[TransportStreams]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        timeout = httpx2.Timeout(30.0, read=300.0)
        async with (
            httpx2.AsyncClient(headers=headers, timeout=timeout) as client,
            streamable_http_client(endpoint, http_client=client) as streams,
        ):
            yield streams

    return opened


def http_session(endpoint: str, key: str | None) -> contextlib.AbstractContextManager[Session]:
    return session(http_transport(endpoint, key))


def stdio_parameters(
    env: dict[str, str], key: str | None, command: list[str] = MCP_COMMAND
) -> StdioServerParameters:
    """`python manage.py mcp` (stdio is the default transport; or `command`, e.g. the console script) with the key
    in REBOUND_API_KEY."""
    variables = {k: v for k, v in env.items() if k != "REBOUND_API_KEY"}
    if key is not None:
        variables["REBOUND_API_KEY"] = key
    return StdioServerParameters(command=command[0], args=command[1:], env=variables, cwd=ROOT)


@contextmanager
def stdio_session(
    env: dict[str, str], key: str, stderr: Path, command: list[str] = MCP_COMMAND
) -> Iterator[Session]:
    """A stdio server process started by the SDK's stdio_client; its stderr (the logs) goes to `stderr`."""
    with stderr.open("a") as errlog:
        parameters = stdio_parameters(env, key, command)
        with session(lambda: stdio_client(parameters, errlog=errlog)) as opened:
            yield opened


def run_stdio(env: dict[str, str], key: str | None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`manage.py mcp` over stdio with nothing on its stdin: a refused key must end it at once."""
    parameters = stdio_parameters(env, key)
    return subprocess.run(
        [parameters.command, *parameters.args],
        cwd=ROOT,
        env=parameters.env,
        input="",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --- answers ---------------------------------------------------------------------------------------------


def structured(result: mcp_types.CallToolResult) -> dict[str, Any]:
    """A successful call's structured output (the SDK client has checked it against the output schema)."""
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return dict(result.structured_content)


def text_of(result: mcp_types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, mcp_types.TextContent))


def error_text(result: mcp_types.CallToolResult) -> str:
    """A tool error's text (the call must have failed)."""
    assert result.is_error, f"expected a tool error, got {result.structured_content}"
    return text_of(result)


class Rest:
    """The REST API of the gunicorn process, as one key sees it."""

    def __init__(self, base_url: str, key: str) -> None:
        self.base_url = base_url
        self.key = key

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def get(self, path: str, **params: Any) -> Any:
        answer = httpx.get(f"{self.base_url}{path}", params=params, headers=self._headers(), timeout=15)
        assert answer.status_code == 200, f"GET {path}: {answer.status_code} {answer.text}"
        return answer.json()

    def post(self, path: str, body: dict[str, Any], expect: tuple[int, ...] = (200, 201)) -> Any:
        answer = httpx.post(f"{self.base_url}{path}", json=body, headers=self._headers(), timeout=15)
        assert answer.status_code in expect, f"POST {path}: {answer.status_code} {answer.text}"
        return answer.json()


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition (0 when absent), labels in any order."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        names, _, value = line.rpartition(" ")
        found = dict(part.split("=", 1) for part in names[len(name) + 1 : -1].split(",") if "=" in part)
        if {k: v.strip('"') for k, v in found.items()} == labels:
            return float(value)
    return 0.0


# --- fixtures -----------------------------------------------------------------------------------------------


@dataclass
class McpServers:
    """A test module's gunicorn (the REST API) and MCP HTTP server, on the test database and Redis, writing
    their Prometheus samples to one folder (the web's /metrics adds the MCP process's up)."""

    rest: SdkServer
    mcp: McpHttpServer
    metrics: Path


@pytest.fixture(scope="module")
def mcp_servers(
    django_db_setup: Any, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[McpServers]:
    folder = Path(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    metrics = folder / "prometheus"
    metrics.mkdir()
    rest = SdkServer(folder)
    rest.env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    mcp = McpHttpServer(mcp_env(folder, PROMETHEUS_MULTIPROC_DIR=str(metrics)), folder / "mcp.log")
    rest.start()
    try:
        mcp.start()
        yield McpServers(rest=rest, mcp=mcp, metrics=metrics)
    finally:
        mcp.stop()
        rest.stop()


@pytest.fixture(scope="module")
def rest_server(
    django_db_setup: Any, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[SdkServer]:
    """gunicorn alone, for the stdio tests' comparisons with the REST API."""
    folder = Path(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1] + "-rest"))
    running = SdkServer(folder).start()
    yield running
    running.stop()

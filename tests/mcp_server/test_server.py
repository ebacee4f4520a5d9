"""The MCP server as the SDK's own client sees it, in process (`mcp.Client(server)`): the six tools with their
input and output schemas and annotations, the resources, the template and the prompt, a call that works, tool
errors naming the argument at fault, a refused key, and every call counted and logged with its caller.

The SDK runs tools, resources and prompts on worker threads with database connections of their own: the data
is committed (transactional_db), and each worker's connection is closed after its call (CONN_MAX_AGE 0), so that
none keeps the test database busy at the end of the run. Real processes over stdio and HTTP: test_stdio.py and
test_http.py (slow)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import anyio
import pytest
from django.db import connections
from mcp import Client
from mcp.shared.exceptions import MCPError
from prometheus_client import REGISTRY

from core.access import services as access
from core.audit.services import Actor
from mcp_server import callers, server
from recovery.breakers.models import Service
from tests.support import factories
from tests.support.escalations import raise_one
from tests.support.mcp_calls import TOOL_NAMES

T = TypeVar("T")

TOOLS = TOOL_NAMES
REQUIRED = {
    "get_error_status": [],
    "retry_operation": [],
    "get_recovery_options": ["service"],
    "trigger_healing": ["action", "reason", "service"],
    "get_fallback_status": ["service"],
    "force_degradation": ["level", "reason", "service"],
}


@pytest.fixture(autouse=True)
def in_process(transactional_db: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", 0)
    yield
    callers.use_process_key(None)


def session(scenario: Callable[[Client], Awaitable[T]], key: str | None = None) -> T:
    """Run a scenario against a new server in this process, acting with `key` (as the stdio process does)."""
    callers.use_process_key(key)

    async def main() -> T:
        async with Client(server.build()) as client:
            return await scenario(client)

    return anyio.run(main)


def agent_key() -> str:
    return factories.agent_key()[1]


def calls(tool: str, result: str) -> float:
    return REGISTRY.get_sample_value("mcp_tool_calls_total", {"tool": tool, "result": result}) or 0.0


def text_of(result: Any) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


# --- what the server offers ------------------------------------------------------------------------------------


def test_it_lists_the_six_tools_with_their_input_and_output_schemas() -> None:
    async def scenario(client: Client) -> Any:
        return (await client.list_tools()).tools

    tools = {tool.name: tool for tool in session(scenario, agent_key())}

    assert set(tools) == TOOLS
    for name, tool in tools.items():
        assert tool.description and tool.title, name
        assert tool.input_schema["type"] == "object", name
        assert sorted(tool.input_schema.get("required", [])) == REQUIRED[name], name
        assert "ctx" not in tool.input_schema["properties"], name
        for argument in REQUIRED[name]:
            assert tool.input_schema["properties"][argument].get("description"), (name, argument)
        assert tool.output_schema is not None and tool.output_schema["type"] == "object", name


def test_it_marks_which_tools_only_read_and_which_change_things() -> None:
    async def scenario(client: Client) -> Any:
        return (await client.list_tools()).tools

    notes = {tool.name: tool.annotations for tool in session(scenario, agent_key())}

    assert {name for name, note in notes.items() if note and note.read_only_hint} == {
        "get_error_status",
        "get_fallback_status",
    }
    assert {name for name, note in notes.items() if note and note.destructive_hint} == {
        "trigger_healing",
        "force_degradation",
    }
    assert notes["retry_operation"] is not None and notes["retry_operation"].idempotent_hint
    assert all(note is not None and note.open_world_hint is False for note in notes.values())


def test_it_lists_the_resources_the_template_and_the_prompt() -> None:
    async def scenario(client: Client) -> Any:
        return (
            (await client.list_resources()).resources,
            (await client.list_resource_templates()).resource_templates,
            (await client.list_prompts()).prompts,
        )

    resources, templates, prompts = session(scenario, agent_key())

    assert {(str(r.uri), r.mime_type) for r in resources} == {
        ("rebound://services", "application/json"),
        ("rebound://escalations/open", "application/json"),
    }
    assert [(t.uri_template, t.mime_type) for t in templates] == [
        ("rebound://services/{name}", "application/json")
    ]
    [prompt] = prompts
    assert prompt.name == "call_failed"
    assert [(a.name, a.required) for a in prompt.arguments or []] == [
        ("service", True),
        ("error", True),
        ("operation", False),
    ]
    assert all(a.description for a in prompt.arguments or [])


# --- tools --------------------------------------------------------------------------------------------------------


def test_it_answers_a_tool_call_with_structured_output() -> None:
    Service.objects.create(name="alpha")
    raise_one("k1", level="critical", service="alpha")

    async def scenario(client: Client) -> Any:
        return await client.call_tool("get_error_status", {"service": "alpha", "since_minutes": 30})

    result = session(scenario, agent_key())

    assert not result.is_error, text_of(result)
    answer = result.structured_content
    assert answer is not None
    assert answer["scope"] == "alpha"
    assert answer["escalations"]["open"] == 1
    assert json.loads(text_of(result)) == answer


def test_it_answers_an_argument_the_schema_refuses_with_a_tool_error_naming_it() -> None:
    async def scenario(client: Client) -> Any:
        return await client.call_tool("get_error_status", {"since_minutes": 0})

    before = calls("get_error_status", "invalid")
    result = session(scenario, agent_key())

    assert result.is_error
    assert "since_minutes" in text_of(result)
    assert calls("get_error_status", "invalid") == before + 1


def test_it_answers_an_unknown_service_with_a_tool_error_naming_it_and_goes_on() -> None:
    Service.objects.create(name="alpha")

    async def scenario(client: Client) -> Any:
        failed = await client.call_tool("get_fallback_status", {"service": "nope"})
        worked = await client.call_tool("get_fallback_status", {"service": "alpha"})
        return failed, worked

    before = calls("get_fallback_status", "not_found")
    failed, worked = session(scenario, agent_key())

    assert failed.is_error
    assert "service: " in text_of(failed) and "nope" in text_of(failed)
    assert not worked.is_error, text_of(worked)
    assert calls("get_fallback_status", "not_found") == before + 1


def test_it_refuses_an_unknown_key_with_a_tool_error_and_counts_it() -> None:
    async def scenario(client: Client) -> Any:
        return await client.call_tool("get_error_status", {})

    before = calls("get_error_status", "unauthenticated")
    result = session(scenario, "rb_abcdefgh_" + "x" * 40)

    assert result.is_error
    assert "Unknown or revoked API key." in text_of(result)
    assert calls("get_error_status", "unauthenticated") == before + 1


def test_it_refuses_an_agent_forcing_degradation_and_says_so() -> None:
    async def scenario(client: Client) -> Any:
        return await client.call_tool(
            "force_degradation", {"service": "*", "level": "degraded", "reason": "try it"}
        )

    before = calls("force_degradation", "refused")
    result = session(scenario, agent_key())

    assert result.is_error
    assert "needs an operator's key" in text_of(result)
    assert calls("force_degradation", "refused") == before + 1


def test_it_logs_each_call_with_the_agent_of_the_key(caplog: pytest.LogCaptureFixture) -> None:
    agent, key = factories.agent_key()

    async def scenario(client: Client) -> Any:
        return await client.call_tool("get_error_status", {})

    with caplog.at_level(logging.INFO, logger="mcp_server.calls"):
        session(scenario, key)

    [record] = [r for r in caplog.records if r.name == "mcp_server.calls"]
    assert record.getMessage() == "mcp tool get_error_status: ok"
    assert (record.tool, record.result, record.caller) == (  # type: ignore[attr-defined]
        "get_error_status",
        "ok",
        f"agent:{agent.name}",
    )


# --- resources and the prompt -------------------------------------------------------------------------------------


def test_it_reads_the_services_and_one_service_as_json() -> None:
    Service.objects.create(name="alpha")

    async def scenario(client: Client) -> Any:
        return (
            await client.read_resource("rebound://services"),
            await client.read_resource("rebound://services/alpha"),
        )

    index, alpha = session(scenario, agent_key())

    [contents] = index.contents
    assert contents.mime_type == "application/json"
    assert [s["name"] for s in json.loads(contents.text)["services"]] == ["alpha"]  # type: ignore[union-attr]
    detail = json.loads(alpha.contents[0].text)  # type: ignore[union-attr]
    assert (detail["service"]["name"], detail["breaker"]["state"]) == ("alpha", "closed")


def test_it_reads_the_open_escalations() -> None:
    raise_one("k1", level="warning")
    raise_one("k2", level="emergency")

    async def scenario(client: Client) -> Any:
        return await client.read_resource("rebound://escalations/open")

    answer = json.loads(session(scenario, factories.user_key(factories.viewer())).contents[0].text)

    assert answer["count"] == 2
    assert [e["level"] for e in answer["escalations"]] == ["emergency", "warning"]


def refusal(uri: str) -> Callable[[Client], Awaitable[MCPError]]:
    """A scenario reading `uri` that answers the error the client raised (caught inside the session: an error
    leaving it is wrapped in the client's task group)."""

    async def scenario(client: Client) -> MCPError:
        with pytest.raises(MCPError) as raised:
            await client.read_resource(uri)
        return raised.value

    return scenario


def test_it_answers_an_unknown_service_with_the_resource_not_found_error() -> None:
    error = session(refusal("rebound://services/nope"), agent_key())
    assert error.code == -32602
    assert "Unknown service 'nope'" in error.message


def test_it_refuses_a_resource_to_a_revoked_key() -> None:
    _, key = factories.agent_key()
    access.revoke_key(api_key=callers.authenticate(key).api_key, actor=Actor(), reason="leaked")

    error = session(refusal("rebound://services"), key)
    assert error.code == -32600
    assert error.message == "Unknown or revoked API key."


def test_it_renders_the_prompt_with_the_services_state() -> None:
    Service.objects.create(name="openai")

    async def scenario(client: Client) -> Any:
        return await client.get_prompt("call_failed", {"service": "openai", "error": "HTTP 429"})

    prompt = session(scenario, agent_key())

    [message] = prompt.messages
    assert message.role == "user"
    text = message.content.text  # type: ignore[union-attr]
    assert text.startswith("A call to `openai` failed: HTTP 429")
    assert "breaker closed; degradation level normal" in text

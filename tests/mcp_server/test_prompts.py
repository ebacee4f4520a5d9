"""The prompt `call_failed` ("a call failed: what do I do"): the steps, with the service's breaker state and
degradation level as Rebound reads them now; the caller's key checked as for a resource."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError

from core.audit.services import Actor
from mcp_server import callers, prompts, resources
from recovery.breakers import services as breaker_services
from recovery.breakers.models import Service
from recovery.degradation import services as degradation_services
from tests.support import factories

pytestmark = pytest.mark.django_db

FAIL_503 = {"success": False, "error": {"status_code": 503}}


@pytest.fixture(autouse=True)
def in_the_test_transaction(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """read_as closes a connection out of autocommit, as on the SDK's worker thread; here the test's own
    transaction must stay open. The process key is unset after each test."""
    monkeypatch.setattr(resources, "close_old_connections", lambda: None)
    yield
    callers.use_process_key(None)


def service(name: str, **fields: Any) -> Service:
    return Service.objects.create(name=name, **fields)


def operator_actor() -> Actor:
    return Actor(user=factories.operator())


def test_it_walks_through_the_plan_the_fallbacks_the_outage_and_the_operators_tools(
    agent_caller: callers.Caller,
) -> None:
    service("openai")
    text = prompts.walk_through(agent_caller, "openai", "RateLimitError: 429 Too Many Requests")
    assert text.startswith("A call to `openai` failed: RateLimitError: 429 Too Many Requests\n")
    steps = [
        "1. Ask for the plan: call `get_recovery_options`",
        "2. Follow the plan's `action`:",
        "`retry_operation` with an `idempotency_key`",
        "`get_fallback_status`",
        "`escalate`: stop. A human will look at it",
        "3. If other calls fail too",
        "`get_error_status`",
        "4. Never call `force_degradation`",
    ]
    positions = [text.index(step) for step in steps]
    assert positions == sorted(positions)


def test_it_gives_the_tool_arguments_with_the_operation(agent_caller: callers.Caller) -> None:
    service("github-mcp")
    text = prompts.walk_through(agent_caller, "github-mcp", "TimeoutError", operation="search")
    assert "A call to `github-mcp` (operation `search`) failed: TimeoutError" in text
    assert 'call `get_recovery_options` with {"service": "github-mcp", "operation": "search"}' in text


def test_it_says_the_breaker_is_closed_and_the_level_normal(agent_caller: callers.Caller) -> None:
    service("openai")
    text = prompts.walk_through(agent_caller, "openai", "boom")
    assert "Rebound's view of `openai` now: breaker closed; degradation level normal." in text


def test_it_says_until_when_an_open_breaker_refuses_calls(agent_client: Any) -> None:
    service("openai", minimum_calls=4, window_size=10, consecutive_failures=0)
    response = agent_client.post("/api/v1/outcomes", [{**FAIL_503, "service": "openai"}] * 4, format="json")
    assert response.status_code == 200
    until = agent_client.get("/api/v1/breakers/openai").json()["open_until"]
    caller = callers.authenticate(factories.agent_key()[1])

    text = prompts.walk_through(caller, "openai", "HTTP 503")

    assert "breaker open: calls are refused until " in text
    assert until[:19] in text  # the same second the REST API answers


def test_it_names_an_operators_override_and_its_reason(agent_caller: callers.Caller) -> None:
    service("openai")
    breaker_services.set_override(
        name="openai", mode="forced_open", reason="provider outage", expires_at=None, actor=operator_actor()
    )
    text = prompts.walk_through(agent_caller, "openai", "boom")
    assert "breaker forced_open: an operator's override (provider outage)" in text


def test_it_names_a_forced_level_and_that_agents_skip_the_service(agent_caller: callers.Caller) -> None:
    service("thumbnails", criticality="non_critical")
    degradation_services.force(
        scope="*", level="minimal", reason="incident 42", expires_at=None, actor=operator_actor()
    )
    text = prompts.walk_through(agent_caller, "thumbnails", "boom")
    assert "degradation level minimal (forced by an operator: incident 42)" in text
    assert "at this level agents skip thumbnails (it is skipped from minimal)" in text


def test_it_says_when_rebound_does_not_know_the_service(agent_caller: callers.Caller) -> None:
    text = prompts.walk_through(agent_caller, "brand-new", "boom")
    assert "Rebound does not know `brand-new` yet" in text
    assert "1. Ask for the plan" in text


def test_it_answers_one_user_message_for_the_process_key() -> None:
    service("openai")
    callers.use_process_key(factories.agent_key()[1])
    [message] = prompts.call_failed("openai", "boom", Context())
    assert message.role == "user"
    assert "Rebound's view of `openai` now: breaker closed" in message.content.text  # type: ignore[union-attr]


def test_it_lets_a_viewer_read_it() -> None:
    callers.use_process_key(factories.user_key(factories.viewer()))
    [message] = prompts.call_failed("openai", "boom", Context())
    assert "Rebound does not know `openai` yet" in message.content.text  # type: ignore[union-attr]


def test_it_refuses_a_service_that_is_no_slug_naming_it() -> None:
    callers.use_process_key(factories.agent_key()[1])
    with pytest.raises(MCPError) as raised:
        prompts.call_failed("Open AI", "boom", Context())
    assert raised.value.code == -32602
    assert "service: a service is a lower-case slug" in raised.value.message


def test_it_refuses_a_call_without_a_key() -> None:
    with pytest.raises(MCPError, match="No API key") as raised:
        prompts.call_failed("openai", "boom", Context())
    assert raised.value.code == -32600

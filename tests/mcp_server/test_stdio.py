"""The MCP server over stdio, end to end, as a desktop client runs it: the SDK's stdio_client starts `python
manage.py mcp` (or the `rebound-mcp` console script) with the key in REBOUND_API_KEY and speaks JSON-RPC on its
stdin and stdout; a real gunicorn on the same database and Redis serves the REST API to compare with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.access import services as access
from core.access.models import ApiKey
from core.audit.models import AuditEvent
from core.audit.services import Actor
from recovery.decisions.models import FallbackOption
from recovery.degradation.models import DegradationState
from recovery.retries.models import RetryJob
from tests.support import factories
from tests.support.mcp_calls import TOOL_NAMES
from tests.support.mcp_processes import (
    Rest,
    error_text,
    json_lines,
    mcp_env,
    run_stdio,
    stdio_session,
    structured,
)
from tests.support.mcp_processes import rest_server as rest_server
from tests.support.processes import PYTHON
from tests.support.sdk_server import QUIET, SdkServer, service

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]

TOOLS = TOOL_NAMES


def test_an_operator_calls_every_tool_over_stdio_and_the_answers_agree_with_rest(
    rest_server: SdkServer, tmp_path: Path
) -> None:
    svc = service("mcp-stdio-all", **QUIET)
    FallbackOption.objects.create(service=svc, position=1, kind="static", static_value={"answer": "later"})
    user = factories.operator()
    key = factories.user_key(user)
    rest = Rest(rest_server.url, key)
    rest.post("/api/v1/errors", {"service": "mcp-stdio-all", "status_code": 503, "message": "upstream down"})
    job = {
        "service": "mcp-stdio-all",
        "kind": "task",
        "task": {"name": "recovery.demo_tasks.flaky", "args": [], "kwargs": {"key": "stdio", "failures": 0}},
        "idempotency_key": "mcp-stdio-1",
    }
    answers: dict[str, dict[str, Any]] = {}

    with stdio_session(mcp_env(tmp_path), key, tmp_path / "stderr.log") as session:
        tools = {tool.name for tool in session.list_tools().tools}
        answers["status"] = structured(session.call("get_error_status"))
        answers["retry"] = structured(session.call("retry_operation", **job))
        answers["options"] = structured(
            session.call("get_recovery_options", service="mcp-stdio-all", error={"status_code": 503})
        )
        answers["healing"] = structured(
            session.call(
                "trigger_healing",
                action="flush_fallback_cache",
                service="mcp-stdio-all",
                reason="stale answers",
            )
        )
        answers["fallbacks"] = structured(session.call("get_fallback_status", service="mcp-stdio-all"))
        answers["degradation"] = structured(
            session.call("force_degradation", service="mcp-stdio-all", level="minimal", reason="INC-11")
        )
        problems = list(session.problems)

    assert tools == TOOLS
    assert problems == []  # nothing but JSON-RPC on the server's stdout
    status = rest.get("/api/v1/status")
    assert answers["status"]["errors"]["by_class"] == status["errors_last_60m"]
    assert answers["retry"]["created"] is True
    assert answers["retry"]["job"]["id"] == str(RetryJob.objects.get(idempotency_key="mcp-stdio-1").pk)
    assert answers["options"]["plan"]["error_class"] == answers["options"]["options"]["error_class"]
    run = answers["healing"]["run"]
    assert answers["healing"]["created"] is True
    assert run == rest.get(f"/api/v1/healing/runs/{run['id']}")
    assert answers["fallbacks"]["chain"] == rest.get("/api/v1/fallbacks/mcp-stdio-all")
    assert answers["degradation"]["level"] == "minimal"
    shown = rest.get("/api/v1/degradation", service="mcp-stdio-all")
    assert shown["level"] == "minimal"
    forced = AuditEvent.objects.get(action="degradation.force")
    assert (forced.source, forced.actor_user_id) == ("mcp", user.pk)


def test_an_agent_is_refused_what_only_operators_do_and_bad_arguments_do_not_end_the_session(
    rest_server: SdkServer, tmp_path: Path
) -> None:
    service("mcp-stdio-agent", **QUIET)
    agent, key = factories.agent_key()
    before = Rest(rest_server.url, key).get("/api/v1/degradation")

    with stdio_session(mcp_env(tmp_path), key, tmp_path / "stderr.log") as session:
        refused = error_text(session.call("force_degradation", service="*", level="minimal", reason="let me"))
        too_long = error_text(session.call("get_error_status", since_minutes=100_000))
        unknown = error_text(session.call("get_error_status", service="no-such-service"))
        fine = structured(session.call("get_error_status", service="mcp-stdio-agent"))

    assert "operator" in refused
    assert "since_minutes" in too_long
    assert "service" in unknown
    assert fine["scope"] == "mcp-stdio-agent"
    after = Rest(rest_server.url, key).get("/api/v1/degradation")
    assert (after["level"], after["source"]) == (before["level"], before["source"])
    assert not DegradationState.objects.exclude(forced_level="").exists()
    assert not AuditEvent.objects.filter(action="degradation.force").exists()
    calls = [r for r in json_lines(tmp_path / "stderr.log") if r.get("caller") == f"agent:{agent.name}"]
    assert ("force_degradation", "refused") in [(r.get("tool"), r.get("result")) for r in calls]


@pytest.mark.parametrize("which", ["missing", "revoked"])
def test_it_refuses_to_start_without_a_key_it_accepts(which: str, tmp_path: Path) -> None:
    agent, key = factories.agent_key()
    api_key = ApiKey.objects.get(agent=agent)
    if which == "revoked":
        access.revoke_key(api_key=api_key, actor=Actor(source="cli"), reason="leaked in a CI log")
    chosen = {"missing": None, "revoked": key}[which]

    done = run_stdio(mcp_env(tmp_path), chosen)

    assert done.returncode != 0
    assert done.stdout == ""  # not one byte a client would try to read as JSON-RPC
    assert "REBOUND_API_KEY" in done.stderr
    assert ("revoked" if which == "revoked" else "not set") in done.stderr


def test_a_key_revoked_during_a_session_gets_tool_errors(tmp_path: Path) -> None:
    agent, key = factories.agent_key()
    api_key = ApiKey.objects.get(agent=agent)

    with stdio_session(mcp_env(tmp_path), key, tmp_path / "stderr.log") as session:
        before = structured(session.call("get_error_status"))
        access.revoke_key(api_key=api_key, actor=Actor(source="cli"), reason="leaked in a CI log")
        after = error_text(session.call("get_error_status"))

    assert before["scope"] == "fleet"
    assert "revoked" in after


def test_the_console_script_serves_the_same_server(tmp_path: Path) -> None:
    script = Path(PYTHON).parent / "rebound-mcp"
    assert script.exists(), "pip install -e . installs the rebound-mcp console script"
    _, key = factories.agent_key()

    with stdio_session(mcp_env(tmp_path), key, tmp_path / "stderr.log", command=[str(script)]) as session:
        tools = {tool.name for tool in session.list_tools().tools}
        answer = structured(session.call("get_error_status"))

    assert tools == TOOLS
    assert answer["scope"] == "fleet"

"""The MCP server over streamable HTTP, end to end: `manage.py mcp --transport http` as a real process, the SDK's
own client (ClientSession over streamable_http_client, a bearer key per request), and a real gunicorn serving
the REST API on the same database and Redis, which makes the state and shows what each tool must agree with."""

from __future__ import annotations

from typing import Any

import httpx
import httpx2
import pytest
from mcp.shared.exceptions import MCPError

from core.access import services as access
from core.access.models import ApiKey
from core.audit.models import AuditEvent
from core.audit.services import Actor
from healing.actions.models import HealingAction, HealingRun
from recovery.decisions.models import FallbackOption, RecoveryPlan
from recovery.degradation.models import DegradationState
from recovery.retries.models import RetryJob
from tests.support import factories
from tests.support.mcp_calls import TOOL_NAMES
from tests.support.mcp_processes import (
    McpServers,
    Rest,
    error_text,
    http_session,
    metric,
    structured,
)
from tests.support.mcp_processes import mcp_servers as mcp_servers
from tests.support.sdk_server import QUIET, service

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]

TOOLS = TOOL_NAMES
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw-http", "version": "0"},
    },
}


def operator() -> tuple[Any, str]:
    user = factories.operator()
    return user, factories.user_key(user)


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups: anyio's task groups wrap what a transport raises."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def test_it_lists_the_six_tools_with_their_schemas_resources_and_prompt(mcp_servers: McpServers) -> None:
    _, key = factories.agent_key()
    with http_session(mcp_servers.mcp.endpoint, key) as session:
        assert session.server_info is not None and session.server_info.name == "rebound"
        tools = {tool.name: tool for tool in session.list_tools().tools}
        resources = {str(r.uri) for r in session.list_resources().resources}
        templates = {t.uri_template for t in session.list_resource_templates().resource_templates}
        prompts = {p.name: p for p in session.list_prompts().prompts}

    assert set(tools) == TOOLS
    required = {name: set(tool.input_schema.get("required", [])) for name, tool in tools.items()}
    assert required == {
        "get_error_status": set(),
        "retry_operation": set(),
        "get_recovery_options": {"service"},
        "trigger_healing": {"action", "service", "reason"},
        "get_fallback_status": {"service"},
        "force_degradation": {"service", "level", "reason"},
    }
    for tool in tools.values():
        assert tool.description, tool.name
        assert "ctx" not in tool.input_schema.get("properties", {}), tool.name
        assert tool.output_schema is not None and tool.output_schema.get("type") == "object", tool.name
    since = tools["get_error_status"].input_schema["properties"]["since_minutes"]
    assert (since.get("minimum"), since.get("maximum")) == (1, 1440)
    outputs = {
        name: set(tool.output_schema["properties"]) for name, tool in tools.items() if tool.output_schema
    }
    assert {"breakers", "errors", "top_patterns", "escalations", "degradation"} <= outputs["get_error_status"]
    assert {"created", "job"} <= outputs["retry_operation"]
    assert {"plan", "options"} <= outputs["get_recovery_options"]
    assert {"created", "run", "waiting_for"} <= outputs["trigger_healing"]
    assert {"chain", "cache"} <= outputs["get_fallback_status"]
    assert {"scope", "level", "source"} <= outputs["force_degradation"]

    hints = {
        name: (t.annotations.read_only_hint, t.annotations.destructive_hint)
        for name, t in tools.items()
        if t.annotations is not None
    }
    assert hints["get_error_status"][0] is True and hints["get_fallback_status"][0] is True
    assert hints["retry_operation"] == (False, False)
    assert hints["get_recovery_options"][0] is False
    assert hints["trigger_healing"] == (False, True)
    assert hints["force_degradation"] == (False, True)

    assert {"rebound://services", "rebound://escalations/open"} <= resources
    assert "rebound://services/{name}" in templates
    assert "call_failed" in prompts
    assert {a.name for a in prompts["call_failed"].arguments or []} >= {"service", "error"}


def test_get_error_status_agrees_with_the_rest_status(mcp_servers: McpServers) -> None:
    service("mcp-http-status", **QUIET)
    service("mcp-http-calm", **QUIET)
    _, key = factories.agent_key()
    user, operator_key = operator()
    rest = Rest(mcp_servers.rest.url, key)
    for n in range(3):
        rest.post(
            "/api/v1/errors", {"service": "mcp-http-status", "status_code": 503, "message": f"down {n}"}
        )
    for _ in range(2):
        rest.post(
            "/api/v1/errors", {"service": "mcp-http-status", "status_code": 429, "message": "slow down"}
        )
    Rest(mcp_servers.rest.url, operator_key).post(
        "/api/v1/breakers/mcp-http-status/override",
        {"mode": "forced_open", "reason": "provider incident INC-7"},
    )

    with http_session(mcp_servers.mcp.endpoint, key) as session:
        fleet = structured(session.call("get_error_status"))
        one = structured(session.call("get_error_status", service="mcp-http-status", since_minutes=30))
    status = rest.get("/api/v1/status")

    assert fleet["scope"] == "fleet"
    assert fleet["errors"]["by_class"] == status["errors_last_60m"]
    assert fleet["errors"]["total"] == 5 == sum(status["errors_last_60m"].values())
    assert fleet["breakers"]["by_state"] == status["breakers"]
    assert fleet["degradation"]["level"] == status["degradation"]["level"]
    listed = {b["service"]: b for b in fleet["breakers"]["listed"]}
    assert set(listed) == {"mcp-http-status"}  # the closed one is counted, not listed
    forced = listed["mcp-http-status"]
    assert forced["state"] == "forced_open"
    assert user.username in forced["override"]["set_by"]  # "user <name>", as the console shows it
    assert "INC-7" in (forced["why"] or "")
    assert one["scope"] == "mcp-http-status"
    assert [b["service"] for b in one["breakers"]["listed"]] == ["mcp-http-status"]
    assert one["errors"]["total"] == 5
    assert {p["service"] for p in one["top_patterns"]} == {"mcp-http-status"}


def test_get_fallback_status_answers_the_rest_chain(mcp_servers: McpServers) -> None:
    svc = service("mcp-http-fallback")
    backup = service("mcp-http-backup")
    FallbackOption.objects.create(
        service=svc, position=1, kind="service", target_service=backup, target_operation="search"
    )
    FallbackOption.objects.create(service=svc, position=2, kind="cache", max_age_s=600)
    FallbackOption.objects.create(service=svc, position=3, kind="static", static_value={"hits": []})
    _, key = factories.agent_key()

    with http_session(mcp_servers.mcp.endpoint, key) as session:
        answer = structured(
            session.call("get_fallback_status", service="mcp-http-fallback", operation="search")
        )

    chain = Rest(mcp_servers.rest.url, key).get("/api/v1/fallbacks/mcp-http-fallback", operation="search")
    assert answer["chain"] == chain
    assert [o["kind"] for o in answer["chain"]["chain"]] == ["service", "cache", "static"]
    assert answer["cache"]["count"] == 0 and answer["cache"]["entries"] == []


def test_retry_operation_hands_over_a_job_and_reads_it_as_the_rest_api_does(mcp_servers: McpServers) -> None:
    service("mcp-http-retry", **QUIET)
    agent, key = factories.agent_key()
    rest = Rest(mcp_servers.rest.url, key)
    job = {
        "service": "mcp-http-retry",
        "operation": "nightly-digest",
        "kind": "task",
        "task": {
            "name": "recovery.demo_tasks.flaky",
            "args": [],
            "kwargs": {"key": "mcp-http", "failures": 0},
        },
        "idempotency_key": "mcp-http-digest-1",
    }
    made_by_rest = rest.post("/api/v1/retries", {**job, "idempotency_key": "rest-digest-1"})

    with http_session(mcp_servers.mcp.endpoint, key) as session:
        made = structured(session.call("retry_operation", **job))
        again = structured(session.call("retry_operation", **job))
        looked_up = structured(session.call("retry_operation", job_id=made["job"]["id"]))
        rest_job = structured(session.call("retry_operation", job_id=made_by_rest["id"]))

    assert (made["created"], again["created"], looked_up["created"]) == (True, False, None)
    assert again["job"]["id"] == made["job"]["id"] == looked_up["job"]["id"]
    assert looked_up["job"] == rest.get(f"/api/v1/retries/{made['job']['id']}")
    assert rest_job["job"] == rest.get(f"/api/v1/retries/{made_by_rest['id']}")
    row = RetryJob.objects.get(idempotency_key="mcp-http-digest-1")
    assert row.agent == agent and row.service.name == "mcp-http-retry"
    assert RetryJob.objects.filter(idempotency_key="mcp-http-digest-1").count() == 1


def test_get_recovery_options_plans_as_the_rest_api_does(mcp_servers: McpServers) -> None:
    svc = service("mcp-http-plan", **QUIET)
    FallbackOption.objects.create(service=svc, position=1, kind="static", static_value={"answer": "later"})
    agent, key = factories.agent_key()
    rest = Rest(mcp_servers.rest.url, key)
    error = {"type": "RateLimitError", "status_code": 429, "message": "Rate limit reached"}

    with http_session(mcp_servers.mcp.endpoint, key) as session:
        options_only = structured(
            session.call("get_recovery_options", service="mcp-http-plan", error_class="rate_limit")
        )
        # Read before any plan is made: a plan counts a call in the retry budget the options show.
        options = rest.get("/api/v1/recovery/options", service="mcp-http-plan", error_class="rate_limit")
        planned = structured(
            session.call("get_recovery_options", service="mcp-http-plan", operation="chat", error=error)
        )
    by_rest = rest.post(
        "/api/v1/recovery/plan", {"service": "mcp-http-plan", "operation": "chat", "error": error}
    )

    assert options_only["plan"] is None
    assert options_only["options"] == options
    plan = planned["plan"]
    fields = ("action", "error_class", "severity", "kind", "breaker_state", "degradation_level", "policy")
    assert {f: plan[f] for f in fields} == {f: by_rest[f] for f in fields}
    assert plan["error_class"] == "rate_limit"
    assert planned["options"]["error_class"] == "rate_limit"
    # The tool's plan and REST's.
    assert RecoveryPlan.objects.filter(service="mcp-http-plan", agent=agent).count() == 2


def test_trigger_healing_asks_under_the_approval_policy(mcp_servers: McpServers) -> None:
    service("mcp-http-heal", **QUIET)
    agent, key = factories.agent_key()
    ask = {"action": "reset_breaker", "service": "mcp-http-heal", "reason": "breaker stuck open after INC-7"}
    HealingAction.objects.filter(name="restart_worker_pool").update(risk="critical")

    with http_session(mcp_servers.mcp.endpoint, key) as session:
        asked = structured(session.call("trigger_healing", **ask))
        again = structured(session.call("trigger_healing", **ask))
        refused = error_text(
            session.call(
                "trigger_healing", **{**ask, "action": "restart_worker_pool", "service": "mcp-http-heal"}
            )
        )

    assert (asked["created"], again["created"]) == (True, False)
    assert again["run"]["id"] == asked["run"]["id"]
    assert asked["run"] == Rest(mcp_servers.rest.url, key).get(f"/api/v1/healing/runs/{asked['run']['id']}")
    assert asked["run"]["state"] == "pending_approval"  # reset_breaker is a medium risk: an operator approves
    assert "approv" in (asked["waiting_for"] or "")
    assert "critical" in refused
    run = HealingRun.objects.get(pk=asked["run"]["id"])
    assert run.requested_by_agent == agent
    assert not HealingRun.objects.filter(action__name="restart_worker_pool").exists()
    audited = AuditEvent.objects.filter(action="healing_run.request", target_id=str(run.pk))
    assert [(e.source, e.actor_agent_id) for e in audited] == [("mcp", agent.pk)]


def test_an_operator_forces_degradation_and_the_audit_trail_names_the_user(mcp_servers: McpServers) -> None:
    user, key = operator()
    rest = Rest(mcp_servers.rest.url, key)

    with http_session(mcp_servers.mcp.endpoint, key) as session:
        state = structured(
            session.call("force_degradation", service="*", level="degraded", reason="provider incident INC-9")
        )

    assert (state["scope"], state["level"], state["source"]) == ("*", "degraded", "operator")
    shown = rest.get("/api/v1/degradation")
    assert (shown["level"], shown["source"]) == ("degraded", "operator")
    events = rest.get("/api/v1/audit-events", action="degradation.force")["results"]
    assert [(e["actor_label"], e["source"]) for e in events] == [(f"user:{user.username}", "mcp")]
    assert "INC-9" in events[0]["reason"]


def test_an_agent_key_may_not_force_degradation_and_nothing_changes(mcp_servers: McpServers) -> None:
    _, key = factories.agent_key()
    rest = Rest(mcp_servers.rest.url, key)
    before = rest.get("/api/v1/degradation")
    states = DegradationState.objects.count()

    with http_session(mcp_servers.mcp.endpoint, key) as session:
        text = error_text(
            session.call("force_degradation", service="*", level="minimal", reason="an agent trying its luck")
        )

    assert "operator" in text and "agent key" in text
    after = rest.get("/api/v1/degradation")
    assert (after["level"], after["source"]) == (before["level"], before["source"])
    assert DegradationState.objects.count() == states
    assert not AuditEvent.objects.filter(action="degradation.force").exists()


def test_bad_arguments_give_tool_errors_naming_them_and_the_session_goes_on(mcp_servers: McpServers) -> None:
    service("mcp-http-bad", **QUIET)
    _, key = factories.agent_key()
    _, operator_key = operator()

    with http_session(mcp_servers.mcp.endpoint, key) as session:
        too_short = error_text(session.call("get_error_status", since_minutes=0))
        unknown = error_text(session.call("get_fallback_status", service="no-such-service"))
        status = error_text(
            session.call("get_recovery_options", service="mcp-http-bad", error={"status_code": 42})
        )
        neither = error_text(session.call("get_recovery_options", service="mcp-http-bad"))
        parameters = error_text(
            session.call(
                "trigger_healing",
                action="reset_breaker",
                service="mcp-http-bad",
                reason="try it",
                parameters={"nope": 1},
            )
        )
        fine = structured(session.call("get_error_status", service="mcp-http-bad"))
    with http_session(mcp_servers.mcp.endpoint, operator_key) as session:
        level = error_text(session.call("force_degradation", service="*", level="sideways", reason="typo"))
        still_fine = structured(session.call("get_error_status"))

    assert "since_minutes" in too_short
    assert "service" in unknown
    assert "error.status_code" in status
    assert "error" in neither
    assert "parameters" in parameters
    assert "level" in level
    assert fine["scope"] == "mcp-http-bad" and still_fine["scope"] == "fleet"
    assert not HealingRun.objects.exists()
    assert not DegradationState.objects.filter(forced_level__isnull=False).exclude(forced_level="").exists()


def test_no_unknown_or_revoked_key_reaches_a_tool(mcp_servers: McpServers) -> None:
    agent, key = factories.agent_key()
    api_key = ApiKey.objects.get(agent=agent)
    endpoint = mcp_servers.mcp.endpoint
    accept = {"Accept": "application/json, text/event-stream"}

    with http_session(endpoint, key) as session:
        structured(session.call("get_error_status"))
        access.revoke_key(api_key=api_key, actor=Actor(source="cli"), reason="leaked")
        with pytest.raises(MCPError):  # the next request is refused with a 401 before any tool runs
            session.call("get_error_status")

    for headers in ({}, {"Authorization": "Bearer rb_unknown_key"}, {"Authorization": f"Bearer {key}"}):
        answer = httpx.post(endpoint, json=INITIALIZE, headers={**accept, **headers}, timeout=10)
        assert answer.status_code == 401, answer.text
        assert answer.headers["www-authenticate"].lower().startswith("bearer")
    # The SDK's error, maybe inside anyio's exception groups.
    with pytest.raises(BaseException) as refused, http_session(endpoint, key):
        pass
    assert any(isinstance(e, MCPError | httpx2.HTTPError) for e in leaves(refused.value)), refused.value


def test_a_session_answers_only_the_key_that_opened_it(mcp_servers: McpServers) -> None:
    _, key = factories.agent_key()
    _, other = factories.agent_key()
    endpoint = mcp_servers.mcp.endpoint
    accept = {"Accept": "application/json, text/event-stream"}
    opened = httpx.post(
        endpoint, json=INITIALIZE, headers={**accept, "Authorization": f"Bearer {key}"}, timeout=10
    )
    assert opened.status_code == 200, opened.text
    session = {"mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}

    mine = httpx.post(
        endpoint, json=listing, headers={**accept, **session, "Authorization": f"Bearer {key}"}, timeout=10
    )
    theirs = httpx.post(
        endpoint, json=listing, headers={**accept, **session, "Authorization": f"Bearer {other}"}, timeout=10
    )

    assert mine.status_code == 200 and "get_error_status" in mine.text
    assert theirs.status_code == 404, theirs.text


def test_every_call_is_counted_in_the_webs_metrics_and_logged_with_the_agent(mcp_servers: McpServers) -> None:
    agent, key = factories.agent_key()

    def counts() -> tuple[float, float]:
        text = httpx.get(f"{mcp_servers.rest.url}/metrics", timeout=10).text
        return (
            metric(text, "mcp_tool_calls_total", tool="get_error_status", result="ok"),
            metric(text, "mcp_tool_calls_total", tool="get_error_status", result="invalid"),
        )

    ok, invalid = counts()
    with http_session(mcp_servers.mcp.endpoint, key) as session:
        structured(session.call("get_error_status"))
        structured(session.call("get_error_status", since_minutes=5))
        error_text(session.call("get_error_status", since_minutes=0))

    assert counts() == (ok + 2, invalid + 1)
    # Every call is logged with the key's agent, the one the SDK refused before the tool ran included.
    calls = [r for r in mcp_servers.mcp.log_records() if r.get("caller") == f"agent:{agent.name}"]
    assert [(r.get("tool"), r.get("result")) for r in calls] == [
        ("get_error_status", "ok"),
        ("get_error_status", "ok"),
        ("get_error_status", "invalid"),
    ]


def test_resources_and_the_prompt_answer_over_http(mcp_servers: McpServers) -> None:
    service("mcp-http-resource", **QUIET)
    _, key = factories.agent_key()

    with http_session(mcp_servers.mcp.endpoint, key) as session:
        fleet = session.read_resource("rebound://services")
        one = session.read_resource("rebound://services/mcp-http-resource")
        escalations = session.read_resource("rebound://escalations/open")
        prompt = session.get_prompt(
            "call_failed", service="mcp-http-resource", error="HTTP 503 from upstream"
        )

    texts = [c.text for r in (fleet, one, escalations) for c in r.contents if hasattr(c, "text")]
    assert len(texts) == 3
    assert "mcp-http-resource" in texts[0] and "mcp-http-resource" in texts[1]
    words = " ".join(m.content.text for m in prompt.messages if hasattr(m.content, "text"))
    assert "get_recovery_options" in words and "mcp-http-resource" in words

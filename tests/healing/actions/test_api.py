"""The healing API: the catalog (operators write, audited), runs (list, filters, detail), holds, who may do
what, answers that match the published schema, and bad input that is a 4xx, never a 500."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from core.audit.models import AuditEvent
from healing.actions import services
from healing.actions.models import HealingAction, HealingHold
from tests.support.healing_runs import ask, execute, health_check
from tests.support.openapi import conforms

pytestmark = pytest.mark.django_db
ACTIONS = "/api/v1/healing/actions"
RUNS = "/api/v1/healing/runs"


def new_webhook(target: Any, **changes: Any) -> dict[str, Any]:
    body = {
        "name": "restart-pods",
        "risk": "high",
        "url": target.url("/heal?api_key=s3cret"),
        "method": "post",
        "parameters_schema": {
            "type": "object",
            "properties": {"replicas": {"type": "integer"}},
            "additionalProperties": False,
        },
        "body_template": {"n": "{{replicas}}", "service": "{{service}}"},
        "reason": "give the search team a button",
    }
    body.update(changes)
    return body


# --- the catalog ---------------------------------------------------------------------------------------------------


def test_it_lists_the_builtins_to_every_principal(agent_client: Any, viewer_client: Any) -> None:
    for client in (agent_client, viewer_client):
        response = client.get(ACTIONS)
        assert response.status_code == 200
        names = {a["name"] for a in response.json()["results"]}
        assert {"reset_breaker", "restart_worker_pool"} <= names
    conforms(response, "get", ACTIONS)


def test_an_operator_creates_a_webhook_action_audited(operator_client: Any, target: Any) -> None:
    check = health_check()
    response = operator_client.post(ACTIONS, new_webhook(target, verify_check=check.name), format="json")
    assert response.status_code == 201, response.json()
    conforms(response, "post", ACTIONS)
    body = response.json()
    assert (body["kind"], body["method"], body["verify_check"], body["builtin"]) == (
        "webhook",
        "POST",
        check.name,
        None,
    )
    assert "s3cret" not in body["url"]
    action = HealingAction.objects.get(name="restart-pods")
    assert action.verify_check_id == check.pk
    event = AuditEvent.objects.get(action="healing_action.create")
    assert (event.actor_user_id, event.reason) == (operator_client.user.pk, "give the search team a button")


@pytest.mark.parametrize(
    ("changes", "status", "field"),
    [
        ({"kind": "builtin"}, 400, "kind"),
        ({"url": "http://169.254.169.254/latest/meta-data"}, 400, "url"),
        ({"method": "TRACE"}, 400, "method"),
        ({"verify_check": "no-such-check"}, 400, "verify_check"),
        ({"body_template": {"n": "{{replica}}"}}, 400, "body_template"),
        ({"reason": " "}, 400, "reason"),
        ({"name": "Not A Slug"}, 400, "name"),
        ({"name": "reset_breaker"}, 409, "name"),
    ],
)
def test_it_refuses_a_webhook_it_cannot_call_naming_the_field(
    changes: dict[str, Any], status: int, field: str, operator_client: Any, target: Any
) -> None:
    response = operator_client.post(ACTIONS, new_webhook(target, **changes), format="json")
    assert response.status_code == status, response.json()
    assert response.json()["errors"][0]["field"] == field


@pytest.mark.parametrize("who", ["agent", "viewer"])
def test_only_operators_write_the_catalog(
    who: str, agent_client: Any, viewer_client: Any, target: Any
) -> None:
    client = agent_client if who == "agent" else viewer_client
    assert client.post(ACTIONS, new_webhook(target), format="json").status_code == 403
    patch = client.patch(f"{ACTIONS}/reset_breaker", {"risk": "low", "reason": "x"}, format="json")
    assert patch.status_code == 403
    assert HealingAction.objects.get(name="reset_breaker").risk == "medium"


def test_an_operator_changes_a_builtins_risk_audited(operator_client: Any) -> None:
    response = operator_client.patch(
        f"{ACTIONS}/reset_breaker", {"risk": "high", "reason": "INC-51"}, format="json"
    )
    assert response.status_code == 200, response.json()
    conforms(response, "patch", f"{ACTIONS}/{{name}}")
    assert HealingAction.objects.get(name="reset_breaker").risk == "high"
    event = AuditEvent.objects.get(action="healing_action.update")
    assert (event.before["risk"], event.after["risk"], event.reason) == ("medium", "high", "INC-51")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "http://127.0.0.1:1/x", "reason": "x"}, "url"),
        ({"kind": "webhook", "reason": "x"}, "kind"),
        ({"risk": None, "reason": "x"}, "risk"),
        ({"parameters_schema": {"type": 12}, "reason": "x"}, "parameters_schema.type"),
    ],
)
def test_it_refuses_a_change_a_builtin_cannot_take(
    body: dict[str, Any], field: str, operator_client: Any
) -> None:
    response = operator_client.patch(f"{ACTIONS}/reset_breaker", body, format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["errors"][0]["field"] == field


def test_it_answers_404_for_an_unknown_action(operator_client: Any) -> None:
    assert operator_client.get(f"{ACTIONS}/nope").status_code == 404
    assert operator_client.patch(f"{ACTIONS}/nope", {"reason": "x"}, format="json").status_code == 404


# --- runs ----------------------------------------------------------------------------------------------------------


def test_it_shows_a_run_with_its_approvals_history_and_output(
    webhook: Callable[..., HealingAction], agent_client: Any, operator_client: Any, enqueued: list[int]
) -> None:
    webhook(risk="medium")
    run, _ = ask("restart-pods", "agent", parameters={"replicas": 2})
    operator_client.post(f"{RUNS}/{run.pk}/approve", {"reason": "ok"}, format="json")
    execute(run)
    response = agent_client.get(f"{RUNS}/{run.pk}")
    assert response.status_code == 200
    conforms(response, "get", f"{RUNS}/{{run_id}}")
    body = response.json()
    assert (body["id"], body["action"], body["service"], body["state"], body["risk"]) == (
        run.pk,
        "restart-pods",
        "web-search",
        "succeeded",
        "medium",
    )
    assert (body["trigger"], body["approvals_required"], body["parameters"]) == ("agent", 1, {"replicas": 2})
    assert [a["decision"] for a in body["approvals"]] == ["approve"]
    assert [h["to_state"] for h in body["history"]] == [
        "pending_approval",
        "approved",
        "running",
        "succeeded",
    ]
    assert body["output"]["status_code"] == 200
    assert body["started_at"] and body["acted_at"] and body["finished_at"]


def test_it_lists_runs_with_filters(
    webhook: Callable[..., HealingAction], viewer_client: Any, enqueued: list[int]
) -> None:
    webhook(risk="medium")
    webhook("other", risk="low")
    ask("restart-pods", "agent")
    ask("restart-pods", "agent", service="billing")
    ask("other", "agent")
    response = viewer_client.get(RUNS, {"state": "pending_approval", "service": "web-search"})
    assert response.status_code == 200
    conforms(response, "get", RUNS)
    assert [(r["action"], r["service"]) for r in response.json()["results"]] == [
        ("restart-pods", "web-search")
    ]
    assert viewer_client.get(RUNS, {"action": "other"}).json()["count"] == 1
    assert viewer_client.get(RUNS).json()["count"] == 3
    assert viewer_client.get(RUNS, {"state": "nope"}).status_code == 400


def test_a_viewer_cannot_ask_for_a_run(webhook: Callable[..., HealingAction], viewer_client: Any) -> None:
    webhook()
    response = viewer_client.post(
        RUNS, {"action": "restart-pods", "service": "web-search", "reason": "x"}, format="json"
    )
    assert response.status_code == 403


def test_an_operator_asks_for_a_run_as_an_operator(
    webhook: Callable[..., HealingAction], operator_client: Any, enqueued: list[int]
) -> None:
    webhook(risk="medium")
    response = operator_client.post(
        RUNS, {"action": "restart-pods", "service": "web-search", "reason": "x"}, format="json"
    )
    assert response.status_code == 201, response.json()
    conforms(response, "post", RUNS)
    assert (response.json()["trigger"], response.json()["state"]) == ("operator", "approved")
    assert response.json()["requested_by"] == f"user:{operator_client.user.username}"


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {"action": "restart-pods", "service": "web-search"},
        {"action": "restart-pods", "service": "Web Search", "reason": "x"},
        {"action": "restart-pods", "service": "web-search", "reason": "x", "parameters": []},
        '{"action": "restart-pods", "service": "web-search", "reason": "x", "parameters": {"replicas": 1e400}}',
        '{"action": "restart-pods", "service": "web-search", "reason": "x", "parameters": {"replicas": "\\u0000"}}',
        {"action": "restart-pods", "service": "web-search", "reason": "x", "extra": 1},
        {"action": "nope", "service": "web-search", "reason": "x"},
    ],
)
def test_it_answers_bad_run_requests_with_a_4xx(
    body: Any, webhook: Callable[..., HealingAction], agent_client: Any
) -> None:
    webhook()
    if isinstance(body, str):  # raw JSON the test client would not write (a number beyond a float, a NUL)
        response = agent_client.post(RUNS, body, content_type="application/json")
    else:
        response = agent_client.post(RUNS, body, format="json")
    assert 400 <= response.status_code < 500, response.content[:300]
    conforms(response, "post", RUNS)


# --- holds ---------------------------------------------------------------------------------------------------------


def test_an_operator_clears_a_hold_through_the_api(
    webhook: Callable[..., HealingAction], operator_client: Any, agent_client: Any
) -> None:
    action = webhook()
    hold = HealingHold.objects.create(
        action=action, service="web-search", reason="looping", created_at=services._now()
    )
    listed = agent_client.get("/api/v1/healing/holds", {"open": "true"})
    assert [h["id"] for h in listed.json()["results"]] == [hold.pk]
    conforms(listed, "get", "/api/v1/healing/holds")
    assert (
        agent_client.post(
            f"/api/v1/healing/holds/{hold.pk}/clear", {"reason": "x"}, format="json"
        ).status_code
        == 403
    )
    assert (
        operator_client.post(f"/api/v1/healing/holds/{hold.pk}/clear", {}, format="json").status_code == 400
    )
    response = operator_client.post(
        f"/api/v1/healing/holds/{hold.pk}/clear", {"reason": "fixed"}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert (response.json()["open"], response.json()["cleared_reason"]) == (False, "fixed")
    again = operator_client.post(f"/api/v1/healing/holds/{hold.pk}/clear", {"reason": "fixed"}, format="json")
    assert again.status_code == 409
    assert agent_client.get("/api/v1/healing/holds", {"open": "false"}).json()["count"] == 1

"""Asking for a run: the open run is joined, the cooldown and the hourly limit skip with `not_before`, and
parameters are checked against the action's JSON Schema (RE2 for patterns), naming the field."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from core.api.errors import Conflict, InvalidInput
from core.audit.models import AuditEvent
from core.audit.services import Actor
from healing.actions import params, services
from healing.actions.models import HealingAction, HealingRun
from tests.support import factories
from tests.support.healing_runs import ask, execute, run_row

pytestmark = pytest.mark.django_db


def finished_run(action: HealingAction, ago_s: float, service: str = "web-search") -> HealingRun:
    """A run of the action that started and succeeded `ago_s` seconds ago."""
    at = timezone.now() - timedelta(seconds=ago_s)
    return run_row(action, "succeeded", service=service, created_at=at, started_at=at, finished_at=at)


def test_it_answers_the_open_run_to_a_second_request(
    webhook: Callable[..., HealingAction], enqueued: list[int]
) -> None:
    webhook(risk="medium")
    first, created = ask("restart-pods", "agent")
    again, created_again = ask("restart-pods", "rule")
    assert (created, created_again) == (True, False)
    assert again.pk == first.pk
    assert HealingRun.objects.count() == 1


def test_it_answers_201_then_200_with_the_open_run_through_the_api(
    webhook: Callable[..., HealingAction], agent_client: Any, enqueued: list[int]
) -> None:
    webhook(risk="medium")
    body = {
        "action": "restart-pods",
        "service": "web-search",
        "parameters": {"replicas": 2},
        "reason": "503s",
    }
    first = agent_client.post("/api/v1/healing/runs", body, format="json")
    second = agent_client.post("/api/v1/healing/runs", body, format="json")
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert first.json()["state"] == "pending_approval"
    assert first.json()["requested_by"].startswith("agent:")


def test_it_skips_a_request_within_the_cooldown_saying_when_it_may_run(
    webhook: Callable[..., HealingAction],
) -> None:
    action = webhook(cooldown_s=300)
    last = finished_run(action, ago_s=100)
    run, created = ask("restart-pods", "agent")
    assert created
    assert run.state == "skipped"
    assert run.state_reason.startswith("cooldown:")
    assert run.not_before == last.finished_at + timedelta(seconds=300)
    assert run.finished_at is not None
    assert list(run.transitions.values_list("to_state", flat=True)) == ["skipped"]


def test_it_runs_again_after_the_cooldown(webhook: Callable[..., HealingAction], enqueued: list[int]) -> None:
    action = webhook(cooldown_s=60)
    finished_run(action, ago_s=61)
    run, _ = ask("restart-pods", "agent")
    assert run.state == "approved"


def test_it_skips_a_request_past_the_hourly_limit_until_a_slot_frees(
    webhook: Callable[..., HealingAction],
) -> None:
    action = webhook(max_runs_per_hour=2)
    older = finished_run(action, ago_s=1800)
    finished_run(action, ago_s=600)
    finished_run(action, ago_s=60, service="billing")  # another target has its own limit
    run, _ = ask("restart-pods", "agent")
    assert run.state == "skipped"
    assert run.state_reason.startswith("hourly_limit:")
    assert older.started_at is not None
    assert run.not_before == older.started_at + timedelta(hours=1)


def test_it_refuses_parameters_that_fail_the_schema_naming_the_field(
    webhook: Callable[..., HealingAction], agent_client: Any
) -> None:
    webhook()
    response = agent_client.post(
        "/api/v1/healing/runs",
        {"action": "restart-pods", "service": "web-search", "parameters": {"replicas": 99}, "reason": "x"},
        format="json",
    )
    assert response.status_code == 400, response.json()
    assert [e["field"] for e in response.json()["errors"]] == ["parameters.replicas"]
    assert not HealingRun.objects.exists()


@pytest.mark.parametrize(
    ("schema", "parameters", "field"),
    [
        ({"type": "object", "required": ["limit"]}, {}, "parameters.limit"),
        ({"type": "object", "additionalProperties": False}, {"oops": 1}, "parameters.oops"),
        (
            {"type": "object", "properties": {"hosts": {"type": "array", "items": {"type": "string"}}}},
            {"hosts": ["a", 2]},
            "parameters.hosts[1]",
        ),
    ],
)
def test_it_names_the_field_at_fault(schema: dict[str, Any], parameters: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        params.validate(schema, parameters)
    assert [e["field"] for e in refused.value.errors] == [field]


def test_it_runs_patterns_on_re2_so_a_catastrophic_pattern_stays_linear() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "pattern": "^(a+)+$"}}}
    started = time.perf_counter()
    with pytest.raises(InvalidInput) as refused:
        params.validate(schema, {"name": "a" * 5000 + "!"})
    assert time.perf_counter() - started < 1.0
    assert refused.value.errors[0]["field"] == "parameters.name"


@pytest.mark.parametrize(
    ("schema", "field"),
    [
        ({"type": "object", "properties": {"x": {"type": "nope"}}}, "parameters_schema.properties.x.type"),
        (
            {"properties": {"x": {"type": "string", "pattern": "(a)\\1"}}},
            "parameters_schema.properties.x.pattern",
        ),
        ({"patternProperties": {"^a": {}}}, "parameters_schema.patternProperties"),
        ({"$ref": "https://example.com/schema.json"}, "parameters_schema.$ref"),
        ({"$ref": "#/$defs/missing"}, "parameters_schema.$ref"),
        ([1, 2], "parameters_schema"),
    ],
)
def test_it_refuses_a_schema_it_cannot_run_safely(schema: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        params.check_schema(schema)
    assert refused.value.errors[0]["field"] == field


def test_it_accepts_a_pattern_inside_data_and_local_references() -> None:
    schema = {
        "type": "object",
        "$defs": {"n": {"type": "integer"}},
        "properties": {"n": {"$ref": "#/$defs/n"}, "pattern": {"type": "string", "default": "(a)\\1"}},
        "examples": [{"pattern": "(a)\\1"}],
    }
    assert params.check_schema(schema) is schema
    assert params.validate(schema, {"n": 3, "pattern": "x"}) == {"n": 3, "pattern": "x"}


def test_it_refuses_an_invalid_schema_when_the_action_is_saved(operator_client: Any, target: Any) -> None:
    response = operator_client.post(
        "/api/v1/healing/actions",
        {
            "name": "bad-schema",
            "url": target.url("/x"),
            "parameters_schema": {"type": "object", "properties": {"n": {"minimum": "one"}}},
            "reason": "try",
        },
        format="json",
    )
    assert response.status_code == 400, response.json()
    assert response.json()["errors"][0]["field"].startswith("parameters_schema")
    assert not HealingAction.objects.filter(name="bad-schema").exists()


def test_it_refuses_an_unknown_builtin_when_the_action_is_saved() -> None:
    action = HealingAction.objects.get(name="reset_breaker")
    action.builtin = "format_the_disk"
    with pytest.raises(InvalidInput) as refused:
        services.save_action(action, actor=Actor(user=factories.operator()), reason="try")
    assert refused.value.errors[0]["field"] == "builtin"
    assert HealingAction.objects.get(name="reset_breaker").builtin == "reset_breaker"


def test_it_refuses_a_request_for_a_disabled_action(webhook: Callable[..., HealingAction]) -> None:
    webhook(enabled=False)
    with pytest.raises(Conflict):
        ask("restart-pods", "agent")


def test_it_audits_every_request(webhook: Callable[..., HealingAction], enqueued: list[int]) -> None:
    webhook(risk="medium")
    run, _ = ask("restart-pods", "rule")
    event = AuditEvent.objects.get(action="healing_run.request", target_id=str(run.pk))
    assert event.reason == "search answers 503"
    assert run.requested_by == "rule:restart-on-503"


def test_it_fills_the_body_template_from_the_validated_parameters(
    webhook: Callable[..., HealingAction], target: Any, enqueued: list[int]
) -> None:
    webhook(
        body_template={"svc": "{{service}}", "n": "{{replicas}}", "text": "run {{run_id}}: {{replicas}} pods"}
    )
    run, _ = ask("restart-pods", "agent", parameters={"replicas": 3})
    assert execute(run) == "succeeded"
    assert json.loads(target.seen[0].body) == {"svc": "web-search", "n": 3, "text": f"run {run.pk}: 3 pods"}

"""Helpers of the healing actions' tests (tests/healing/actions/): a webhook action on the loopback target,
actors of each trigger, asking for a run, and executing one in this process as a worker would."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.utils import timezone

from core.audit.models import AuditEvent
from core.audit.services import Actor
from healing.actions import services
from healing.actions.models import HealingAction, HealingRun
from healing.checks.models import HealthCheck, HealthCheckResult
from tests.support import factories
from tests.support.http_target import Target


def make_webhook(target: Target, name: str = "restart-pods", **fields: Any) -> HealingAction:
    values: dict[str, Any] = {
        "kind": HealingAction.Kind.WEBHOOK,
        "risk": "low",
        "cooldown_s": 0,
        "max_runs_per_hour": 100,
        "timeout_s": 5,
        "url": target.url("/heal"),
        "method": "POST",
        "parameters_schema": {
            "type": "object",
            "properties": {"replicas": {"type": "integer", "minimum": 1, "maximum": 20}},
            "additionalProperties": False,
        },
        "body_template": {"service": "{{service}}", "replicas": "{{replicas}}", "run": "{{run_id}}"},
    }
    values.update(fields)
    return HealingAction.objects.create(name=name, **values)


def agent_actor() -> Actor:
    return Actor(agent=factories.AgentFactory())


def operator_actor(user: Any = None) -> Actor:
    return Actor(user=user or factories.operator())


def rule_actor() -> Actor:
    return Actor(source=AuditEvent.Source.SYSTEM)


ACTORS: dict[str, Callable[[], Actor]] = {
    "agent": agent_actor,
    "rule": rule_actor,
    "operator": operator_actor,
}


def ask(
    action: str, trigger: str = "agent", service: str = "web-search", **kwargs: Any
) -> tuple[HealingRun, bool]:
    """request_run with an actor of the trigger's kind (a new one unless `actor` is given)."""
    actor = kwargs.pop("actor", None) or ACTORS[trigger]()
    return services.request_run(
        action=action,
        service=service,
        parameters=kwargs.pop("parameters", {}),
        reason=kwargs.pop("reason", "search answers 503"),
        trigger=trigger,
        actor=actor,
        requester="rule:restart-on-503" if trigger == "rule" else None,
    )


def run_row(action: HealingAction, state: str, **fields: Any) -> HealingRun:
    """A run of the action in `state`, written straight to the table (no policy, no history): the past a test
    starts from. `fields` override the row's (service web-search, asked by user:alice now, the action's risk)."""
    values: dict[str, Any] = {
        "service": "web-search",
        "risk": action.risk,
        "trigger": "operator",
        "requested_by": "user:alice",
        "reason": "drill",
        "created_at": timezone.now(),
        **fields,
    }
    return HealingRun.objects.create(action=action, state=state, **values)


def execute(run: HealingRun, task_id: str = "task-1") -> str:
    """What a worker does with the execution's message, in this process."""
    answer = services.execute_run(run.pk, task_id)
    run.refresh_from_db()
    return answer


def health_check(name: str = "search-http", service: str = "web-search", **fields: Any) -> HealthCheck:
    values: dict[str, Any] = {"kind": "http", "url": "http://127.0.0.1:9/health", "state": "unknown"}
    values.update(fields)
    return HealthCheck.objects.create(name=name, service=service, **values)


def check_result(check: HealthCheck, ok: bool, at: datetime | None = None) -> HealthCheckResult:
    """A result of the check, and the state it leads to (healthy on a pass, unhealthy on a failure)."""
    HealthCheck.objects.filter(pk=check.pk).update(state="healthy" if ok else "unhealthy")
    return HealthCheckResult.objects.create(
        health_check=check, ok=ok, source="verification", created_at=at or timezone.now()
    )

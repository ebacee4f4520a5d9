"""get_recovery_options, called as the plain tool function with a verified caller: with an error it plans as
POST /api/v1/recovery/plan does (and records the plan), its options are those GET /api/v1/recovery/options
answers, and the errors name the tool's arguments."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from core.api.errors import Forbidden, InvalidInput, NotFound
from mcp_server import callers
from mcp_server.tools.recovery import get_recovery_options
from recovery.breakers.models import Service
from recovery.decisions.models import RecoveryPlan
from tests.support import factories
from tests.support.mcp_calls import through_sdk

pytestmark = pytest.mark.django_db

RATE_LIMITED = {
    "type": "RateLimitError",
    "status_code": 429,
    "message": "Rate limit reached",
    "retry_after": 20,
}


@pytest.fixture
def service() -> Service:
    return Service.objects.create(name="openai")


def agent_pair() -> tuple[callers.Caller, APIClient]:
    """The same agent key, as a tool's caller and as a REST client."""
    _, key = factories.agent_key()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return callers.authenticate(key), client


def test_it_plans_a_429_as_the_rest_api_plans_it(service: Service) -> None:
    caller, client = agent_pair()

    out = get_recovery_options(caller, service="openai", operation="chat", error=RATE_LIMITED)
    rest = client.post(
        "/api/v1/recovery/plan",
        {"service": "openai", "operation": "chat", "error": RATE_LIMITED},
        format="json",
    )

    assert rest.status_code == 200, rest.json()
    assert out.plan is not None
    mine = out.plan.model_dump(mode="json")
    theirs = rest.json()
    for name in ("action", "delay_s", "error_class", "severity", "kind", "retry_after_s", "policy", "reason"):
        assert mine[name] == theirs[name], name
    assert (mine["error_class"], mine["retry_after_s"]) == ("rate_limit", 20.0)


def test_it_records_the_plan_with_the_agent(agent_caller: callers.Caller, service: Service) -> None:
    out = get_recovery_options(agent_caller, service="openai", error=RATE_LIMITED)

    assert out.plan is not None
    plan = RecoveryPlan.objects.get()
    assert str(plan.pk) == str(out.plan.plan_id)
    assert plan.agent == agent_caller.agent


def test_it_answers_the_options_get_recovery_options_answers_for_the_plans_class(service: Service) -> None:
    caller, client = agent_pair()

    out = get_recovery_options(caller, service="openai", operation="chat", error=RATE_LIMITED)
    assert out.plan is not None
    query = {
        "service": "openai",
        "operation": "chat",
        "error_class": out.plan.error_class,
        "kind": out.plan.kind,
    }
    rest = client.get("/api/v1/recovery/options", query)

    assert rest.status_code == 200, rest.json()
    assert out.options.model_dump(mode="json") == rest.json()


def test_it_answers_a_viewer_the_options_of_an_error_class(
    viewer_caller: callers.Caller, service: Service
) -> None:
    out = get_recovery_options(viewer_caller, service="openai", error_class="transient")

    assert out.plan is None
    assert (out.options.service, out.options.error_class) == ("openai", "transient")
    assert {"retry", "wait", "degrade", "escalate", "abort"} <= {o.action for o in out.options.options}
    assert RecoveryPlan.objects.count() == 0


def test_it_refuses_a_viewer_an_error_to_plan(viewer_caller: callers.Caller, service: Service) -> None:
    with pytest.raises(Forbidden):
        get_recovery_options(viewer_caller, service="openai", error=RATE_LIMITED)
    assert RecoveryPlan.objects.count() == 0


def test_it_answers_not_found_naming_service_for_an_unknown_service(agent_caller: callers.Caller) -> None:
    with pytest.raises(NotFound) as refused:
        get_recovery_options(agent_caller, service="nowhere", error_class="transient")
    assert refused.value.field == "service"


def test_it_asks_for_the_error_when_given_neither_error_nor_class(
    agent_caller: callers.Caller, service: Service
) -> None:
    with pytest.raises(InvalidInput) as refused:
        get_recovery_options(agent_caller, service="openai")
    assert refused.value.field == "error"


def test_it_refuses_an_error_with_an_error_class(agent_caller: callers.Caller, service: Service) -> None:
    with pytest.raises(InvalidInput) as refused:
        get_recovery_options(agent_caller, service="openai", error=RATE_LIMITED, error_class="transient")
    assert refused.value.field == "error_class"
    assert RecoveryPlan.objects.count() == 0


@pytest.mark.parametrize(
    ("error", "field"),
    [
        ({"status_code": 42}, "error.status_code"),
        ({"service": "anthropic", "type": "Timeout"}, "error.service"),
    ],
)
def test_it_names_the_field_of_a_bad_error(
    agent_caller: callers.Caller, service: Service, error: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        get_recovery_options(agent_caller, service="openai", error=error)
    assert [e["field"] for e in refused.value.errors] == [field]
    assert RecoveryPlan.objects.count() == 0


def test_it_takes_json_arguments_as_the_sdk_validates_them(
    agent_caller: callers.Caller, service: Service
) -> None:
    content = through_sdk(agent_caller, "get_recovery_options", {"service": "openai", "error": RATE_LIMITED})

    assert (content["plan"]["error_class"], content["options"]["error_class"]) == ("rate_limit", "rate_limit")
    assert content["plan"]["plan_id"] == str(RecoveryPlan.objects.get().pk)


def test_it_takes_an_error_class_and_kind_as_the_sdk_validates_them(
    viewer_caller: callers.Caller, service: Service
) -> None:
    arguments = {"service": "openai", "error_class": "transient", "kind": "connection_timeout"}
    content = through_sdk(viewer_caller, "get_recovery_options", arguments)

    assert content["plan"] is None
    assert (content["options"]["error_class"], content["options"]["kind"]) == (
        "transient",
        "connection_timeout",
    )

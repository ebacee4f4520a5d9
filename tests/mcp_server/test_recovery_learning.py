"""get_recovery_options carries `learned`: the service's figures for the error's class (service scope) and, given
an error, its pattern's figures, shaped as GET /api/v1/learning answers them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from mcp_server import callers
from mcp_server.tools.recovery import get_recovery_options
from recovery.breakers.models import Service
from recovery.errors import services as error_services
from recovery.errors.schemas import ErrorIn
from recovery.errors.taxonomy import ErrorClass
from recovery.learning.models import Effectiveness
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


def effectiveness(**fields: Any) -> Effectiveness:
    now = timezone.now()
    values: dict[str, Any] = {
        "scope": "service",
        "service": "openai",
        "error_class": "rate_limit",
        "action": "wait",
        "tries": 20.0,
        "successes": 19.0,
        "delay_s_sum": 190.0,
        "delay_weight": 19.0,
        "as_of_s": now.timestamp(),
        "total_tries": 20,
        "total_successes": 19,
        "first_result_at": now - timedelta(days=1),
        "last_result_at": now,
        **fields,
    }
    return Effectiveness.objects.create(**values)


def fingerprint_of(error: dict[str, Any], service: str = "openai", operation: str = "chat") -> str:
    report = ErrorIn.model_validate({**error, "service": service, "operation": operation}).to_report()
    return error_services.classify_report(report).fingerprint


def test_it_carries_the_services_figures_for_the_class(
    viewer_caller: callers.Caller, service: Service
) -> None:
    effectiveness(error_class="rate_limit", action="wait")
    effectiveness(error_class="transient", action="retry")  # another class: not this error's
    effectiveness(service="web-search", action="fallback:cache")  # another service

    out = get_recovery_options(viewer_caller, service="openai", error_class=ErrorClass.RATE_LIMIT)

    assert [(r.scope, r.service, r.error_class, r.action) for r in out.learned.rows] == [
        ("service", "openai", "rate_limit", "wait")
    ]
    row = out.learned.rows[0]
    assert (row.tries, row.successes, row.delay_s, row.trusted) == (20.0, 19.0, 10.0, True)
    assert (out.learned.half_life_days, out.learned.min_tries) == (7.0, 10.0)


def test_it_carries_the_errors_pattern_figures_with_an_error(
    agent_caller: callers.Caller, service: Service
) -> None:
    fingerprint = fingerprint_of(RATE_LIMITED)
    effectiveness(action="wait")
    effectiveness(
        scope="pattern", fingerprint=fingerprint, action="fallback:cache", tries=50.0, successes=47.0
    )
    effectiveness(scope="pattern", fingerprint="0" * 40, action="retry")  # another pattern

    out = get_recovery_options(
        agent_caller, service="openai", operation="chat", error=ErrorIn.model_validate(RATE_LIMITED)
    )

    assert [(r.scope, r.fingerprint, r.action) for r in out.learned.rows] == [
        ("service", "", "wait"),
        ("pattern", fingerprint, "fallback:cache"),
    ]


def test_it_carries_an_empty_list_when_nothing_was_learned(
    viewer_caller: callers.Caller, service: Service
) -> None:
    out = get_recovery_options(viewer_caller, service="openai", error_class=ErrorClass.TRANSIENT)

    assert out.learned.rows == []


def test_it_answers_the_figures_get_learning_answers(agent_caller: callers.Caller, service: Service) -> None:
    effectiveness()
    _, key = factories.agent_key()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")

    out = get_recovery_options(agent_caller, service="openai", error_class=ErrorClass.RATE_LIMIT)
    rest = client.get("/api/v1/learning", {"service": "openai", "error_class": "rate_limit"})

    assert rest.status_code == 200
    assert out.learned.model_dump(mode="json") == rest.json()


def test_it_passes_learned_through_the_sdks_output_schema(
    viewer_caller: callers.Caller, service: Service
) -> None:
    effectiveness()

    content = through_sdk(
        viewer_caller, "get_recovery_options", {"service": "openai", "error_class": "rate_limit"}
    )

    assert [r["action"] for r in content["learned"]["rows"]] == ["wait"]

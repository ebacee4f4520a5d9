"""POST /api/v1/outcomes with runs of successes, over HTTP: the view hands the body to services.report_outcomes
(the edit of recovery/breakers/api.py that goes with it is applied here as the view's `_record`, so that these
tests hold before and after it)."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from django.conf import settings
from rest_framework.request import Request
from rest_framework.response import Response

from core.audit.services import Actor
from recovery.breakers import api, services, traffic
from recovery.breakers import store as breaker_store
from recovery.breakers.models import BreakerTransition, Service
from recovery.breakers.store import RedisStore

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


@pytest.fixture(autouse=True)
def view_and_store(monkeypatch: pytest.MonkeyPatch) -> Any:
    def record(self: api.OutcomesView, request: Request) -> Response:
        return Response(services.report_outcomes(request.data, actor=Actor.from_request(request)))

    monkeypatch.setattr(api.OutcomesView, "_record", record)
    breaker_store.use_store(RedisStore(redis.Redis.from_url(settings.TEST_REDIS_URL)))
    yield
    breaker_store.use_store(None)


def test_it_answers_each_item_of_a_compact_batch(agent_client: Any) -> None:
    Service.objects.create(name="svc", consecutive_failures=2, minimum_calls=100)
    body = {
        "outcomes": [
            {"service": "svc", "operation": "op", "successes": 3, "durations_ms": [1.5, 2, 3]},
            {"service": "svc", "operation": "op", "success": False, "error": {"status_code": 503}},
            {"service": "svc", "operation": "op", "success": False, "error": {"status_code": 503}},
            {"service": "svc", "operation": "op", "successes": 40},
        ],
        "dropped": 5,
    }
    response = agent_client.post("/api/v1/outcomes", body, format="json")
    assert response.status_code == 200, response.json()
    results = response.json()["results"]
    assert [r["state"] for r in results] == ["closed", "closed", "open", "open"]
    assert results[2]["transition"]["reason"] == "2 consecutive failures (threshold 2)"
    assert [(t.from_state, t.to_state) for t in BreakerTransition.objects.all()] == [("closed", "open")]
    assert traffic.window("svc", 60) == (45, 2)


def test_it_refuses_a_bad_run_with_400_naming_the_field(agent_client: Any) -> None:
    body = {"outcomes": [{"service": "svc", "successes": 2, "durations_ms": [1.0]}]}
    response = agent_client.post("/api/v1/outcomes", body, format="json")
    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["outcomes[0].durations_ms"]
    assert not Service.objects.filter(name="svc").exists()


def test_it_counts_a_repeated_batch_once(agent_client: Any) -> None:
    body = {"outcomes": [{"service": "svc", "successes": 1000}]}
    for _ in range(2):
        response = agent_client.post("/api/v1/outcomes", body, format="json", HTTP_IDEMPOTENCY_KEY="batch-1")
        assert response.status_code == 200
    assert traffic.window("svc", 60) == (1000, 0)

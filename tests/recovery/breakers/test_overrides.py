"""Issue 11, item 22: an operator's override is in force at the very next permit in every process. It lives in
the breaker's shared state where the permit looks, not only in each process's cached copy of the service
(BREAKER_CONFIG_CACHE_SECONDS)."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
import redis
from django.conf import settings

from recovery.breakers import registry
from recovery.breakers import services as breaker_services
from recovery.breakers import store as breaker_store
from recovery.breakers.models import BreakerTransition, Service
from recovery.breakers.store import DatabaseStore, RedisStore

pytestmark = pytest.mark.django_db

FAIL_503 = {"service": "svc", "success": False, "error": {"status_code": 503}}


@pytest.fixture(params=["database", pytest.param("redis", marks=pytest.mark.redis)])
def store_kind(request: Any) -> str:
    breaker_store.use_store(
        DatabaseStore()
        if request.param == "database"
        else RedisStore(redis.Redis.from_url(settings.TEST_REDIS_URL))
    )
    return str(request.param)


def small_breaker() -> Service:
    return Service.objects.create(name="svc", minimum_calls=4, window_size=10, consecutive_failures=0)


def primed_cache() -> Service:
    """What another process holds for BREAKER_CONFIG_CACHE_SECONDS: its own copy of the service, as read now."""
    return copy.deepcopy(registry._cache["svc"][1])


def another_process_cache(service: Service) -> None:
    """Put back what another process would still hold: the service as it was read before the override."""
    registry._cache["svc"] = (time.monotonic() + 60, service)


def override(client: Any, mode: str) -> None:
    response = client.post(
        "/api/v1/breakers/svc/override", {"mode": mode, "reason": "incident"}, format="json"
    )
    assert response.status_code == 200, response.content[:300]


def test_forced_open_refuses_the_next_permit_where_the_cache_still_says_auto(
    agent_client: Any, operator_client: Any, store_kind: str
) -> None:
    small_breaker()
    assert agent_client.post("/api/v1/breakers/svc/permit").json()["allowed"] is True
    primed = primed_cache()
    override(operator_client, "forced_open")
    another_process_cache(primed)
    permit = agent_client.post("/api/v1/breakers/svc/permit").json()
    assert (permit["allowed"], permit["state"], permit["reason"]) == (
        False,
        "forced_open",
        "forced_open by an operator: incident",
    )


def test_back_to_auto_allows_the_next_permit_where_the_cache_still_says_forced_open(
    agent_client: Any, operator_client: Any, store_kind: str
) -> None:
    small_breaker()
    override(operator_client, "forced_open")
    assert agent_client.post("/api/v1/breakers/svc/permit").json()["allowed"] is False
    primed = primed_cache()
    assert primed.override == "forced_open"
    override(operator_client, "auto")
    another_process_cache(primed)
    permit = agent_client.post("/api/v1/breakers/svc/permit").json()
    assert (permit["allowed"], permit["state"]) == (True, "closed")


def test_outcomes_under_an_override_never_trip_where_the_cache_still_says_auto(
    agent_client: Any, operator_client: Any, store_kind: str
) -> None:
    small_breaker()
    agent_client.post("/api/v1/breakers/svc/permit")
    primed = primed_cache()
    override(operator_client, "disabled")
    another_process_cache(primed)
    results = agent_client.post("/api/v1/outcomes", [FAIL_503] * 6, format="json").json()["results"]
    assert [r["state"] for r in results] == ["disabled"] * 6
    assert list(BreakerTransition.objects.values_list("to_state", flat=True)) == ["disabled"]


def test_an_override_set_in_the_database_alone_reaches_the_store(agent_client: Any, store_kind: str) -> None:
    # A row changed without the service layer (a restore, a migration) or while the store was unreachable:
    # beat's upkeep writes it where permits look.
    service = small_breaker()
    agent_client.post("/api/v1/breakers/svc/permit")
    Service.objects.filter(pk=service.pk).update(override="forced_open", override_reason="by hand")
    assert breaker_services.sync_overrides() == 1
    assert agent_client.post("/api/v1/breakers/svc/permit").json()["state"] == "forced_open"
    assert breaker_services.sync_overrides() == 0


@pytest.mark.redis
def test_without_the_store_the_last_read_override_still_decides(
    agent_client: Any, operator_client: Any
) -> None:
    breaker_store.use_store(RedisStore(redis.Redis.from_url(settings.TEST_REDIS_URL)))
    small_breaker()
    override(operator_client, "forced_open")
    breaker_store.use_store(RedisStore(redis.Redis(port=1, socket_connect_timeout=0.2)))
    permit = agent_client.post("/api/v1/breakers/svc/permit").json()
    assert (permit["allowed"], permit["state"]) == (False, "forced_open")

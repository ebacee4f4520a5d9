"""A caller refused by a half-open breaker whose trial permits are all taken is told to ask again after the
service's base open wait at most, not after the trial permit's TTL (BREAKER_TRIAL_PERMIT_TTL_SECONDS): the pure
rule (logic.trials_full_wait) and the answer of the permit API on both stores. The stores' agreement on it is in
test_store_contract.py, the SDK port's in tests/sdk/test_breaker.py."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from django.conf import settings

from recovery.breakers import logic as breaker_logic
from recovery.breakers import store as breaker_store
from recovery.breakers.models import Service
from recovery.breakers.store import DatabaseStore, RedisStore

NOW = 1_700_000_000_000
CFG = breaker_logic.Config(wait_ms=2000, half_open_max=2, trial_ttl_ms=30_000)
FAIL_503 = {"service": "svc", "success": False, "error": {"status_code": 503}}
TEST_REDIS_URL: str = getattr(settings, "TEST_REDIS_URL", "")


def _full(*expiries: int) -> breaker_logic.State:
    st = breaker_logic.new_state("g")
    st["state"], st["trials"] = breaker_logic.HALF_OPEN, {f"t{i}": e for i, e in enumerate(expiries)}
    return st


def test_it_bounds_the_wait_by_the_base_open_wait() -> None:
    assert breaker_logic.trials_full_wait(_full(NOW + 29_000, NOW + 30_000), CFG, NOW) == 2000


def test_it_bounds_the_wait_by_the_soonest_trial_permit_expiry() -> None:
    assert breaker_logic.trials_full_wait(_full(NOW + 30_000, NOW + 700), CFG, NOW) == 700


def test_it_waits_at_least_one_millisecond() -> None:
    cfg = breaker_logic.Config(wait_ms=0, half_open_max=1)
    assert breaker_logic.trials_full_wait(_full(NOW + 30_000), cfg, NOW) == 1


def test_it_refuses_with_the_short_wait_and_says_so_in_the_reason() -> None:
    st = _full(NOW + 30_000, NOW + 30_000)
    result = breaker_logic.permit(st, CFG, NOW, "t9")
    assert (result.allowed, result.state, result.permit_id, result.retry_after_ms) == (
        False,
        "half_open",
        "",
        2000,
    )
    assert result.reason == "half-open: all 2 trial permits are in use: ask again in 2 s"
    assert set(st["trials"]) == {"t0", "t1"}


@pytest.fixture(params=["database", pytest.param("redis", marks=pytest.mark.redis)])
def store_kind(request: Any) -> str:
    breaker_store.use_store(
        DatabaseStore() if request.param == "database" else RedisStore(redis.Redis.from_url(TEST_REDIS_URL))
    )
    return str(request.param)


@pytest.mark.django_db
def test_it_answers_a_refused_permit_with_the_base_wait_through_the_api(
    agent_client: Any, store_kind: str
) -> None:
    # The trial permits live 30 s (the default TTL); the service waits 0.3 s before trials.
    Service.objects.create(
        name="svc",
        minimum_calls=4,
        window_size=10,
        consecutive_failures=0,
        wait_duration_s=0.3,
        half_open_max_calls=2,
    )
    response = agent_client.post("/api/v1/outcomes", [FAIL_503] * 4, format="json")
    assert response.json()["results"][3]["state"] == "open"
    time.sleep(0.35)
    trials = [agent_client.post("/api/v1/breakers/svc/permit").json() for _ in range(2)]
    assert [(t["allowed"], t["state"]) for t in trials] == [(True, "half_open")] * 2
    refused = agent_client.post("/api/v1/breakers/svc/permit").json()
    assert (refused["allowed"], refused["state"], refused["permit_id"]) == (False, "half_open", None)
    assert 0 < refused["retry_after_s"] <= 0.3
    assert refused["reason"].startswith("half-open: all 2 trial permits are in use: ask again in ")

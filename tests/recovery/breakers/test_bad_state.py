"""Issue 11, item 1: a huge Retry-After is capped at MAX_RETRY_AFTER_S (and the answer says so), and no stored
breaker state, however bad, makes a reader answer 500; the operator's override always goes through."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from recovery.breakers import store as breaker_store
from recovery.breakers.models import BreakerState, BreakerTransition, Service
from recovery.breakers.store import DatabaseStore, RedisStore
from tests.support.factories import rebound_settings

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)
YEAR_33715_MS = 1_001_733_222_400_000  # now + Retry-After 1e12 s, as the old code stored it


def small_breaker(name: str = "svc") -> Service:
    return Service.objects.create(
        name=name, minimum_calls=4, window_size=10, consecutive_failures=0, wait_duration_s=30
    )


def rate_limited(retry_after: Any) -> dict[str, Any]:
    return {"service": "svc", "success": False, "error": {"status_code": 429, "retry_after": retry_after}}


def trip(client: Any) -> None:
    failure = {"service": "svc", "success": False, "error": {"status_code": 503}}
    assert client.post("/api/v1/outcomes", [failure] * 4, format="json").status_code == 200


def moment(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def every_reader(agent_client: Any, operator_client: Any) -> dict[str, Any]:
    """Every endpoint that reads the breaker's stored state: each must answer 200."""
    answers = {
        "snapshot": agent_client.get("/api/v1/breakers/snapshot"),
        "list": agent_client.get("/api/v1/breakers"),
        "detail": agent_client.get("/api/v1/breakers/svc"),
        "plan": agent_client.post(
            "/api/v1/recovery/plan",
            {"service": "svc", "error": {"status_code": 503}, "attempt": 1},
            format="json",
        ),
        "permit": agent_client.post("/api/v1/breakers/svc/permit"),
    }
    for name, response in answers.items():
        assert response.status_code == 200, (name, response.content[:500])
    return {name: response.json() for name, response in answers.items()}


def assert_open_within_a_day(view: dict[str, Any]) -> None:
    assert view["state"] == "open", view
    assert timezone.now() < moment(view["open_until"]) <= timezone.now() + DAY


def assert_override_works(agent_client: Any, operator_client: Any) -> None:
    response = operator_client.post(
        "/api/v1/breakers/svc/override", {"mode": "forced_open", "reason": "incident"}, format="json"
    )
    assert response.status_code == 200, response.content[:500]
    assert response.json()["state"] == "forced_open"
    permit = agent_client.post("/api/v1/breakers/svc/permit").json()
    assert (permit["allowed"], permit["state"]) == (False, "forced_open")


# --- the cap, through the API, on both stores ------------------------------------------------------------


@pytest.fixture(params=["database", pytest.param("redis", marks=pytest.mark.redis)])
def any_store(request: Any) -> str:
    breaker_store.use_store(
        DatabaseStore()
        if request.param == "database"
        else RedisStore(redis.Redis.from_url(settings.TEST_REDIS_URL))
    )
    return str(request.param)


@pytest.mark.parametrize("retry_after", [1_000_000_000_000, 1e308])
def test_it_caps_a_huge_retry_after_and_says_so(
    any_store: str, agent_client: Any, operator_client: Any, retry_after: float
) -> None:
    small_breaker()
    response = agent_client.post("/api/v1/outcomes", rate_limited(retry_after), format="json")
    assert response.status_code == 200, response.content[:500]
    answer = response.json()
    assert (answer["state"], answer["retry_after_capped"]) == ("open", True)
    assert answer["transition"]["reason"] == (
        f"rate limited: Retry-After {float(retry_after):g} s, capped at 86400 s (MAX_RETRY_AFTER_S)"
    )
    seen = every_reader(agent_client, operator_client)
    assert_open_within_a_day(seen["detail"])
    assert 86_399 < seen["permit"]["retry_after_s"] <= 86_400
    assert_override_works(agent_client, operator_client)


def test_a_retry_after_under_the_cap_is_kept_and_not_reported(any_store: str, agent_client: Any) -> None:
    small_breaker()
    answer = agent_client.post("/api/v1/outcomes", rate_limited(120), format="json").json()
    assert (answer["retry_after_capped"], answer["transition"]["reason"]) == (
        False,
        "rate limited: Retry-After 120 s",
    )


@override_settings(REBOUND=rebound_settings(MAX_RETRY_AFTER_S=600))
def test_the_cap_is_the_configured_one(any_store: str, agent_client: Any) -> None:
    small_breaker()
    agent_client.post("/api/v1/outcomes", rate_limited(3600), format="json")
    assert 599 < agent_client.post("/api/v1/breakers/svc/permit").json()["retry_after_s"] <= 600


# --- bad values written straight into Redis, as older code or a hand could leave them -----------------------


def _strip_open_until(service: Service) -> None:
    """The old code's transition rows did not record when an opening ends."""
    for row in BreakerTransition.objects.filter(service=service):
        row.window = {k: v for k, v in row.window.items() if k not in ("open_until", "wait_ms", "seq")}
        row.save(update_fields=["window"])


def _old_format(client: redis.Redis, keys: list[str], service: Service) -> None:
    client.hset(keys[0], "open_until", YEAR_33715_MS)
    client.hdel(keys[0], "gen", "tseq")
    _strip_open_until(service)


BAD_VALUES: dict[str, Callable[[redis.Redis, list[str], Service], None]] = {
    "year 33715 as the old code stored it": _old_format,
    "year 33715": lambda client, keys, service: client.hset(keys[0], "open_until", YEAR_33715_MS),
    "garbage": lambda client, keys, service: client.hset(keys[0], "open_until", "garbage"),
    "not a number": lambda client, keys, service: client.hset(keys[0], "opened_at", "nan"),
    "a missing field": lambda client, keys, service: client.hdel(keys[0], "open_until"),
    "an unknown state": lambda client, keys, service: client.hset(keys[0], "state", "sideways"),
    "the state of the wrong type": lambda client, keys, service: (
        client.delete(keys[0]),
        client.set(keys[0], "garbage"),
    ),
    "the window of the wrong type": lambda client, keys, service: (
        client.delete(keys[1]),
        client.set(keys[1], "garbage"),
    ),
    "a window counter that is no number": lambda client, keys, service: client.hset(keys[0], "wf", "x"),
}


@pytest.mark.redis
@pytest.mark.parametrize("bad", list(BAD_VALUES))
def test_no_bad_value_in_redis_breaks_a_reader(agent_client: Any, operator_client: Any, bad: str) -> None:
    store = RedisStore(redis.Redis.from_url(settings.TEST_REDIS_URL))
    breaker_store.use_store(store)
    service = small_breaker()
    trip(agent_client)
    client = redis.Redis.from_url(settings.TEST_REDIS_URL)
    BAD_VALUES[bad](client, store.keys(service), service)

    seen = every_reader(agent_client, operator_client)

    assert_open_within_a_day(seen["detail"])
    assert [b["state"] for b in seen["snapshot"]["breakers"]] == ["open"]
    assert seen["permit"]["allowed"] is False
    assert seen["plan"]["action"] in ("wait", "fallback", "degrade", "escalate", "abort")
    assert_override_works(agent_client, operator_client)


@pytest.mark.redis
def test_an_open_until_beyond_the_cap_is_clamped_in_place(agent_client: Any) -> None:
    store = RedisStore(redis.Redis.from_url(settings.TEST_REDIS_URL))
    breaker_store.use_store(store)
    service = small_breaker()
    trip(agent_client)
    client = redis.Redis.from_url(settings.TEST_REDIS_URL)
    client.hset(store.keys(service)[0], "open_until", YEAR_33715_MS)
    agent_client.post("/api/v1/breakers/svc/permit")
    stored = int(client.hget(store.keys(service)[0], "open_until") or 0)
    assert stored <= (timezone.now() + DAY).timestamp() * 1000


# --- the same in the database store ---------------------------------------------------------------------


DB_BAD_VALUES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "year 33715 as the old code stored it": lambda data: {
        **{k: v for k, v in data.items() if k not in ("gen", "tseq", "pending")},
        "open_until": YEAR_33715_MS,
    },
    "year 33715": lambda data: {**data, "open_until": YEAR_33715_MS},
    "beyond any date": lambda data: {**data, "open_until": 1e300, "opened_at": -1e300},
    "garbage": lambda data: {**data, "open_until": "garbage"},
    "a missing field": lambda data: {k: v for k, v in data.items() if k != "wait_ms"},
    "not a state at all": lambda data: ["garbage"],
    "a window of garbage": lambda data: {**data, "win": {"x": "y"}, "trials": [1]},
}


@pytest.mark.parametrize("bad", list(DB_BAD_VALUES))
def test_no_bad_value_in_the_database_store_breaks_a_reader(
    agent_client: Any, operator_client: Any, bad: str
) -> None:
    breaker_store.use_store(DatabaseStore())
    service = small_breaker()
    trip(agent_client)
    if bad.startswith("year 33715 as"):
        _strip_open_until(service)
    row = BreakerState.objects.get(service=service)
    BreakerState.objects.filter(pk=row.pk).update(data=DB_BAD_VALUES[bad](dict(row.data)))

    seen = every_reader(agent_client, operator_client)

    assert_open_within_a_day(seen["detail"])
    assert seen["permit"]["allowed"] is False
    assert_override_works(agent_client, operator_client)


# --- settings that would make a wait overflow ------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("wait_duration_s", 1e12), ("max_wait_s", 1e12), ("wait_multiplier", 1e308), ("wait_multiplier", 101)],
)
def test_it_refuses_a_wait_setting_beyond_its_range(operator_client: Any, field: str, value: float) -> None:
    small_breaker()
    response = operator_client.patch(
        "/api/v1/services/svc",
        {field: value, "max_wait_s": 300, "reason": "r"} | {field: value},
        format="json",
    )
    assert response.status_code == 400
    assert field in [e["field"] for e in response.json()["errors"]]


@override_settings(REBOUND=rebound_settings(MAX_RETRY_AFTER_S=600))
def test_it_refuses_a_wait_over_the_configured_cap(operator_client: Any) -> None:
    small_breaker()
    response = operator_client.patch(
        "/api/v1/services/svc", {"max_wait_s": 3600, "reason": "r"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "max_wait_s"


@pytest.mark.redis
def test_settings_stored_before_the_ceiling_cannot_overflow_a_wait(agent_client: Any) -> None:
    breaker_store.use_store(RedisStore(redis.Redis.from_url(settings.TEST_REDIS_URL)))
    service = small_breaker()
    Service.objects.filter(pk=service.pk).update(
        wait_duration_s=1e300, max_wait_s=1e308, wait_multiplier=1e308
    )
    trip(agent_client)
    permit = agent_client.post("/api/v1/breakers/svc/permit").json()
    assert (permit["allowed"], permit["state"]) == (False, "open")
    assert 86_399 < permit["retry_after_s"] <= 86_400
    assert agent_client.get("/api/v1/breakers/svc").status_code == 200

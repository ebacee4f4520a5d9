"""breaker_details (recovery.breakers.selectors): what breaker_view says of many breakers' state, times and last
transition, in one round trip and one query, in both stores."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.audit.services import Actor
from recovery.breakers import selectors as breaker_selectors
from recovery.breakers import services as breaker_services
from recovery.breakers import store as breaker_store
from recovery.breakers.models import BreakerTransition, Service
from recovery.breakers.store import BreakerStore, DatabaseStore, RedisStore
from tests.support import factories

TEST_REDIS_URL: str = settings.TEST_REDIS_URL  # type: ignore[misc]
pytestmark = pytest.mark.django_db
FAIL_503 = {"success": False, "error": {"status_code": 503}}


@pytest.fixture(params=["database", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: Any) -> Iterator[BreakerStore]:
    chosen: BreakerStore = (
        DatabaseStore() if request.param == "database" else RedisStore(redis.Redis.from_url(TEST_REDIS_URL))
    )
    breaker_store.use_store(chosen)
    yield chosen
    breaker_store.use_store(None)


def small(name: str) -> Service:
    return Service.objects.create(name=name, minimum_calls=4, window_size=10, consecutive_failures=0)


def trip(agent_client: Any, name: str) -> None:
    response = agent_client.post("/api/v1/outcomes", [{**FAIL_503, "service": name}] * 4, format="json")
    assert response.status_code == 200, response.content[:300]


def test_it_answers_what_breaker_view_answers(store: BreakerStore, agent_client: Any) -> None:
    services = [small("a-open"), small("b-forced"), small("c-never")]
    trip(agent_client, "a-open")
    breaker_services.set_override(
        name="b-forced",
        mode="forced_open",
        reason="drill",
        expires_at=None,
        actor=Actor(user=factories.operator()),
    )
    services = list(breaker_selectors.services())

    details = breaker_selectors.breaker_details(services)

    for service in services:
        view = breaker_selectors.breaker_view(service)
        detail = details[service.name]
        assert (detail.automatic_state, detail.opened_at, detail.open_until) == (
            view["automatic_state"],
            view["opened_at"],
            view["open_until"],
        )
        assert (detail.last.reason if detail.last else None) == (
            view["why"]["reason"] if view["why"] else None
        )
    assert details["a-open"].last == BreakerTransition.objects.filter(service__name="a-open").latest(
        "created_at"
    )
    assert details["b-forced"].last is not None and details["b-forced"].last.to_state == "forced_open"
    assert (details["c-never"].automatic_state, details["c-never"].last) == ("closed", None)


def test_it_costs_the_same_queries_for_2_and_20_breakers(store: BreakerStore, agent_client: Any) -> None:
    for i in range(20):
        small(f"svc-{i:02}")
    for i in range(0, 20, 3):
        trip(agent_client, f"svc-{i:02}")
    services = list(breaker_selectors.services())
    breaker_selectors.breaker_details(services)  # store states rebuilt on first sight: not what is counted

    with CaptureQueriesContext(connection) as two:
        breaker_selectors.breaker_details(services[:2])
    with CaptureQueriesContext(connection) as twenty:
        details = breaker_selectors.breaker_details(services)

    assert len(twenty) == len(two)
    assert sum(d.automatic_state == "open" for d in details.values()) == 7


def test_it_says_unknown_without_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    small("a")

    class Down:
        def peek_many(self, services: Any, cfgs: Any) -> Any:
            raise redis.ConnectionError("down")

    monkeypatch.setattr(breaker_store, "_store", Down())
    detail = breaker_selectors.breaker_details(list(breaker_selectors.services()))["a"]
    assert (detail.automatic_state, detail.opened_at, detail.open_until, detail.last) == (
        "unknown",
        None,
        None,
        None,
    )

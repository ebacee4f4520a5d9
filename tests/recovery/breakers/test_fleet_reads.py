"""The bulk reads the console's fleet page makes (one round trip or one query for every service at once): each
gives what the one-service read gives, in both stores."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core.cache.backends.locmem import LocMemCache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.audit.services import Actor
from recovery.breakers import history, registry, traffic
from recovery.breakers import selectors as breaker_selectors
from recovery.breakers import services as breaker_services
from recovery.breakers import store as breaker_store
from recovery.breakers.models import BreakerTransition, Service
from recovery.breakers.store import BreakerStore, DatabaseStore, RedisStore
from recovery.degradation import selectors as degradation_selectors
from recovery.degradation import services as degradation_services
from recovery.errors import selectors as error_selectors
from tests.support import factories

pytestmark = pytest.mark.django_db
FAIL_503 = {"success": False, "error": {"status_code": 503}}


@pytest.fixture(params=["database", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: Any) -> Iterator[BreakerStore]:
    chosen: BreakerStore = (
        DatabaseStore()
        if request.param == "database"
        else RedisStore(redis.Redis.from_url(settings.TEST_REDIS_URL))
    )
    breaker_store.use_store(chosen)
    yield chosen
    breaker_store.use_store(None)


def small(name: str) -> Service:
    return Service.objects.create(name=name, minimum_calls=4, window_size=10, consecutive_failures=0)


def trip(agent_client: Any, name: str) -> None:
    response = agent_client.post("/api/v1/outcomes", [{**FAIL_503, "service": name}] * 4, format="json")
    assert response.status_code == 200, response.content[:300]


def _comparable(peek: breaker_store.Peek) -> tuple[Any, ...]:
    return (peek.state, peek.opened_at, peek.open_until, peek.calls, peek.failures, peek.override)


def test_peek_many_answers_what_peek_answers(store: BreakerStore, agent_client: Any) -> None:
    services = [small("a-open"), small("b-closed"), small("c-never-called")]
    trip(agent_client, "a-open")
    agent_client.post("/api/v1/outcomes", [{"service": "b-closed", "success": True}] * 2, format="json")
    cfgs = [registry.config_of(s) for s in services]
    many = store.peek_many(services, cfgs)
    one = [store.peek(s, c) for s, c in zip(services, cfgs, strict=True)]
    assert [_comparable(p) for p in many] == [_comparable(p) for p in one]
    assert [p.state for p in many] == ["open", "closed", "closed"]
    assert many[1].calls == 2


def test_peek_many_rebuilds_lost_states_from_history_in_bounded_queries(
    store: BreakerStore, agent_client: Any
) -> None:
    services = [small(f"svc-{i}") for i in range(6)]
    trip(agent_client, "svc-0")
    store.reset(services[0])  # its state lost: the open transition row still says open
    cfgs = [registry.config_of(s) for s in services]
    with CaptureQueriesContext(connection) as captured:
        peeks = store.peek_many(services, cfgs)
    assert [p.state for p in peeks] == ["open"] + ["closed"] * 5
    assert len(captured) <= 3


def test_peek_many_of_no_services_is_empty(store: BreakerStore) -> None:
    assert store.peek_many([], []) == []


def test_states_from_history_agree_with_state_from_history(agent_client: Any) -> None:
    breaker_store.use_store(DatabaseStore())
    services = [small("open-one"), small("quiet"), small("forced")]
    trip(agent_client, "open-one")
    breaker_services.set_override(
        name="forced",
        mode="forced_open",
        reason="drill",
        expires_at=None,
        actor=Actor(user=factories.operator()),
    )
    cfgs = [registry.config_of(s) for s in services]
    now = logic_now()
    many = breaker_store.states_from_history(services, cfgs, now)
    for service, cfg in zip(services, cfgs, strict=True):
        one = history.state_from_history(service, cfg, now)
        assert {k: v for k, v in many[service.pk].items() if k != "gen"} == {
            k: v for k, v in one.items() if k != "gen"
        }
    assert many[services[0].pk]["state"] == "open"
    assert many[services[2].pk]["override"] == "forced_open"


def logic_now() -> int:
    return int(timezone.now().timestamp() * 1000)


def test_breaker_states_apply_overrides_and_say_since_when(store: BreakerStore, agent_client: Any) -> None:
    services = [small("a"), small("b"), small("c")]
    trip(agent_client, "a")
    breaker_services.set_override(
        name="b",
        mode="forced_closed",
        reason="pinned",
        expires_at=None,
        actor=Actor(user=factories.operator()),
    )
    services = list(breaker_selectors.services())
    states = breaker_selectors.breaker_states(services)
    last_a = BreakerTransition.objects.filter(service__name="a").latest("created_at").created_at
    assert (states["a"].state, states["a"].since) == ("open", last_a)
    assert states["b"].state == "forced_closed"
    assert (states["c"].state, states["c"].since) == ("closed", None)
    assert states["a"].state == breaker_selectors.effective_state(services[0])


def test_breaker_states_say_half_open_once_the_wait_is_over(agent_client: Any) -> None:
    clock = [logic_now()]
    breaker_store.use_store(DatabaseStore(clock=lambda: clock[0]))
    small("a")
    trip(agent_client, "a")
    clock[0] += 31_000
    assert breaker_selectors.breaker_states(list(breaker_selectors.services()))["a"].state == "half_open"


def test_breaker_states_are_unknown_without_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    small("a")

    class Down:
        def peek_many(self, services: Any, cfgs: Any) -> Any:
            raise redis.ConnectionError("down")

    monkeypatch.setattr(breaker_store, "_store", Down())
    assert breaker_selectors.breaker_states(list(breaker_selectors.services()))["a"].state == "unknown"


def test_override_setters_name_who_forced_each_breaker() -> None:
    small("a")
    small("b")
    alice = factories.operator(username="alice")
    breaker_services.set_override(
        name="a", mode="forced_open", reason="x", expires_at=None, actor=Actor(user=alice)
    )
    services = list(breaker_selectors.services())
    assert breaker_selectors.override_setters(services) == {"a": "user alice"}


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "cache"])
def traffic_store(request: Any) -> Iterator[traffic.TrafficStore]:
    chosen: traffic.TrafficStore = (
        traffic.RedisTraffic(redis.Redis.from_url(settings.TEST_REDIS_URL))
        if request.param == "redis"
        else traffic.CacheTraffic(LocMemCache(f"traffic-{uuid.uuid4().hex}", {}))
    )
    traffic.use_store(chosen)
    yield chosen
    traffic.use_store(None)


def test_counts_many_answers_what_series_answers(traffic_store: traffic.TrafficStore) -> None:
    traffic.count([("a", False), ("a", True), ("b", False)])
    now = timezone.now()
    many = traffic.counts_many(["a", "b", "c"], 60, now=now)
    for name in ("a", "b", "c"):
        assert many[name] == [(c, f) for _, c, f in traffic.series(name, 60, now=now)]
    assert sum(c for c, _ in many["a"]) == 2 and sum(f for _, f in many["a"]) == 1
    assert len(many["c"]) == 60


@pytest.mark.redis
def test_counts_many_reads_redis_in_one_round_trip(monkeypatch: Any) -> None:
    traffic.use_store(traffic.RedisTraffic(redis.Redis.from_url(settings.TEST_REDIS_URL)))
    sent: list[int] = []
    real = redis.client.Pipeline.execute

    def execute(pipe: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(len(pipe.command_stack))
        return real(pipe, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", execute)
    traffic.counts_many([f"s{i}" for i in range(50)], 60)
    traffic.use_store(None)
    assert sent == [50]  # one pipeline: one script call per service


def test_levels_of_is_the_worse_of_the_fleet_and_each_service_with_the_forced_ones() -> None:
    for name in ("a", "b"):
        Service.objects.create(name=name)
    actor = Actor(user=factories.operator(username="bob"))
    until = timezone.now() + timedelta(hours=1)
    degradation_services.force(scope="*", level="degraded", reason="drill", expires_at=until, actor=actor)
    degradation_services.force(scope="b", level="emergency", reason="fire", expires_at=None, actor=actor)
    with CaptureQueriesContext(connection) as captured:
        levels, forced = degradation_selectors.levels_of(["a", "b", "c"])
    assert len(captured) == 1
    assert {name: view.level for name, view in levels.items()} == {
        "a": "degraded",
        "b": "emergency",
        "c": "degraded",
    }
    assert levels["b"] == degradation_selectors.current("b")
    assert [(f.scope, f.level, f.by, f.reason) for f in forced] == [
        ("*", "degraded", "bob", "drill"),
        ("b", "emergency", "bob", "fire"),
    ]
    assert forced[0].until == until and forced[1].until is None


def test_top_pattern_by_service_is_the_busiest_of_the_window_in_one_query() -> None:
    factories.pattern_with_events("a", "quiet", 1)
    busy = factories.pattern_with_events("a", "busy", 3)
    factories.pattern_with_events("a", "old and busy", 9, minutes_ago=120)
    only = factories.pattern_with_events("b", "only", 1)
    since = timezone.now() - timedelta(minutes=60)
    with CaptureQueriesContext(connection) as captured:
        top = error_selectors.top_pattern_by_service(since)
    assert len(captured) == 1
    assert {name: p.pk for name, p in top.items()} == {"a": busy.pk, "b": only.pk}
    assert top["a"].recent == 3  # type: ignore[attr-defined]


# --- breaker_details: what breaker_view says of many breakers, in one round trip and one query -----------


def test_breaker_details_answer_what_breaker_view_answers(store: BreakerStore, agent_client: Any) -> None:
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


def test_breaker_details_cost_the_same_queries_for_2_and_20_breakers(
    store: BreakerStore, agent_client: Any
) -> None:
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


def test_breaker_details_say_unknown_without_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
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

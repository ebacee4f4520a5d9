"""Calls and failures per service and minute (recovery/breakers/traffic.py), in Redis and in Django's cache."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core.cache.backends.locmem import LocMemCache

from recovery.breakers import traffic
from recovery.breakers.traffic import CacheTraffic, RedisTraffic

pytestmark = pytest.mark.django_db
START = datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC).timestamp()  # half a minute into 12:00


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def at(self) -> datetime:
        return datetime.fromtimestamp(self.now, tz=UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.TEST_REDIS_URL)


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "cache"])
def store(request: Any, clock: Clock) -> Iterator[traffic.TrafficStore]:
    chosen: traffic.TrafficStore = (
        RedisTraffic(_redis(), clock=clock)
        if request.param == "redis"
        else CacheTraffic(LocMemCache(f"traffic-{uuid.uuid4().hex}", {}), clock=clock)
    )
    traffic.use_store(chosen)
    yield chosen
    traffic.use_store(None)


def test_it_counts_calls_and_failures_per_service(store: Any, clock: Clock) -> None:
    traffic.count([("search", False), ("search", True), ("mail", False), ("search", True)])
    assert traffic.window("search", 60) == (3, 2)
    assert traffic.window("mail", 60) == (1, 0)
    assert traffic.window("other", 60) == (0, 0)


def test_a_window_covers_the_whole_minutes_it_touches_and_no_more(store: Any, clock: Clock) -> None:
    traffic.count([("search", True)])  # 12:00
    clock.now += 4 * 60  # 12:04:30
    traffic.count([("search", False)] * 3)
    assert traffic.window("search", 300) == (4, 1)  # 11:59:30 to 12:04:30: minutes 11:59 to 12:04
    clock.now += 60  # 12:05:30
    assert traffic.window("search", 300) == (4, 1)  # 12:00:30 to 12:05:30: still touches 12:00
    clock.now += 60  # 12:06:30
    assert traffic.window("search", 300) == (3, 0)


def test_a_window_can_be_read_at_another_time(store: Any, clock: Clock) -> None:
    traffic.count([("search", True)] * 2)
    assert traffic.window("search", 300, now=clock.at() + timedelta(minutes=10)) == (0, 0)
    assert traffic.window("search", 300, now=clock.at()) == (2, 2)


def test_the_series_lists_each_minute_oldest_first(store: Any, clock: Clock) -> None:
    traffic.count([("search", True), ("search", False)])
    clock.now += 120
    traffic.count([("search", False)])
    assert traffic.series("search", 3) == [
        (datetime(2030, 1, 1, 12, 0, tzinfo=UTC), 2, 1),
        (datetime(2030, 1, 1, 12, 1, tzinfo=UTC), 0, 0),
        (datetime(2030, 1, 1, 12, 2, tzinfo=UTC), 1, 0),
    ]


@pytest.mark.redis
def test_in_redis_a_batch_is_one_hash_per_service_and_minute_kept_two_hours(clock: Clock) -> None:
    client = _redis()
    traffic.use_store(RedisTraffic(client, clock=clock))
    try:
        traffic.count([("search", True), ("search", False)])
    finally:
        traffic.use_store(None)
    bucket = traffic.key("search", int(START // 60))
    assert client.hgetall(bucket) == {b"c": b"2", b"f": b"1"}
    assert 7000 < int(client.ttl(bucket)) <= 7200  # type: ignore[arg-type]


def test_without_redis_in_the_settings_it_counts_in_django_s_cache(settings: Any) -> None:
    settings.REDIS_URL = ""
    traffic.use_store(None)
    try:
        assert isinstance(traffic.store(), CacheTraffic)
    finally:
        traffic.use_store(None)


@pytest.mark.redis
def test_outcomes_posted_to_the_api_are_counted(agent_client: Any) -> None:
    outcomes = [{"service": "search", "success": True}] * 3 + [
        {"service": "search", "success": False, "error": {"status_code": 503}}
    ]
    response = agent_client.post("/api/v1/outcomes", outcomes, format="json")
    assert response.status_code == 200
    assert traffic.window("search", 60) == (4, 1)


@pytest.mark.redis
def test_an_unreachable_store_loses_the_counts_never_the_outcomes(
    agent_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    traffic.use_store(RedisTraffic(redis.Redis(port=1, socket_connect_timeout=0.2)))
    try:
        with caplog.at_level(logging.WARNING, logger="recovery.breakers.traffic"):
            response = agent_client.post(
                "/api/v1/outcomes", [{"service": "search", "success": True}], format="json"
            )
    finally:
        traffic.use_store(None)
    assert response.status_code == 200
    assert response.json()["results"][0]["counted"] is True
    assert "traffic store unreachable, 1 outcomes not counted" in caplog.text


# --- the fleet page's read: settled minutes are read from Redis once per process --------------------------------


@pytest.fixture
def redis_store(clock: Clock) -> Iterator[RedisTraffic]:
    chosen = RedisTraffic(_redis(), clock=clock)
    traffic.use_store(chosen)
    yield chosen
    traffic.use_store(None)


def _older(name: str, minutes_ago: int, calls: int) -> None:
    """Write straight into a past minute's hash, as no writer on time would."""
    _redis().hset(traffic.key(name, int(START // 60) - minutes_ago), "c", calls)


@pytest.mark.redis
def test_it_reads_a_settled_minute_once(redis_store: RedisTraffic, clock: Clock) -> None:
    _older("search", 5, 7)
    first = traffic.counts_many(["search"], 60)["search"]
    _older("search", 5, 999)  # the store changed behind a minute that was over: the first read stands
    assert traffic.counts_many(["search"], 60)["search"] == first
    assert first[-6] == (7, 0)


@pytest.mark.redis
def test_it_reads_the_newest_two_minutes_every_time(redis_store: RedisTraffic, clock: Clock) -> None:
    traffic.counts_many(["search"], 60)
    traffic.count([("search", True)])
    _older("search", 1, 4)
    newest = traffic.counts_many(["search"], 60)["search"]
    assert newest[-2:] == [(4, 0), (1, 1)]


@pytest.mark.redis
def test_it_answers_as_a_fresh_store_after_the_clock_moves_on(
    redis_store: RedisTraffic, clock: Clock
) -> None:
    traffic.count([("search", False), ("mail", True)])
    traffic.counts_many(["search", "mail"], 60)
    for _ in range(3):
        clock.now += 60
        traffic.count([("search", True)])
        remembered = traffic.counts_many(["search", "mail"], 60)
        assert remembered == RedisTraffic(_redis(), clock=clock).read_many(
            ["search", "mail"], list(range(int(clock.now // 60) - 59, int(clock.now // 60) + 1))
        )
    assert sum(c for c, _ in remembered["search"]) == 4

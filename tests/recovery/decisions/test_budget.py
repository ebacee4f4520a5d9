"""The retry budget: a share of recent calls with a floor, per service, over a sliding window of seconds.

Both stores answer the same (Redis, and Django's cache for the embedded mode); time moves by an injected clock,
never by sleeping."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from django.core.cache.backends.locmem import LocMemCache

from recovery.breakers.models import Service
from recovery.decisions import budget
from recovery.decisions.budget import BudgetCheck, CacheBudget, RedisBudget

pytestmark = pytest.mark.django_db
TEST_REDIS_URL: str = settings.TEST_REDIS_URL  # type: ignore[misc]


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "cache"])
def store(request: Any, clock: Clock) -> Iterator[budget.BudgetStore]:
    if request.param == "redis":
        chosen: budget.BudgetStore = RedisBudget(redis.Redis.from_url(TEST_REDIS_URL), clock=clock)
    else:
        # A named local-memory cache of its own (named caches share storage within a process).
        chosen = CacheBudget(LocMemCache(f"budget-{uuid.uuid4()}", {}), clock=clock)
    budget.use_store(chosen)
    yield chosen
    budget.use_store(None)


@pytest.fixture
def svc() -> Service:
    return Service.objects.create(
        name="svc", retry_budget_percent=20, retry_budget_min_retries=3, retry_budget_window_s=10
    )


def spend(service: Service, times: int) -> list[bool]:
    return [budget.try_retry(service).allowed for _ in range(times)]


def test_it_allows_the_floor_when_there_are_no_calls(store: Any, svc: Service) -> None:
    assert spend(svc, 4) == [True, True, True, False]
    assert budget.peek(svc) == BudgetCheck(allowed=False, retries=3, calls=0, limit=3, window_s=10)


def test_it_allows_a_share_of_the_calls_above_the_floor(store: Any, svc: Service) -> None:
    budget.record_calls(svc, 50)

    assert budget.peek(svc) == BudgetCheck(allowed=True, retries=0, calls=50, limit=10, window_s=10)
    assert spend(svc, 11) == [True] * 10 + [False]
    refused = budget.try_retry(svc)
    assert (refused.allowed, refused.retries, refused.calls, refused.limit) == (False, 10, 50, 10)


def test_it_rounds_the_share_down(store: Any, svc: Service) -> None:
    budget.record_calls(svc, 24)  # 20% of 24 is 4.8: 4 retries, above the floor of 3
    assert budget.peek(svc).limit == 4


def test_it_never_goes_below_the_floor(store: Any, svc: Service) -> None:
    Service.objects.filter(pk=svc.pk).update(retry_budget_percent=0, retry_budget_min_retries=1)
    svc.refresh_from_db()
    budget.record_calls(svc, 1000)
    assert spend(svc, 2) == [True, False]


def test_it_forgets_calls_and_retries_that_leave_the_window(store: Any, svc: Service, clock: Clock) -> None:
    budget.record_calls(svc, 20)  # limit 4
    assert spend(svc, 5) == [True, True, True, True, False]

    clock.now += 9  # 9 s later: the first second is still in the 10 s window
    assert budget.peek(svc) == BudgetCheck(allowed=False, retries=4, calls=20, limit=4, window_s=10)

    clock.now += 1  # now it has left
    assert budget.peek(svc) == BudgetCheck(allowed=True, retries=0, calls=0, limit=3, window_s=10)


def test_it_slides_second_by_second(store: Any, svc: Service, clock: Clock) -> None:
    for _ in range(10):
        budget.record_calls(svc, 10)
        clock.now += 1
    assert budget.peek(svc).calls == 90  # the first second's ten calls have left the window
    assert budget.peek(svc).limit == 18


def test_it_keeps_services_apart(store: Any, svc: Service) -> None:
    other = Service.objects.create(name="other", retry_budget_min_retries=1)
    budget.record_calls_many([svc, svc, other])

    assert budget.peek(svc).calls == 2
    assert budget.peek(other).calls == 1
    assert spend(other, 2) == [True, False]
    assert budget.peek(svc).retries == 0


def test_it_reads_a_changed_window_at_once(store: Any, svc: Service, clock: Clock) -> None:
    budget.record_calls(svc, 50)
    clock.now += 5
    Service.objects.filter(pk=svc.pk).update(retry_budget_window_s=3)
    svc.refresh_from_db()
    assert budget.peek(svc) == BudgetCheck(allowed=True, retries=0, calls=0, limit=3, window_s=3)


def test_it_spends_atomically_under_concurrency(store: Any, svc: Service) -> None:
    budget.record_calls(svc, 25)  # limit 5
    allowed: list[bool] = []
    start = threading.Barrier(20)

    def worker() -> None:
        start.wait()
        allowed.append(budget.try_retry(svc).allowed)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert allowed.count(True) == 5
    assert budget.peek(svc).retries == 5


@pytest.mark.redis
def test_its_redis_buckets_expire_after_the_window(svc: Service, clock: Clock) -> None:
    client: Any = redis.Redis.from_url(TEST_REDIS_URL)
    store = RedisBudget(client, clock=clock)
    store.record_calls({svc: 3})
    store.check(svc, spend=True)

    [key] = client.keys("rebound:budget:*")
    assert key == f"rebound:budget:{{svc}}:{int(clock.now)}".encode()
    assert client.hgetall(key) == {b"c": b"3", b"r": b"1"}
    assert 0 < client.ttl(key) <= 11


@pytest.mark.redis
def test_it_uses_redis_when_redis_is_configured(svc: Service) -> None:
    budget.use_store(None)
    assert isinstance(budget.store(), RedisBudget)
    budget.record_calls(svc, 5)  # on Redis's own clock
    assert budget.peek(svc).calls == 5
    budget.use_store(None)


def test_it_uses_the_django_cache_in_the_embedded_mode(svc: Service, settings: Any) -> None:
    settings.REDIS_URL = ""
    cache.clear()  # the process's own cache: another test's buckets must not count here
    budget.use_store(None)
    try:
        assert isinstance(budget.store(), CacheBudget)
        budget.record_calls(svc, 5)
        assert budget.peek(svc).calls == 5
        assert budget.try_retry(svc).allowed is True
    finally:
        budget.use_store(None)


def test_it_describes_a_check() -> None:
    check = BudgetCheck(allowed=False, retries=3, calls=12, limit=3, window_s=10)
    assert check.describe() == "3 of 3 retries used in the last 10 s (12 calls)"

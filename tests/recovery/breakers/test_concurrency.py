"""Real threads against the real PostgreSQL and Redis: exactly H trial permits, no lost counts, one transition
per trip; and transitions reach subscribers within a second."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection

from core.audit.services import Actor
from recovery.breakers import logic as breaker_logic
from recovery.breakers import services as breaker_services
from recovery.breakers import store as breaker_store
from recovery.breakers.models import BreakerTransition, Service
from recovery.breakers.store import BreakerStore, DatabaseStore, RedisStore

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]
THREADS = 8


@pytest.fixture(params=["database", "redis"])
def store(request: Any) -> Iterator[BreakerStore]:
    chosen: BreakerStore = (
        DatabaseStore()
        if request.param == "database"
        else RedisStore(redis.Redis.from_url(settings.TEST_REDIS_URL))
    )
    breaker_store.use_store(chosen)
    yield chosen
    breaker_store.use_store(None)


def race(work: Callable[[int], Any]) -> list[Any]:
    results: list[Any] = [None] * THREADS
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def run(n: int) -> None:
        try:
            barrier.wait()
            results[n] = work(n)
        except BaseException as error:  # asserted on below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    return results


def test_threads_racing_for_half_open_permits_get_exactly_h(store: BreakerStore) -> None:
    service = Service.objects.create(
        name="svc", minimum_calls=1, consecutive_failures=0, wait_duration_s=0.05, half_open_max_calls=3
    )
    breaker_services.record_outcomes(
        [breaker_services.OutcomeReport("svc", "", False, None, None, "")], actor=Actor()
    )
    time.sleep(0.1)

    def ask(n: int) -> list[bool]:
        return [breaker_services.request_permit("svc", actor=Actor()).allowed for _ in range(5)]

    granted = sum(sum(answers) for answers in race(ask))
    assert granted == 3
    assert list(
        BreakerTransition.objects.filter(service=service).values_list("to_state", flat=True).order_by("id")
    ) == ["open", "half_open"]


def test_concurrent_outcomes_lose_no_counts(store: BreakerStore) -> None:
    service = Service.objects.create(
        name="svc", window_size=10_000, minimum_calls=10_000, consecutive_failures=0
    )
    cfg = breaker_logic.Config(window_size=10_000, minimum_calls=10_000, consecutive=0)

    def report(n: int) -> None:
        for _ in range(10):
            store.record_many([(service, cfg, breaker_logic.Outcome(failure=bool(n % 2)))] * 5)

    race(report)
    view = store.peek(service, cfg)
    assert (view.calls, view.failures) == (THREADS * 50, THREADS * 25)


def test_one_trip_yields_one_transition(store: BreakerStore) -> None:
    Service.objects.create(name="svc", minimum_calls=5, window_size=100, consecutive_failures=0)
    failure = breaker_services.OutcomeReport("svc", "", False, None, None, "")

    def fail(n: int) -> None:
        for _ in range(5):
            breaker_services.record_outcomes([failure, failure], actor=Actor())

    race(fail)
    assert list(BreakerTransition.objects.values_list("from_state", "to_state")) == [("closed", "open")]


def test_a_transition_reaches_subscribers_within_a_second(store: BreakerStore) -> None:
    Service.objects.create(name=f"svc-{uuid.uuid4().hex[:6]}", minimum_calls=1, consecutive_failures=0)
    name = Service.objects.get().name
    pubsub = redis.Redis.from_url(settings.TEST_REDIS_URL).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(breaker_services.CHANNEL)
    started = time.monotonic()
    breaker_services.record_outcomes(
        [breaker_services.OutcomeReport(name, "", False, None, None, "")], actor=Actor()
    )
    message = None
    while message is None and time.monotonic() - started < 2:
        message = pubsub.get_message(timeout=0.1)
    elapsed = time.monotonic() - started
    pubsub.close()
    assert message is not None
    event = json.loads(message["data"])
    assert (event["service"], event["from_state"], event["to_state"]) == (name, "closed", "open")
    assert elapsed < 1.0

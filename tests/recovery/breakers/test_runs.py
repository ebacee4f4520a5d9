"""Runs of identical outcomes (the compact batch form): a run of k applied at once leaves the breaker exactly
where the same k outcomes sent one by one leave it, with the same transitions, in both stores."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings

from recovery.breakers import logic
from recovery.breakers.models import Service
from recovery.breakers.store import BreakerStore, DatabaseStore, Peek, RedisStore

pytestmark = pytest.mark.django_db


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture(params=["database", pytest.param("redis", marks=pytest.mark.redis)])
def kind(request: Any) -> str:
    return str(request.param)


@pytest.fixture
def stores(kind: str) -> Iterator[tuple[BreakerStore, BreakerStore, Clock]]:
    """Two stores on one clock: one is sent runs, the other the same outcomes one by one."""
    clock = Clock()
    if kind == "database":
        yield DatabaseStore(clock), DatabaseStore(clock), clock
        return
    client = redis.Redis.from_url(settings.TEST_REDIS_URL)
    prefixes = [f"test:{uuid.uuid4().hex}" for _ in range(2)]
    yield RedisStore(client, clock, prefix=prefixes[0]), RedisStore(client, clock, prefix=prefixes[1]), clock
    for prefix in prefixes:
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)


def _config(rng: random.Random) -> logic.Config:
    window_type = rng.choice(["count", "time"])
    return logic.Config(
        threshold=rng.choice([1, 20, 50, 80, 100]),
        window_type=window_type,
        window_size=rng.choice([1, 3, 10, 20]) if window_type == "count" else rng.choice([1, 5, 60]),
        minimum_calls=rng.choice([1, 2, 5, 10, 25]),
        consecutive=rng.choice([0, 1, 3, 5]),
        wait_ms=rng.choice([1, 50, 400]),
        half_open_max=rng.choice([1, 3]),
        success_threshold=rng.choice([1, 2, 4]),
        multiplier=rng.choice([1.0, 2.0]),
        max_wait_ms=2_000,
        trial_ttl_ms=500,
    )


def _run(rng: random.Random) -> logic.Outcome:
    failure = rng.random() < 0.35
    return logic.Outcome(failure=failure, frozen=rng.random() < 0.05, count=rng.choice([1, 2, 3, 7, 40, 300]))


def _flat(result: logic.Result) -> tuple[Any, ...]:
    facts = [
        (f.seq.split(".")[-1], f.calls, f.failures, f.consecutive, f.open_until, f.wait_ms)
        for f in result.facts
    ]
    return (
        result.state,
        result.calls,
        result.failures,
        result.consecutive,
        result.override,
        result.transitions,
        facts,
    )


def _peeked(peek: Peek) -> tuple[Any, ...]:
    return (peek.state, peek.open_until, peek.calls, peek.failures, peek.consecutive, peek.override)


def _one_by_one(
    store: BreakerStore, svc: Service, cfg: logic.Config, runs: list[logic.Outcome]
) -> list[logic.Result]:
    """The runs as single outcomes, in one batch; the result of each run is its last outcome's, with every
    transition its outcomes made."""
    singles = [logic.Outcome(failure=r.failure, frozen=r.frozen) for r in runs for _ in range(r.count)]
    results = store.record_many([(svc, cfg, o) for o in singles])
    merged, at = [], 0
    for run in runs:
        part = results[at : at + run.count]
        at += run.count
        last = part[-1]
        last.transitions = [t for r in part for t in r.transitions]
        last.facts = [f for r in part for f in r.facts]
        merged.append(last)
    return merged


@pytest.mark.parametrize("seed", range(20))
def test_it_leaves_the_same_state_as_the_outcomes_one_by_one(
    stores: tuple[BreakerStore, BreakerStore, Clock], seed: int
) -> None:
    runs_store, singles_store, clock = stores
    rng = random.Random(seed)
    cfg = _config(rng)
    a, b = Service.objects.create(name=f"runs-{seed}"), Service.objects.create(name=f"singles-{seed}")
    for _ in range(25):
        runs = [_run(rng) for _ in range(rng.randint(1, 6))]
        got = runs_store.record_many([(a, cfg, r) for r in runs])
        want = _one_by_one(singles_store, b, cfg, runs)
        assert [_flat(r) for r in got] == [_flat(r) for r in want]
        assert _peeked(runs_store.peek(a, cfg)) == _peeked(singles_store.peek(b, cfg))
        if rng.random() < 0.3:  # a half-open breaker's trial permits
            assert runs_store.permit(a, cfg, "p").allowed == singles_store.permit(b, cfg, "p").allowed
        if rng.random() < 0.15:  # an operator's override comes or goes: outcomes are frozen meanwhile
            mode = rng.choice(["auto", "auto", "disabled", "forced_closed"])
            for store, svc in ((runs_store, a), (singles_store, b)):
                store.set_override(svc, cfg, mode, 0, "test")
        clock.now += rng.choice([0, 1, 30, 200, 600, 1500])


def test_it_trips_a_closed_breaker_on_the_success_that_reaches_minimum_calls(
    stores: tuple[BreakerStore, BreakerStore, Clock],
) -> None:
    """No consecutive trigger, 9 failures in a window waiting for 10 calls: the 10th call, a success, trips it."""
    runs_store, _, _ = stores
    cfg = logic.Config(threshold=50, window_size=20, minimum_calls=10, consecutive=0)
    svc = Service.objects.create(name="minimum")
    runs_store.record_many([(svc, cfg, logic.Outcome(failure=True, count=9))])
    [result] = runs_store.record_many([(svc, cfg, logic.Outcome(failure=False, count=1000))])
    assert result.state == "open"
    assert [t[:2] for t in result.transitions] == [("closed", "open")]
    assert (result.facts[0].calls, result.facts[0].failures) == (10, 9)


def test_it_counts_a_long_run_of_successes_into_the_window(
    stores: tuple[BreakerStore, BreakerStore, Clock],
) -> None:
    runs_store, _, _ = stores
    cfg = logic.Config(window_size=20)
    svc = Service.objects.create(name="long")
    runs_store.record_many([(svc, cfg, logic.Outcome(failure=True, count=3))])
    [result] = runs_store.record_many([(svc, cfg, logic.Outcome(failure=False, count=50_000))])
    assert (result.state, result.calls, result.failures, result.consecutive) == ("closed", 20, 0, 0)

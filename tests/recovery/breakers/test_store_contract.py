"""One contract, two stores: the database store (embedded) and the Redis store (production) must agree."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from django.conf import settings

from recovery.breakers import logic as breaker_logic
from recovery.breakers.models import BreakerTransition, Service
from recovery.breakers.store import BreakerStore, DatabaseStore, RedisStore

pytestmark = pytest.mark.django_db

CFG = breaker_logic.Config(
    threshold=50,
    window_size=10,
    minimum_calls=4,
    consecutive=0,
    wait_ms=1000,
    half_open_max=2,
    success_threshold=2,
    multiplier=2.0,
    max_wait_ms=3000,
    trial_ttl_ms=500,
)
FAIL, OK, IGNORED = (
    breaker_logic.Outcome(failure=True),
    breaker_logic.Outcome(failure=False),
    breaker_logic.Outcome(False, ignored=True),
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture(params=["database", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: Any, clock: Clock) -> Iterator[BreakerStore]:
    if request.param == "database":
        yield DatabaseStore(clock)
        return
    client = redis.Redis.from_url(settings.TEST_REDIS_URL)
    prefix = f"test:{uuid.uuid4().hex}"
    yield RedisStore(client, clock, prefix=prefix)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def svc() -> Service:
    return Service.objects.create(name="svc")


def feed(
    store: BreakerStore, svc: Service, *outcomes: breaker_logic.Outcome, cfg: breaker_logic.Config = CFG
) -> list[breaker_logic.Result]:
    return store.record_many([(svc, cfg, o) for o in outcomes])


def test_it_allows_calls_while_closed(store: BreakerStore, svc: Service) -> None:
    result = store.permit(svc, CFG, "p1")
    assert (result.allowed, result.state, result.permit_id, result.transitions) == (True, "closed", "", [])


def test_it_waits_for_the_minimum_calls_before_judging_the_rate(store: BreakerStore, svc: Service) -> None:
    results = feed(store, svc, FAIL, FAIL, FAIL)
    assert [r.state for r in results] == ["closed"] * 3
    assert (results[-1].calls, results[-1].failures, results[-1].rate) == (3, 3, 100.0)


def test_it_trips_once_on_the_failure_rate(store: BreakerStore, svc: Service) -> None:
    results = feed(store, svc, OK, OK, FAIL, FAIL, FAIL)
    assert [r.state for r in results] == ["closed", "closed", "closed", "open", "open"]
    assert results[3].transitions == [
        ("closed", "open", "failure rate 50% over the last 4 calls (threshold 50%)")
    ]
    assert (results[3].facts[0].calls, results[3].facts[0].failures) == (4, 2)
    assert results[4].transitions == []
    denied = store.permit(svc, CFG, "p")
    assert (denied.allowed, denied.state, denied.retry_after_ms, denied.reason) == (
        False,
        "open",
        1000,
        "open",
    )


def test_it_trips_on_consecutive_failures(store: BreakerStore, svc: Service) -> None:
    cfg = breaker_logic.Config(**{**CFG.__dict__, "consecutive": 3, "minimum_calls": 100})
    results = feed(store, svc, FAIL, OK, FAIL, FAIL, FAIL, cfg=cfg)
    assert [r.consecutive for r in results[:4]] == [1, 0, 1, 2]
    assert results[4].transitions == [("closed", "open", "3 consecutive failures (threshold 3)")]


def test_it_ignores_outcomes_that_do_not_count(store: BreakerStore, svc: Service) -> None:
    results = feed(store, svc, IGNORED, IGNORED, IGNORED, IGNORED, IGNORED)
    assert (results[-1].state, results[-1].calls) == ("closed", 0)


def test_it_slides_the_count_window(store: BreakerStore, svc: Service) -> None:
    results = feed(store, svc, FAIL, *([OK] * 10))
    assert (results[-1].calls, results[-1].failures) == (10, 0)


def test_it_forgets_failures_older_than_the_time_window(
    store: BreakerStore, svc: Service, clock: Clock
) -> None:
    cfg = breaker_logic.Config(
        **{**CFG.__dict__, "window_type": "time", "window_size": 5, "minimum_calls": 3}
    )
    feed(store, svc, FAIL, FAIL, cfg=cfg)
    clock.now += 6000
    result = feed(store, svc, FAIL, cfg=cfg)[0]
    assert (result.state, result.calls, result.failures) == ("closed", 1, 1)
    assert store.peek(svc, cfg).calls == 1


def test_it_half_opens_lazily_and_grants_exactly_h_trial_permits(
    store: BreakerStore, svc: Service, clock: Clock
) -> None:
    feed(store, svc, FAIL, FAIL, FAIL, FAIL)
    clock.now += 999
    assert store.permit(svc, CFG, "early").allowed is False
    clock.now += 1
    first = store.permit(svc, CFG, "t1")
    assert (first.allowed, first.state, first.permit_id) == (True, "half_open", "t1")
    assert first.transitions == [("open", "half_open", "the wait is over: trial calls allowed")]
    assert store.permit(svc, CFG, "t2").permit_id == "t2"
    third = store.permit(svc, CFG, "t3")
    assert (third.allowed, third.permit_id, third.retry_after_ms) == (False, "", 500)
    assert third.reason == "half-open: all 2 trial permits are in use: ask again in 0.5 s"
    clock.now += 500  # unanswered trial permits expire and free their slots
    assert store.permit(svc, CFG, "t4").allowed is True


def test_it_tells_a_caller_refused_in_half_open_to_ask_again_after_the_base_wait_not_the_permit_ttl(
    store: BreakerStore, svc: Service, clock: Clock
) -> None:
    # A trial permit lives 30 s; the service's base open wait is 1 s: a refused caller comes back after 1 s.
    cfg = breaker_logic.Config(**{**CFG.__dict__, "trial_ttl_ms": 30_000})
    feed(store, svc, FAIL, FAIL, FAIL, FAIL, cfg=cfg)
    clock.now += 1000
    store.permit(svc, cfg, "t1")
    store.permit(svc, cfg, "t2")
    clock.now += 100
    refused = store.permit(svc, cfg, "t3")
    assert (refused.allowed, refused.state, refused.permit_id, refused.retry_after_ms) == (
        False,
        "half_open",
        "",
        1000,
    )
    assert refused.reason == "half-open: all 2 trial permits are in use: ask again in 1 s"
    assert store.peek(svc, cfg).trials_in_use == 2  # the refusal took no permit


def test_it_never_tells_a_refused_caller_to_wait_past_the_soonest_trial_permit_expiry(
    store: BreakerStore, svc: Service, clock: Clock
) -> None:
    cfg = breaker_logic.Config(**{**CFG.__dict__, "trial_ttl_ms": 30_000})
    feed(store, svc, FAIL, FAIL, FAIL, FAIL, cfg=cfg)
    clock.now += 1000
    store.permit(svc, cfg, "t1")
    clock.now += 29_700
    store.permit(svc, cfg, "t2")
    refused = store.permit(svc, cfg, "t3")
    assert (refused.allowed, refused.retry_after_ms) == (False, 300)  # t1 expires before the base wait ends
    assert refused.reason == "half-open: all 2 trial permits are in use: ask again in 0.3 s"
    clock.now += 300
    assert store.permit(svc, cfg, "t4").allowed is True


def test_it_asks_a_refused_caller_for_the_base_wait_not_the_grown_one(
    store: BreakerStore, svc: Service, clock: Clock
) -> None:
    # After a failed trial the open wait grows (1 s times 2); the refusal's bound stays the service's base wait.
    cfg = breaker_logic.Config(**{**CFG.__dict__, "trial_ttl_ms": 30_000})
    feed(store, svc, FAIL, FAIL, FAIL, FAIL, cfg=cfg)
    clock.now += 1000
    store.permit(svc, cfg, "t1")
    feed(store, svc, breaker_logic.Outcome(True, permit_id="t1"), cfg=cfg)
    clock.now += 2000
    store.permit(svc, cfg, "t2")
    store.permit(svc, cfg, "t3")
    refused = store.permit(svc, cfg, "t4")
    assert (refused.allowed, refused.state, refused.retry_after_ms) == (False, "half_open", 1000)


def test_it_frees_a_trial_permit_when_its_outcome_arrives(
    store: BreakerStore, svc: Service, clock: Clock
) -> None:
    feed(store, svc, FAIL, FAIL, FAIL, FAIL)
    clock.now += 1000
    store.permit(svc, CFG, "t1")
    store.permit(svc, CFG, "t2")
    feed(store, svc, breaker_logic.Outcome(failure=False, permit_id="t1"))
    assert store.permit(svc, CFG, "t3").allowed is True
    assert store.peek(svc, CFG).trials_in_use == 2


def test_it_closes_after_s_trial_successes(store: BreakerStore, svc: Service, clock: Clock) -> None:
    feed(store, svc, FAIL, FAIL, FAIL, FAIL)
    clock.now += 1000
    store.permit(svc, CFG, "t1")
    results = feed(store, svc, breaker_logic.Outcome(False, permit_id="t1"), OK)
    assert [r.state for r in results] == ["half_open", "closed"]
    assert results[1].transitions == [("half_open", "closed", "2 trial calls succeeded")]
    assert (results[1].calls, results[1].failures) == (0, 0)


def test_it_reopens_on_a_trial_failure_with_a_growing_capped_wait(
    store: BreakerStore, svc: Service, clock: Clock
) -> None:
    feed(store, svc, FAIL, FAIL, FAIL, FAIL)
    waits = []
    for _ in range(3):
        clock.now += 5000
        store.permit(svc, CFG, "t")
        result = feed(store, svc, breaker_logic.Outcome(True, permit_id="t"))[0]
        assert result.state == "open"
        waits.append(store.permit(svc, CFG, "x").retry_after_ms)
    assert waits == [2000, 3000, 3000]
    assert result.transitions == [("half_open", "open", "a trial call failed: open for 3 s")]


def test_it_opens_until_retry_after_on_a_rate_limit(store: BreakerStore, svc: Service, clock: Clock) -> None:
    result = feed(store, svc, breaker_logic.Outcome(True, retry_after_ms=20_000))[0]
    assert result.transitions == [("closed", "open", "rate limited: Retry-After 20 s")]
    assert store.permit(svc, CFG, "p").retry_after_ms == 20_000
    feed(store, svc, breaker_logic.Outcome(True, retry_after_ms=5_000))
    assert store.permit(svc, CFG, "p").retry_after_ms == 20_000  # an earlier Retry-After never shortens it
    clock.now += 20_000
    assert store.permit(svc, CFG, "p").state == "half_open"


def test_it_records_but_never_transitions_under_an_override(store: BreakerStore, svc: Service) -> None:
    frozen = breaker_logic.Outcome(True, frozen=True)
    results = feed(
        store,
        svc,
        frozen,
        frozen,
        frozen,
        frozen,
        breaker_logic.Outcome(True, retry_after_ms=9000, frozen=True),
    )
    assert [r.state for r in results] == ["closed"] * 5
    assert all(r.transitions == [] for r in results)
    assert (results[-1].calls, results[-1].failures) == (5, 5)


def test_peek_changes_nothing(store: BreakerStore, svc: Service, clock: Clock) -> None:
    feed(store, svc, OK, FAIL, FAIL, FAIL)
    clock.now += 1000
    view = store.peek(svc, CFG)
    assert (view.state, view.calls, view.failures) == ("open", 0, 0)
    assert view.open_until == view.now
    assert store.permit(svc, CFG, "t").transitions == [
        ("open", "half_open", "the wait is over: trial calls allowed")
    ]


def test_it_adopts_a_smaller_window_without_a_restart(store: BreakerStore, svc: Service) -> None:
    feed(store, svc, *([OK] * 8))
    smaller = breaker_logic.Config(**{**CFG.__dict__, "window_size": 3})
    result = feed(store, svc, FAIL, cfg=smaller)[0]
    assert (result.calls, result.failures) == (3, 1)


def test_reset_forgets_everything(store: BreakerStore, svc: Service) -> None:
    feed(store, svc, FAIL, FAIL, FAIL, FAIL)
    store.reset(svc)
    assert store.permit(svc, CFG, "p").state == "closed"


# --- the window a transition saw (issue 11, item 14) -------------------------------------------------------


def test_a_trip_on_consecutive_failures_keeps_the_count_it_tripped_on(
    store: BreakerStore, svc: Service
) -> None:
    cfg = breaker_logic.Config(**{**CFG.__dict__, "consecutive": 3, "minimum_calls": 100})
    result = feed(store, svc, FAIL, FAIL, FAIL, cfg=cfg)[2]
    assert result.transitions == [("closed", "open", "3 consecutive failures (threshold 3)")]
    assert (result.facts[0].calls, result.facts[0].failures, result.facts[0].consecutive) == (3, 3, 3)
    assert result.consecutive == 0  # the window itself starts afresh


# --- caps, overrides, history (issue 11, items 1, 6, 22, 26) -------------------------------------------------


def test_it_never_opens_beyond_the_cap(store: BreakerStore, svc: Service, clock: Clock) -> None:
    capped = breaker_logic.Outcome(True, retry_after_ms=CFG.cap_ms, asked_s=1e12)
    result = feed(store, svc, capped)[0]
    assert result.transitions == [
        ("closed", "open", "rate limited: Retry-After 1e+12 s, capped at 86400 s (MAX_RETRY_AFTER_S)")
    ]
    assert result.facts[0].open_until == clock.now + 86_400_000
    assert store.permit(svc, CFG, "p").retry_after_ms == 86_400_000


def test_an_override_in_the_store_decides_the_next_permit(store: BreakerStore, svc: Service) -> None:
    store.permit(svc, CFG, "warm")
    store.set_override(svc, CFG, "forced_open", 0, "incident")
    denied = store.permit(svc, CFG, "p")
    assert (denied.allowed, denied.state, denied.override, denied.reason) == (
        False,
        "forced_open",
        "forced_open",
        "forced_open by an operator: incident",
    )
    results = feed(store, svc, FAIL, FAIL, FAIL, FAIL)
    assert [r.transitions for r in results] == [[]] * 4  # frozen: recorded, never a transition
    store.set_override(svc, CFG, "auto", 0, "")
    assert store.permit(svc, CFG, "p").allowed is True


def test_an_expired_override_in_the_store_no_longer_applies(
    store: BreakerStore, svc: Service, clock: Clock
) -> None:
    store.set_override(svc, CFG, "forced_open", clock.now + 1000, "incident")
    assert store.permit(svc, CFG, "p").allowed is False
    clock.now += 1000
    assert (store.permit(svc, CFG, "p").allowed, store.peek(svc, CFG).override) == (True, "")


def test_transitions_stay_pending_until_acknowledged(store: BreakerStore, svc: Service) -> None:
    result = feed(store, svc, OK, FAIL, FAIL, FAIL)[3]
    assert result.pending == 1
    [entry] = store.pending(svc)
    assert (entry["seq"], entry["from"], entry["to"], entry["calls"]) == (
        result.facts[0].seq,
        "closed",
        "open",
        4,
    )
    store.acknowledge(svc, {result.facts[0].seq})
    assert store.pending(svc) == []
    assert store.peek(svc, CFG).pending == 0


def test_it_rebuilds_a_lost_state_from_the_last_transition(
    store: BreakerStore, svc: Service, clock: Clock
) -> None:
    opened = datetime.fromtimestamp(clock.now / 1000, tz=UTC)
    until = datetime.fromtimestamp((clock.now + 5000) / 1000, tz=UTC)
    BreakerTransition.objects.create(
        service=svc,
        from_state="closed",
        to_state="open",
        reason="x",
        window={"open_until": until.isoformat(), "wait_ms": 1000, "seq": "old.1"},
        created_at=opened,
    )
    store.reset(svc)
    denied = store.permit(svc, CFG, "p")
    assert (denied.allowed, denied.state, denied.retry_after_ms) == (False, "open", 5000)
    assert denied.transitions == []  # nothing changed: what everyone was told still holds
    clock.now += 5000
    assert store.permit(svc, CFG, "p").transitions[0][:2] == ("open", "half_open")
    assert store.permit(svc, CFG, "q").facts == []


def test_a_rebuilt_state_starts_a_new_generation(store: BreakerStore, svc: Service) -> None:
    first = feed(store, svc, FAIL, FAIL, FAIL, FAIL)[3].facts[0].seq
    store.reset(svc)
    BreakerTransition.objects.create(
        service=svc, from_state="open", to_state="closed", reason="x", window={}, created_at=datetime.now(UTC)
    )
    second = feed(store, svc, FAIL, FAIL, FAIL, FAIL)[3].facts[0].seq
    assert first.split(".")[0] != second.split(".")[0]
    assert (first.split(".")[1], second.split(".")[1]) == ("1", "1")


# --- health checks drive breakers; reset_breaker (issue 12) ------------------------------------------------

FAILED = "GET http://127.0.0.1:9/health answered 503 in 12 ms"
PASSED = "GET http://127.0.0.1:9/health answered 200 in 3 ms"
CAP = CFG.cap_ms


def verdict(store: BreakerStore, svc: Service, healthy: bool, why: str = FAILED) -> breaker_logic.Result:
    return store.health_verdict(svc, CFG, healthy=healthy, check="api-ping", why=why)


def test_it_opens_on_an_unhealthy_verdict_and_holds_open_for_the_cap(
    store: BreakerStore, svc: Service, clock: Clock
) -> None:
    feed(store, svc, OK, FAIL)
    result = verdict(store, svc, False)
    assert (result.reason, result.state, result.before) == ("opened", "open", "closed")
    assert result.transitions == [("closed", "open", FAILED)]
    facts = result.facts[0]
    assert (facts.check, facts.calls, facts.failures, facts.open_until) == ("api-ping", 2, 1, clock.now + CAP)
    [entry] = store.pending(svc)
    assert (entry["check"], entry["why"], entry["to"]) == ("api-ping", FAILED, "open")
    denied = store.permit(svc, CFG, "p")
    assert (denied.allowed, denied.state, denied.retry_after_ms) == (False, "open", CAP)


def test_it_re_extends_an_open_breaker_without_a_transition(
    store: BreakerStore, svc: Service, clock: Clock
) -> None:
    verdict(store, svc, False)
    clock.now += 60_000
    again = verdict(store, svc, False)
    assert (again.reason, again.state, again.transitions) == ("already open", "open", [])
    assert store.permit(svc, CFG, "p").retry_after_ms == CAP  # held for the cap from now
    assert len(store.pending(svc)) == 1  # still only the opening


def test_an_unhealthy_verdict_holds_open_a_breaker_the_calls_opened(
    store: BreakerStore, svc: Service, clock: Clock
) -> None:
    feed(store, svc, FAIL, FAIL, FAIL, FAIL)
    result = verdict(store, svc, False)
    assert (result.reason, result.transitions) == ("already open", [])
    assert store.permit(svc, CFG, "p").retry_after_ms == CAP


def test_an_unhealthy_verdict_reopens_a_half_open_breaker(
    store: BreakerStore, svc: Service, clock: Clock
) -> None:
    feed(store, svc, FAIL, FAIL, FAIL, FAIL)
    clock.now += 1000
    store.permit(svc, CFG, "t1")
    result = verdict(store, svc, False)
    assert (result.reason, result.transitions) == ("opened", [("half_open", "open", FAILED)])
    assert store.peek(svc, CFG).trials_in_use == 0


def test_an_unhealthy_verdict_on_a_breaker_whose_wait_is_over_half_opens_it_first(
    store: BreakerStore, svc: Service, clock: Clock
) -> None:
    feed(store, svc, FAIL, FAIL, FAIL, FAIL)
    clock.now += 1000
    result = verdict(store, svc, False)
    assert result.transitions == [
        ("open", "half_open", "the wait is over: trial calls allowed"),
        ("half_open", "open", FAILED),
    ]
    assert [f.check for f in result.facts] == ["", "api-ping"]  # the first is the breaker's own


def test_a_healthy_verdict_half_opens_an_open_breaker(store: BreakerStore, svc: Service) -> None:
    verdict(store, svc, False)
    result = verdict(store, svc, True, PASSED)
    assert (result.reason, result.state) == ("moved to half_open", "half_open")
    assert result.transitions == [("open", "half_open", PASSED)]
    assert result.facts[0].check == "api-ping"
    first, second, third = (store.permit(svc, CFG, p) for p in ("t1", "t2", "t3"))
    assert (first.allowed, first.permit_id, second.allowed, third.allowed) == (True, "t1", True, False)


@pytest.mark.parametrize("healthy", [True, False], ids=["healthy", "unhealthy"])
def test_a_verdict_leaves_what_it_does_not_concern_unchanged(
    store: BreakerStore, svc: Service, clock: Clock, healthy: bool
) -> None:
    if healthy:
        result = verdict(store, svc, True, PASSED)
        assert (result.reason, result.state, result.transitions) == ("unchanged: closed", "closed", [])
        feed(store, svc, FAIL, FAIL, FAIL, FAIL)
        clock.now += 1000
        store.permit(svc, CFG, "t1")
        result = verdict(store, svc, True, PASSED)
        assert (result.reason, result.state, result.transitions) == ("unchanged: half_open", "half_open", [])
    else:
        verdict(store, svc, False)
        assert verdict(store, svc, False).transitions == []
    assert store.permit(svc, CFG, "p").allowed is healthy


@pytest.mark.parametrize("mode", ["forced_open", "forced_closed", "disabled"])
def test_an_override_in_force_wins_over_a_verdict(store: BreakerStore, svc: Service, mode: str) -> None:
    store.set_override(svc, CFG, mode, 0, "incident")
    result = verdict(store, svc, False)
    assert (result.reason, result.override, result.transitions) == (
        f"override {mode} in force: verdict not applied",
        mode,
        [],
    )
    assert store.peek(svc, CFG).state == "closed"  # the automatic state did not move
    store.set_override(svc, CFG, "auto", 0, "")
    feed(store, svc, FAIL, FAIL, FAIL, FAIL)
    store.set_override(svc, CFG, mode, 0, "incident")
    assert verdict(store, svc, True, PASSED).transitions == []
    assert store.peek(svc, CFG).state == "open"


def test_a_verdict_on_a_lost_state_is_applied_to_the_rebuilt_one(
    store: BreakerStore, svc: Service, clock: Clock
) -> None:
    result = verdict(store, svc, False)
    until = datetime.fromtimestamp(result.facts[0].open_until / 1000, tz=UTC)
    BreakerTransition.objects.create(
        service=svc,
        from_state="closed",
        to_state="open",
        reason=FAILED,
        actor="health_check",
        actor_name="api-ping",
        window={"open_until": until.isoformat(), "wait_ms": 1000, "seq": result.facts[0].seq},
        created_at=datetime.fromtimestamp(clock.now / 1000, tz=UTC),
    )
    store.acknowledge(svc, {result.facts[0].seq})
    store.reset(svc)  # gone: a Redis restart without persistence, an eviction
    healed = verdict(store, svc, True, PASSED)
    assert (healed.reason, healed.transitions) == ("moved to half_open", [("open", "half_open", PASSED)])
    assert healed.facts[0].seq.split(".")[0] != result.facts[0].seq.split(".")[0]  # a new generation


def test_close_closes_and_empties_the_window(store: BreakerStore, svc: Service) -> None:
    feed(store, svc, FAIL, FAIL, FAIL, FAIL)
    result = store.close(svc, CFG, "reset: run 7")
    assert (result.reason, result.state, result.before) == ("closed (was open)", "closed", "open")
    assert result.transitions == [("open", "closed", "reset: run 7")]
    assert (result.facts[0].check, result.calls, result.failures, result.consecutive) == ("", 0, 0, 0)
    assert store.permit(svc, CFG, "p").allowed is True
    feed(store, svc, OK, FAIL, FAIL)
    again = store.close(svc, CFG, "reset: run 8")
    assert (again.reason, again.transitions, again.calls) == ("already closed: window emptied", [], 0)
    assert store.peek(svc, CFG).calls == 0


def test_close_leaves_an_override_in_force(store: BreakerStore, svc: Service) -> None:
    verdict(store, svc, False)
    store.set_override(svc, CFG, "forced_open", 0, "incident")
    result = store.close(svc, CFG, "reset: run 7")
    assert result.reason == "closed (was open); override forced_open still in force"
    assert (result.override, store.peek(svc, CFG).state) == ("forced_open", "closed")
    assert store.permit(svc, CFG, "p").allowed is False

"""POST /outcomes' compact form, through the service the view calls (services.report_outcomes): runs of
successes among a batch's outcomes count exactly as the same outcomes one by one, slow calls where they stand, and
the sender's dropped outcomes are counted in a metric."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from django.conf import settings

from core.api.errors import InvalidInput
from core.audit.services import Actor
from recovery.breakers import services, traffic
from recovery.breakers import store as breaker_store
from recovery.breakers.metrics import sdk_outcomes_dropped_total
from recovery.breakers.models import BreakerTransition, Service
from recovery.breakers.store import DatabaseStore, RedisStore
from recovery.errors.models import ErrorEvent
from tests.support import factories

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["database", pytest.param("redis", marks=pytest.mark.redis)], autouse=True)
def store_kind(request: Any) -> Any:
    breaker_store.use_store(
        DatabaseStore()
        if request.param == "database"
        else RedisStore(redis.Redis.from_url(settings.TEST_REDIS_URL))
    )
    yield request.param
    breaker_store.use_store(None)


@pytest.fixture
def actor() -> Actor:
    agent, _ = factories.agent_key()
    return Actor(source="agent", agent=agent)


def _breaker(name: str, **values: Any) -> Service:
    defaults = {"minimum_calls": 4, "window_size": 10, "consecutive_failures": 3, "wait_duration_s": 30}
    return Service.objects.create(name=name, **{**defaults, **values})


FAIL = {"success": False, "error": {"status_code": 503}}


def _singles(
    name: str, sequence: list[str], durations: dict[int, float] | None = None
) -> list[dict[str, Any]]:
    out = []
    for i, kind in enumerate(sequence):
        item: dict[str, Any] = {"service": name, "operation": "op"}
        item.update({"success": True, "duration_ms": (durations or {}).get(i, 5.0)} if kind == "ok" else FAIL)
        out.append(item)
    return out


def _compact(
    name: str, sequence: list[str], durations: dict[int, float] | None = None
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, kind in enumerate(sequence):
        if kind == "ok":
            if out and "successes" in out[-1]:
                out[-1]["successes"] += 1
                out[-1]["durations_ms"].append((durations or {}).get(i, 5.0))
            else:
                out.append(
                    {
                        "service": name,
                        "operation": "op",
                        "successes": 1,
                        "durations_ms": [(durations or {}).get(i, 5.0)],
                    }
                )
        else:
            out.append({"service": name, "operation": "op", **FAIL})
    return out


def _window(name: str) -> tuple[Any, ...]:
    service = Service.objects.get(name=name)
    from recovery.breakers import registry

    peek = breaker_store.current_store().peek(service, registry.config_of(service))
    return (peek.state, peek.calls, peek.failures, peek.consecutive)


def _moves(name: str) -> list[tuple[str, str, str]]:
    rows = BreakerTransition.objects.filter(service__name=name).order_by("id")
    return [(r.from_state, r.to_state, r.reason) for r in rows]


SEQUENCE = ["ok"] * 30 + ["fail", "ok", "fail"] + ["ok"] * 12 + ["fail"] * 3 + ["ok"] * 50


def test_it_counts_a_compact_batch_as_the_same_outcomes_one_by_one(actor: Actor) -> None:
    _breaker("one-by-one")
    _breaker("compact")
    services.report_outcomes({"outcomes": _singles("one-by-one", SEQUENCE)}, actor=actor)
    answer = services.report_outcomes({"outcomes": _compact("compact", SEQUENCE)}, actor=actor)
    assert _window("compact") == _window("one-by-one")
    assert [m[1:] for m in _moves("compact")] == [m[1:] for m in _moves("one-by-one")]
    assert _moves("compact")[0][:2] == ("closed", "open")
    assert len(answer["results"]) == len(_compact("compact", SEQUENCE))  # type: ignore[index]
    assert ErrorEvent.objects.filter(service="compact").count() == SEQUENCE.count("fail")


def test_it_answers_a_run_with_the_transition_it_made(actor: Actor) -> None:
    _breaker("minimum", consecutive_failures=0)
    services.report_outcomes({"outcomes": _singles("minimum", ["fail"] * 3)}, actor=actor)
    answer = services.report_outcomes({"outcomes": [{"service": "minimum", "successes": 500}]}, actor=actor)
    [result] = answer["results"]  # type: ignore[index]
    assert (result["state"], result["counted"]) == ("open", True)
    assert result["transition"]["reason"] == "failure rate 75% over the last 4 calls (threshold 50%)"


def test_it_counts_a_runs_slow_calls_as_failures_where_they_stand(actor: Actor) -> None:
    sequence = ["ok"] * 20
    slow = {5: 900.0, 6: 1000.0, 7: 950.0}  # three slow calls in a row: the consecutive trigger
    _breaker("slow-singles", slow_call_ms=900)
    _breaker("slow-runs", slow_call_ms=900)
    services.report_outcomes({"outcomes": _singles("slow-singles", sequence, slow)}, actor=actor)
    services.report_outcomes({"outcomes": _compact("slow-runs", sequence, slow)}, actor=actor)
    assert _window("slow-runs") == _window("slow-singles")
    moves = _moves("slow-runs")
    assert [m[1:] for m in moves] == [m[1:] for m in _moves("slow-singles")]
    assert moves == [("closed", "open", "3 consecutive failures (threshold 3)")]


def test_it_counts_a_run_in_the_services_traffic(actor: Actor) -> None:
    _breaker("busy")
    services.report_outcomes(
        {"outcomes": [{"service": "busy", "successes": 1200}, {"service": "busy", **FAIL}]}, actor=actor
    )
    assert traffic.window("busy", 60) == (1201, 1)


def test_it_counts_the_outcomes_a_sender_dropped(actor: Actor) -> None:
    before = sdk_outcomes_dropped_total._value.get()
    services.report_outcomes({"outcomes": [{"service": "drops", "successes": 2}], "dropped": 17}, actor=actor)
    assert sdk_outcomes_dropped_total._value.get() - before == 17


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"service": "svc", "successes": 0}, "outcomes[1].successes"),
        ({"service": "svc", "successes": 2, "durations_ms": [1.0]}, "outcomes[1].durations_ms"),
        ({"service": "svc", "successes": 1, "durations_ms": [-1]}, "outcomes[1].durations_ms[0]"),
        ({"service": "svc", "successes": 1, "success": True}, "outcomes[1].success"),
        ({"service": "Not A Slug", "successes": 1}, "outcomes[1].service"),
    ],
)
def test_it_refuses_a_bad_run_naming_the_field_and_counts_nothing(
    actor: Actor, item: dict[str, Any], field: str
) -> None:
    body = {"outcomes": [{"service": "svc", "success": True}, item]}
    with pytest.raises(InvalidInput) as refused:
        services.report_outcomes(body, actor=actor)
    assert field in [e["field"] for e in refused.value.errors]
    assert not Service.objects.filter(name="svc").exists()


def test_it_refuses_a_negative_dropped_count(actor: Actor) -> None:
    with pytest.raises(InvalidInput) as refused:
        services.report_outcomes(
            {"outcomes": [{"service": "svc", "successes": 1}], "dropped": -1}, actor=actor
        )
    assert [e["field"] for e in refused.value.errors] == ["dropped"]

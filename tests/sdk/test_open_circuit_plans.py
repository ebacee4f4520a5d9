"""The plan the SDK follows when a breaker refuses a call (issue 11, item 15).

A refusal is not a failure of the service: sent to the planner as an error, `rebound_client.errors.
CircuitOpenError` matched no rule and came back `internal`/`unknown`, with a reason about internal errors that
the policy does not retry, and no word of the breaker or of when to try again. The SDK now plans a local
breaker's refusal itself, and keeps the planner's answer to a fleet breaker's refusal only when it is a
fallback (what the planner is there for); either way the plan says the circuit is open, for which service,
and when a call may be tried again (`retry_after_s`, `retry_at`).

These run the real `Client` against an in-process transport that answers as the server did, so that they need
no server: Rebound's view is unreachable (the local fail-safe breaker decides) while the planner answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from rebound_client import CircuitOpenError, Client, Plan, RetriesExhaustedError

# What the server's planner answered for a CircuitOpenError it classified (issue 11's report).
MISREAD = {
    "plan_id": "6f1c0f55-6bd8-4c1c-9d0e-2b7f2b1c9a10",
    "action": "degrade",
    "delay_s": None,
    "fallback": None,
    "attempts_left": None,
    "reason": "the breaker of svc is open; no fallback is configured; policy global default does not retry "
    "internal errors; svc is non-critical: skip it and continue with a partial result",
    "error_class": "internal",
    "severity": "medium",
    "kind": "unknown",
    "retry_after_s": None,
    "breaker_state": "open",
    "degradation_level": "normal",
    "policy": "global default",
}
STATIC = {
    **MISREAD,
    "action": "fallback",
    "fallback": {"kind": "static", "position": 1, "value": {"answer": "default"}},
    "reason": "the breaker of svc is open: static fallback",
}


class Planner:
    """An in-process Rebound whose breaker view is unreachable and whose planner answers `answer`."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.plan_requests: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/recovery/plan":
            self.plan_requests.append(json.loads(request.content))
            return httpx.Response(200, json=self.answer)
        raise httpx.ConnectError("connection refused", request=request)


@pytest.fixture
def make_client() -> Iterator[Callable[[Planner], Client]]:
    made: list[Client] = []

    def make(planner: Planner) -> Client:
        client = Client(
            "http://rebound.test", "rb_test_key", test_mode=True, transport=httpx.MockTransport(planner)
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close(timeout_s=0.1)


def _trip_locally(client: Client, service: str = "svc") -> CircuitOpenError:
    """Five failures open the local breaker (its default settings: 5 consecutive, 30 s); the refusal after."""
    assert not client.connected
    for _ in range(5):
        with pytest.raises(RuntimeError), client.guard(service):
            raise RuntimeError("boom")
    with pytest.raises(CircuitOpenError) as refused, client.guard(service):
        pass
    return refused.value


def _assert_says_open_until(plan: Plan, error: CircuitOpenError) -> None:
    assert plan.error_class == "circuit_open"
    assert plan.action == "wait"
    assert plan.reason.startswith("circuit open for svc")
    assert "retry after" in plan.reason
    assert plan.retry_after_s is not None and 25 < plan.retry_after_s <= 30
    assert plan.delay_s == plan.retry_after_s
    assert plan.retry_at == error.retry_at
    assert plan.breaker_state == "open"


def test_a_local_breakers_refusal_says_it_is_open_and_until_when(
    make_client: Callable[[Planner], Client],
) -> None:
    client = make_client(Planner(MISREAD))
    refused = _trip_locally(client)
    assert refused.source == "local"
    assert refused.retry_at is not None
    expected = datetime.now(UTC) + timedelta(seconds=30)
    assert abs((refused.retry_at - expected).total_seconds()) < 5
    assert "circuit open for 'svc'" in str(refused)
    assert refused.retry_at.isoformat(timespec="seconds").replace("+00:00", "Z") in str(refused)


def test_it_plans_a_local_breakers_refusal_without_asking_the_planner(
    make_client: Callable[[Planner], Client],
) -> None:
    planner = Planner(MISREAD)
    client = make_client(planner)
    refused = _trip_locally(client)

    plan = client.plan("svc", refused, operation="chat")

    _assert_says_open_until(plan, refused)
    assert "local fail-safe breaker" in plan.reason
    assert plan.plan_id == ""  # made by the SDK: no plan row to resolve
    assert planner.plan_requests == []


def test_call_waits_for_the_local_breaker_and_gives_up_with_that_plan(
    make_client: Callable[[Planner], Client],
) -> None:
    planner = Planner(MISREAD)
    client = make_client(planner)
    _trip_locally(client)
    never: list[int] = []

    with pytest.raises(RetriesExhaustedError) as exhausted:
        client.call("svc", lambda: never.append(1))

    assert never == []
    assert exhausted.value.plan is not None
    assert exhausted.value.plan.error_class == "circuit_open"
    assert exhausted.value.plan.reason.startswith("circuit open for svc")
    # The local attempts (3): two waits, each until the breaker lets a trial call through.
    assert len(client.recorded_delays) == 2
    assert all(25 < delay <= 30 for delay in client.recorded_delays)
    assert planner.plan_requests == []


def test_it_keeps_the_planners_fallback_for_a_fleet_breakers_refusal(
    make_client: Callable[[Planner], Client],
) -> None:
    planner = Planner(STATIC)
    client = make_client(planner)
    refused = CircuitOpenError("svc", state="open", retry_after_s=12.0, reason="open")

    plan = client.plan("svc", refused)

    assert (
        plan.action == "fallback"
        and plan.fallback is not None
        and plan.fallback.value == {"answer": "default"}
    )
    assert plan.plan_id == STATIC["plan_id"]
    assert len(planner.plan_requests) == 1


def test_it_replaces_a_planners_answer_that_misreads_a_fleet_refusal(
    make_client: Callable[[Planner], Client],
) -> None:
    client = make_client(Planner(MISREAD))
    refused = CircuitOpenError("svc", state="open", retry_after_s=30.0, reason="open")

    plan = client.plan("svc", refused)

    _assert_says_open_until(plan, refused)
    assert plan.raw["planner_plan_id"] == MISREAD["plan_id"]


def test_an_override_with_no_end_degrades_and_says_so(make_client: Callable[[Planner], Client]) -> None:
    client = make_client(Planner(MISREAD))
    refused = CircuitOpenError("svc", state="forced_open", reason="forced open by an operator")

    plan = client.plan("svc", refused)

    assert (plan.action, plan.error_class, plan.retry_after_s, plan.retry_at) == (
        "degrade",
        "circuit_open",
        None,
        None,
    )
    assert plan.reason == "circuit forced open for svc by an operator, with no end set"


# --- an absurd Retry-After (issue 11, item 1, on the SDK's side) --------------------------------------------


def test_a_refusal_for_longer_than_a_calendar_holds_does_not_raise() -> None:
    refused = CircuitOpenError("svc", retry_after_s=1e308)
    assert refused.retry_at is None
    assert "circuit open for 'svc'" in str(refused)


@pytest.mark.slow
def test_a_local_breaker_opens_for_at_most_a_day_on_an_absurd_retry_after(
    make_client: Callable[[Planner], Client],
) -> None:
    client = make_client(Planner(MISREAD))
    request = httpx.Request("GET", "https://api.example.com/v1/chat")
    limited = httpx.HTTPStatusError(
        "Too Many Requests",
        request=request,
        response=httpx.Response(429, headers={"Retry-After": "1000000000000"}, request=request),
    )
    with pytest.raises(httpx.HTTPStatusError), client.guard("svc"):
        raise limited
    with pytest.raises(CircuitOpenError) as refused, client.guard("svc"):
        pass
    assert refused.value.retry_after_s is not None and 86_000 < refused.value.retry_after_s <= 86_400
    assert refused.value.retry_at is not None

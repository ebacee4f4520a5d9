"""The SDK's local fail-safe breaker is a port of the server's state machine: the same sequences of permits
and outcomes must give the same answers and the same state. Also the pure parts of the SDK: how an exception is
described, how the local breaker counts it, how plans are read and followed, and the outcome encoder."""

from __future__ import annotations

import json
import random
from typing import Any

import httpx
import pytest

from rebound_client import _breaker as sdk
from rebound_client import _follow
from rebound_client._core import Buffer, Encoder
from rebound_client._describe import counts_as, describe
from rebound_client.errors import (
    CircuitOpenError,
    DegradedError,
    EscalatedError,
    FallbackUnavailableError,
    RecoveryAbortedError,
    RetriesExhaustedError,
)
from rebound_client.plans import PartialResult, Plan
from recovery.breakers import logic as breaker_logic

SETTINGS = [
    {},
    {"window_type": "time", "window_size": 5, "minimum_calls": 3, "failure_rate_threshold": 60},
    {"consecutive_failures": 0, "window_size": 6, "minimum_calls": 4, "success_threshold": 3},
    {"wait_duration_s": 2, "wait_multiplier": 2.0, "max_wait_s": 7, "half_open_max_calls": 1},
]


def _server_config(settings: dict[str, Any]) -> breaker_logic.Config:
    local = sdk.Config.from_settings(settings)
    return breaker_logic.Config(
        **{name: getattr(local, name) for name in breaker_logic.Config.__dataclass_fields__}
    )


def _comparable(result: Any) -> tuple[Any, ...]:
    return (result.state, result.allowed, result.retry_after_ms, result.permit_id, result.transitions)


@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("seed", range(5))
def test_it_gives_the_servers_answers_for_the_same_sequence(settings: dict[str, Any], seed: int) -> None:
    rng = random.Random(seed)
    cfg_local, cfg_server = sdk.Config.from_settings(settings), _server_config(settings)
    st_local, st_server = sdk.new_state(), breaker_logic.new_state()
    now, permits = 1_000_000, []
    for step in range(400):
        now += rng.choice([0, 1, 10, 250, 900, 2500])
        if rng.random() < 0.3:
            pid = f"p{step}"
            a = sdk.permit(st_local, cfg_local, now, pid)
            b = breaker_logic.permit(st_server, cfg_server, now, pid)
            if a.permit_id:
                permits.append(pid)
        else:
            failure = rng.random() < 0.45
            pid = permits.pop() if permits and rng.random() < 0.7 else ""
            retry = 3000 if failure and rng.random() < 0.05 else 0
            ignored = not failure and rng.random() < 0.05
            a = sdk.record(st_local, cfg_local, now, sdk.Outcome(failure, ignored, pid, retry))
            b = breaker_logic.record(
                st_server, cfg_server, now, breaker_logic.Outcome(failure, ignored, pid, retry)
            )
        assert _comparable(a) == _comparable(b), (step, settings)
        # Both windows fitted to now (the server also counts them after each step; the SDK need not).
        counts = sdk.window_counts(st_local, cfg_local, now)
        assert counts == breaker_logic.window_counts(st_server, cfg_server, now), (step, settings)
        # The server's state also keeps the operator's override and its history's bookkeeping (generation,
        # transitions waiting for their rows): the breaker itself is what must be the same.
        assert st_local == {key: st_server[key] for key in st_local}, (step, settings)


@pytest.mark.parametrize(
    ("wait_s", "elapsed_ms", "expected_ms", "says"),
    [
        (2, 100, 2000, "2"),  # the base open wait, not the trial permit's 30 s TTL
        (30, 100, 29_900, "29.9"),  # never past the soonest permit's expiry
        (0, 100, 1, "0.001"),  # at least 1 ms
    ],
)
def test_it_tells_a_caller_refused_in_half_open_what_the_server_does(
    wait_s: float, elapsed_ms: int, expected_ms: int, says: str
) -> None:
    settings = {"wait_duration_s": wait_s, "half_open_max_calls": 1}
    cfg_local, cfg_server = sdk.Config.from_settings(settings), _server_config(settings)
    st_local, st_server = sdk.new_state(), breaker_logic.new_state()
    for st in (st_local, st_server):
        st["state"] = sdk.HALF_OPEN
    now = 1_000_000
    assert sdk.permit(st_local, cfg_local, now, "t1").allowed
    assert breaker_logic.permit(st_server, cfg_server, now, "t1").allowed
    now += elapsed_ms
    local = sdk.permit(st_local, cfg_local, now, "t2")
    server = breaker_logic.permit(st_server, cfg_server, now, "t2")
    assert (local.allowed, local.state, local.retry_after_ms) == (False, "half_open", expected_ms)
    assert local.reason == f"half-open: all 1 trial permits are in use: ask again in {says} s"
    assert (local.retry_after_ms, local.reason) == (server.retry_after_ms, server.reason)


def test_a_local_breaker_taking_over_a_half_open_fleet_breaker_refuses_for_the_base_wait() -> None:
    clock = [1_000_000]
    cfg = sdk.Config.from_settings({"wait_duration_s": 1.5, "half_open_max_calls": 1})
    breaker = sdk.LocalBreaker.starting_from(cfg, "half_open", 0, clock=lambda: clock[0])
    assert breaker.permit().allowed
    refused = breaker.permit()
    assert (refused.allowed, refused.state, refused.retry_after_ms) == (False, "half_open", 1500)


def test_settings_are_read_from_the_breaker_view_with_defaults_for_the_missing() -> None:
    cfg = sdk.Config.from_settings({"wait_duration_s": 2.5, "window_type": "time", "unknown": 1})
    assert cfg.wait_ms == 2500
    assert cfg.window_type == "time"
    assert cfg.threshold == 50.0
    assert sdk.Config.from_settings({"window_size": "bad"}) == sdk.Config()


def test_a_local_breaker_takes_over_an_open_fleet_breaker_until_its_end() -> None:
    clock = [10_000]
    breaker = sdk.LocalBreaker.starting_from(sdk.Config(), "open", 5_000, clock=lambda: clock[0])
    refused = breaker.permit()
    assert (refused.allowed, refused.state, refused.retry_after_ms) == (False, "open", 5_000)
    clock[0] += 5_000
    trial = breaker.permit()
    assert (trial.allowed, trial.state) == (True, "half_open")
    assert trial.permit_id


def test_it_describes_an_http_error_with_status_and_retry_after() -> None:
    request = httpx.Request("GET", "https://api.example.com/v1/chat")
    response = httpx.Response(429, headers={"Retry-After": "20"}, request=request)
    error = httpx.HTTPStatusError("Too Many Requests", request=request, response=response)
    described = describe(error)
    assert described == {
        "type": "httpx.HTTPStatusError",
        "message": "Too Many Requests",
        "status_code": 429,
        "headers": {"Retry-After": "20"},
    }
    assert counts_as(described) == sdk.Outcome(failure=True, retry_after_ms=20_000)
    assert describe(TimeoutError()) == {"type": "TimeoutError"}


def test_the_callers_own_4xx_do_not_count_locally() -> None:
    assert counts_as({"type": "X", "status_code": 422}) == sdk.Outcome(failure=False, ignored=True)
    assert counts_as({"type": "X", "status_code": 408}).failure
    assert counts_as({"type": "ConnectError"}).failure
    assert counts_as(None, slow=True) == sdk.Outcome(failure=True)


def test_the_buffer_drops_the_oldest_and_counts_them() -> None:
    woken: list[int] = []
    buffer = Buffer(capacity=3, flush_at=2, wake=lambda: woken.append(1))
    for n in range(5):
        buffer.items.append(("svc", "op", float(n)))
        if len(buffer.items) >= buffer.flush_at:
            buffer.full()
    assert [i[2] for i in buffer.items] == [2.0, 3.0, 4.0]
    assert buffer.dropped == 2
    assert len(woken) == 4
    batch = buffer.take(2)
    buffer.items.append(("svc", "op", 5.0))
    buffer.items.append(("svc", "op", 6.0))
    buffer.give_back(batch)  # back in front, older than what came since: beyond capacity they go first
    assert [i[2] for i in buffer.items] == [4.0, 5.0, 6.0]
    assert buffer.dropped == 4


def test_the_encoder_writes_valid_batches_within_its_limits() -> None:
    items: list[tuple[Any, ...]] = [("svc", "op", 0.0123)] * 5
    items.append(("svc", "op", 0.5, False, {"type": "E", "status_code": 503}, "p1", "plan-1", None))
    items.append(("svc", "op", 0.1, True, None, "", "", ("k", {"answer": 42})))
    items.append(("svc", "op", 0.1, True, None, "", "", ("k", object())))  # not JSON: not cached
    bodies = Encoder(max_items=3).bodies(items)
    # The five plain successes are one run item: four items in all, in bodies of at most three.
    assert [len(part) for _, part, _ in bodies] == [7, 1]
    outcomes = [o for body, _, _ in bodies for o in json.loads(body)["outcomes"]]
    assert outcomes[0] == {
        "service": "svc",
        "operation": "op",
        "successes": 5,
        "durations_ms": [12.3] * 5,
    }
    assert outcomes[1] == {
        "service": "svc",
        "operation": "op",
        "success": False,
        "duration_ms": 500.0,
        "error": {"type": "E", "status_code": 503},
        "permit_id": "p1",
        "plan_id": "plan-1",
    }
    assert outcomes[2]["cache_key"] == "k" and outcomes[2]["result"] == {"answer": 42}
    assert "cache_key" not in outcomes[3] and "result" not in outcomes[3]
    singles = [("svc", f"op{i}", 0.001) for i in range(8)]  # a run per operation: eight items
    small = Encoder(max_items=100, max_bytes=200).bodies(singles)
    assert len(small) > 1 and all(len(body) < 300 for body, _, _ in small)
    assert sum(len(part) for _, part, _ in small) == 8


def _plan(action: str, **fields: Any) -> Plan:
    return Plan.from_json({"plan_id": "p-1", "action": action, "reason": "because", **fields})


def _step(plan: Plan | None, error: BaseException | None = None, attempt: int = 1, **rules: Any) -> Any:
    return _follow.next_step(
        plan,
        error=error or RuntimeError("boom"),
        attempt=attempt,
        rules=_follow.Rules(**rules),
        used=set(),
        service="svc",
        operation="op",
    )


def test_it_turns_retry_and_wait_plans_into_delays() -> None:
    assert _step(_plan("retry", delay_s=2.0)).delay_s == 2.0
    assert _step(_plan("wait", delay_s=None, retry_after_s=7)).delay_s == 7.0


def test_it_gives_up_on_a_retry_plan_past_the_attempts_or_the_longest_delay() -> None:
    assert (
        _step(_plan("retry", delay_s=1), attempt=3, max_attempts=3).error.__class__ is RetriesExhaustedError
    )
    assert isinstance(_step(_plan("retry", delay_s=60), max_delay_s=5).error, RetriesExhaustedError)


def test_it_turns_static_and_skip_fallbacks_into_values() -> None:
    static = _plan("fallback", fallback={"kind": "static", "position": 1, "value": {"v": 1}})
    assert _step(static).value == {"v": 1}
    skip = _step(_plan("fallback", fallback={"kind": "skip", "position": 2, "warning": "skipped"}))
    assert isinstance(skip.value, PartialResult) and skip.value.warning == "skipped"


def test_it_turns_a_service_fallback_into_a_call_only_when_one_is_registered() -> None:
    service = _plan(
        "fallback", fallback={"kind": "service", "position": 1, "service": "alt", "operation": "x"}
    )
    assert isinstance(_step(service).error, FallbackUnavailableError)
    alternative = _step(service, fallbacks={"alt": print})
    assert (alternative.kind, alternative.service, alternative.operation) == ("fallback", "alt", "x")


def test_it_turns_degrade_escalate_and_abort_into_errors_carrying_the_plan() -> None:
    for action, kind in (
        ("degrade", DegradedError),
        ("escalate", EscalatedError),
        ("abort", RecoveryAbortedError),
    ):
        step = _step(_plan(action))
        assert (
            isinstance(step.error, kind) and step.error.plan is not None and step.error.plan.plan_id == "p-1"
        )


def test_it_hands_an_abort_to_the_callers_fallback() -> None:
    assert _step(_plan("abort"), fallback=print).fallback is print


def test_without_a_planner_it_backs_off_locally_then_gives_up() -> None:
    first = _step(None, base_delay_s=1.0)
    assert first.kind == "retry" and 0.5 <= first.delay_s <= 1.0
    assert 1.0 <= _step(None, attempt=2, base_delay_s=1.0).delay_s <= 2.0
    assert isinstance(_step(None, attempt=3).error, RetriesExhaustedError)
    request = httpx.Request("GET", "https://x")
    invalid = httpx.HTTPStatusError("bad", request=request, response=httpx.Response(422, request=request))
    assert _step(None, error=invalid).error is invalid  # the caller's own mistake: raised as it is
    refused = CircuitOpenError("svc", retry_after_s=0.2)
    assert _step(None, error=refused, base_delay_s=0.1).delay_s >= 0.2

"""`call`, `with_retry` and `with_fallback` follow the recovery planner's plans end to end, against a real
gunicorn: retry after the plan's delay, fall back to a static default, the cache or another service, skip
non-critical work, and raise with the plan on validation and authentication errors. In test mode nothing
sleeps: the plans' delays are recorded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from rebound_client import (
    Client,
    EscalatedError,
    PartialResult,
    RecoveryAbortedError,
    RetriesExhaustedError,
)
from recovery.breakers.models import Service
from recovery.decisions.models import FallbackInvocation, FallbackOption, RecoveryPlan
from tests.support.sdk_server import (
    QUIET,
    Flaky,
    SdkServer,
    agent_key,
    eventually,
    http_error,
    operator_key,
    override,
    service,
)
from tests.support.sdk_server import clients as clients
from tests.support.sdk_server import server as server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def client(clients: Callable[..., Client]) -> Client:
    made: Client = clients(agent_key(), test_mode=True)
    return made


def _plans(name: str) -> list[RecoveryPlan]:
    return list(RecoveryPlan.objects.filter(service=name).order_by("created_at", "attempt"))


def _forced_open(server: SdkServer, client: Client, name: str) -> None:
    override(server.url, operator_key(), name, "forced_open")
    eventually(lambda: client.state(name) == "forced_open", "the client saw the override")


def test_call_retries_as_planned_and_tells_rebound_whether_each_plan_worked(client: Client) -> None:
    service("sdk-plan-retry", **QUIET)
    fetch = Flaky(http_error(503), http_error(503), value={"rows": 3})
    assert client.call("sdk-plan-retry", fetch, operation="fetch") == {"rows": 3}
    assert fetch.calls == 3
    plans = _plans("sdk-plan-retry")
    assert [(p.action, p.attempt, p.error_class) for p in plans] == [
        ("retry", 1, "external_service"),
        ("retry", 2, "external_service"),
    ]
    # Test mode: the plans' delays were recorded, not slept.
    assert client.recorded_delays == [p.delay_s for p in plans]
    assert all(delay > 0 for delay in client.recorded_delays)
    # Each plan's result is the outcome of the attempt that followed it (sent with its plan_id).
    eventually(
        lambda: (
            [p.result for p in _plans("sdk-plan-retry")]
            == [RecoveryPlan.Result.FAILED, RecoveryPlan.Result.SUCCEEDED]
        ),
        "the plans' results recorded",
    )


def test_with_retry_gives_up_with_the_last_plan_when_its_attempts_run_out(client: Client) -> None:
    service("sdk-plan-exhaust", **QUIET)
    always = Flaky(*(http_error(503) for _ in range(5)))

    @client.with_retry("sdk-plan-exhaust", operation="fetch", max_attempts=2)
    def fetch() -> Any:
        return always()

    with pytest.raises(RetriesExhaustedError) as exhausted:
        fetch()
    assert always.calls == 2
    assert exhausted.value.attempts == 2
    assert exhausted.value.plan is not None and exhausted.value.plan.action == "retry"
    assert isinstance(exhausted.value.__cause__, httpx.HTTPStatusError)
    assert len(client.recorded_delays) == 1


def test_an_open_breaker_sends_call_to_the_static_default(server: SdkServer, client: Client) -> None:
    svc = service("sdk-plan-static")
    FallbackOption.objects.create(service=svc, kind="static", static_value={"answer": "default"})
    _forced_open(server, client, "sdk-plan-static")
    never = Flaky()
    assert client.call("sdk-plan-static", never, operation="ask") == {"answer": "default"}
    assert never.calls == 0  # refused locally: the breaker is open
    [plan] = _plans("sdk-plan-static")
    assert plan.action == "fallback"
    assert plan.fallback is not None and plan.fallback["kind"] == "static"
    assert FallbackInvocation.objects.get(plan=plan).kind == "static"


def test_a_cached_result_is_served_when_the_service_fails(server: SdkServer, client: Client) -> None:
    svc = service("sdk-plan-cache")
    FallbackOption.objects.create(service=svc, kind="cache")
    fresh = client.call(
        "sdk-plan-cache", lambda: {"summary": "3 unread"}, operation="inbox", cache_key="alice"
    )
    assert fresh == {"summary": "3 unread"}
    _forced_open(server, client, "sdk-plan-cache")
    cached = client.call("sdk-plan-cache", Flaky(), operation="inbox", cache_key="alice")
    assert cached == {"summary": "3 unread"}
    [plan] = _plans("sdk-plan-cache")
    assert plan.action == "fallback" and plan.fallback is not None and plan.fallback["kind"] == "cache"


def test_a_service_fallback_runs_the_registered_callable_under_its_own_guard(
    server: SdkServer, client: Client
) -> None:
    primary, alternative = service("sdk-plan-primary"), service("sdk-plan-alt")
    FallbackOption.objects.create(
        service=primary, kind="service", target_service=alternative, target_operation="chat"
    )
    _forced_open(server, client, "sdk-plan-primary")
    used: list[str] = []

    def alt(prompt: str) -> str:
        used.append(prompt)
        return f"alt: {prompt}"

    answer = client.call(
        "sdk-plan-primary", Flaky(), "hello", operation="chat", fallbacks={"sdk-plan-alt": alt}
    )
    assert answer == "alt: hello"
    assert used == ["hello"]
    [plan] = _plans("sdk-plan-primary")
    assert plan.fallback is not None and plan.fallback["service"] == "sdk-plan-alt"
    eventually(
        lambda: RecoveryPlan.objects.get(pk=plan.pk).result == RecoveryPlan.Result.SUCCEEDED,
        "the fallback's outcome carried the plan",
    )


def test_non_critical_work_is_skipped_with_a_partial_result(server: SdkServer, client: Client) -> None:
    svc = service("sdk-plan-skip", criticality=Service.Criticality.NON_CRITICAL)
    FallbackOption.objects.create(service=svc, kind="skip", warning="the summary is skipped")
    _forced_open(server, client, "sdk-plan-skip")
    partial = client.call("sdk-plan-skip", Flaky(), operation="summarise")
    assert isinstance(partial, PartialResult)
    assert not partial
    assert partial.warning == "the summary is skipped"
    # The planner's answer to a skip option is `degrade` with that option.
    assert partial.plan is not None and partial.plan.action == "degrade"
    assert partial.plan.fallback is not None and partial.plan.fallback.kind == "skip"


def test_a_tripped_breaker_with_no_fallback_is_waited_for_with_a_plan_that_says_so(client: Client) -> None:
    service("sdk-plan-tripped", consecutive_failures=2, wait_duration_s=60)
    for _ in range(2):
        with pytest.raises(httpx.HTTPStatusError), client.guard("sdk-plan-tripped", operation="fetch"):
            raise http_error(503)
    eventually(lambda: client.state("sdk-plan-tripped") == "open", "the client saw the trip")
    never = Flaky()

    with pytest.raises(RetriesExhaustedError) as exhausted:
        client.call("sdk-plan-tripped", never, operation="fetch", max_attempts=2)

    assert never.calls == 0  # refused locally, twice
    plan = exhausted.value.plan
    assert plan is not None and (plan.action, plan.error_class) == ("wait", "circuit_open")
    assert plan.reason.startswith("circuit open for sdk-plan-tripped, retry after")
    # As long as this process knows the breaker to stay open (at least the default wait, 30 s, from the trip).
    assert plan.retry_after_s is not None and 20 < plan.retry_after_s <= 60
    assert plan.retry_at is not None
    # One wait, until the breaker lets a trial call through; not the planner's verdict on an unknown error.
    [waited] = client.recorded_delays
    assert 20 < waited <= 60
    assert plan.raw["planner_plan_id"] in {str(p.pk) for p in _plans("sdk-plan-tripped")}


@pytest.mark.parametrize(
    ("status", "raised", "action", "error_class"),
    [
        (422, RecoveryAbortedError, "abort", "validation"),
        (401, EscalatedError, "escalate", "authentication"),
    ],
)
def test_it_raises_with_the_plan_when_retrying_cannot_help(
    client: Client, status: int, raised: type[Exception], action: str, error_class: str
) -> None:
    service("sdk-plan-raise", **QUIET)
    failing = Flaky(http_error(status), value="never")
    with pytest.raises(raised) as caught:
        client.call("sdk-plan-raise", failing, operation="create")
    assert failing.calls == 1
    plan = caught.value.plan  # type: ignore[attr-defined]
    assert plan is not None and (plan.action, plan.error_class) == (action, error_class)
    assert plan.plan_id == str(RecoveryPlan.objects.get(service="sdk-plan-raise").pk)
    assert isinstance(caught.value.__cause__, httpx.HTTPStatusError)
    assert client.recorded_delays == []


def test_with_fallback_uses_the_callers_fallback_when_the_plan_offers_nothing(client: Client) -> None:
    service("sdk-plan-own", **QUIET)
    calls: list[Callable[..., Any]] = []

    def from_disk(name: str) -> str:
        return f"disk copy of {name}"

    @client.with_fallback("sdk-plan-own", fallback=from_disk, operation="load")
    def load(name: str) -> str:
        calls.append(load)
        raise http_error(422, message="unknown field")

    assert load("report") == "disk copy of report"
    assert len(calls) == 1
    [plan] = _plans("sdk-plan-own")
    assert plan.action == "abort"

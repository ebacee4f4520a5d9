"""The asynchronous SDK against a real gunicorn: the same decisions as the sync client, its background work as
asyncio tasks. Database checks run after the event loop has finished (the ORM is synchronous)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from rebound_client import AsyncClient, CircuitOpenError, RecoveryAbortedError
from recovery.decisions.models import FallbackOption, RecoveryPlan
from recovery.errors.models import ErrorEvent
from tests.support.sdk_server import (
    QUIET,
    WITHIN_S,
    AsyncRecording,
    Flaky,
    SdkServer,
    agent_key,
    breaker,
    http_error,
    operator_key,
    override,
    service,
    transitions,
)
from tests.support.sdk_server import server as server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]
T = TypeVar("T")


def run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(scenario())


async def until(predicate: Callable[[], bool], what: str, timeout: float = WITHIN_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        await asyncio.sleep(0.05)


def test_it_guards_coroutines_and_reports_their_outcomes(server: SdkServer) -> None:
    service("sdk-async-record", **QUIET)
    key = agent_key()
    transport = AsyncRecording()

    async def scenario() -> dict[str, Any]:
        async with AsyncClient(server.url, key, transport=transport) as client:
            assert client.connected
            for _ in range(3):
                async with client.guard("sdk-async-record", operation="search"):
                    await asyncio.sleep(0)

            @client.guard("sdk-async-record", operation="search")
            async def search(query: str) -> str:
                if query == "boom":
                    raise http_error(502, message="bad gateway")
                return query[::-1]

            assert await search("abc") == "cba"
            with pytest.raises(httpx.HTTPStatusError):
                await search("boom")
            await until(lambda: client.stats()["sent"] == 5, "five outcomes sent")
            return client.stats()

    stats = run(scenario)
    assert stats["dropped"] == 0
    view = breaker(server.url, key, "sdk-async-record")
    assert (view["window"]["calls"], view["window"]["failures"]) == (5, 1)
    event = ErrorEvent.objects.get(service="sdk-async-record")
    assert (event.operation, event.status_code, event.message) == ("search", 502, "bad gateway")
    assert transport.count("POST", "/permit") == 0


def test_a_trip_elsewhere_is_seen_and_refused_locally(server: SdkServer) -> None:
    service("sdk-async-trip", wait_duration_s=300)
    keys = agent_key(), agent_key()
    transport = AsyncRecording()

    async def scenario() -> CircuitOpenError:
        async with (
            AsyncClient(server.url, keys[0]) as tripping,
            AsyncClient(server.url, keys[1], transport=transport) as watching,
        ):
            assert watching.state("sdk-async-trip") == "closed"
            for _ in range(3):
                with pytest.raises(ConnectionError):
                    async with tripping.guard("sdk-async-trip"):
                        raise ConnectionError("reset")
            await until(lambda: watching.state("sdk-async-trip") == "open", "the other client's view flipped")
            with pytest.raises(CircuitOpenError) as refused:
                async with watching.guard("sdk-async-trip"):
                    pytest.fail("a refused call must not run")
            return refused.value

    refused = run(scenario)
    assert refused.state == "open"
    assert refused.retry_after_s is not None and refused.retry_after_s > 0
    assert transport.count("POST", "/permit") == 0
    assert transitions("sdk-async-trip") == [("closed", "open")]


def test_call_follows_plans_without_sleeping_in_test_mode(server: SdkServer) -> None:
    service("sdk-async-plan", **QUIET)
    svc = service("sdk-async-static")
    FallbackOption.objects.create(service=svc, kind="static", static_value=[1, 2, 3])
    key, operator = agent_key(), operator_key()
    override(server.url, operator, "sdk-async-static", "forced_open")

    async def scenario() -> tuple[Any, Any, list[float], Exception]:
        async with AsyncClient(server.url, key, test_mode=True) as client:
            flaky = Flaky(http_error(503), value="fetched")

            async def fetch() -> str:
                return str(flaky())

            retried = await client.call("sdk-async-plan", fetch, operation="fetch")
            await until(lambda: client.state("sdk-async-static") == "forced_open", "the override seen")
            static = await client.call("sdk-async-static", fetch, operation="fetch")
            with pytest.raises(RecoveryAbortedError) as aborted:
                await client.call("sdk-async-plan", Flaky(http_error(400)), operation="create")
            return retried, static, client.recorded_delays, aborted.value

    retried, static, delays, aborted = run(scenario)
    assert retried == "fetched"
    assert static == [1, 2, 3]
    retry_plan = RecoveryPlan.objects.get(service="sdk-async-plan", action="retry")
    assert delays == [retry_plan.delay_s]
    assert aborted.plan is not None and aborted.plan.action == "abort"  # type: ignore[attr-defined]
    assert RecoveryPlan.objects.get(service="sdk-async-static").action == "fallback"


def test_it_buffers_while_rebound_is_away_and_sends_when_it_returns(tmp_path: Path) -> None:
    away = SdkServer(tmp_path)  # not started yet
    key = agent_key()

    async def scenario() -> dict[str, Any]:
        client = AsyncClient(away.url, key, max_backoff_s=0.5, timeout_s=2, flush_interval_s=3600)
        try:
            for n in range(3):
                with pytest.raises(httpx.HTTPStatusError):
                    async with client.guard("sdk-async-away", operation=f"op-{n}"):
                        raise http_error(409, message="conflict")
            assert not client.connected
            assert client.stats()["buffered"] == 3
            await asyncio.to_thread(away.start)
            await until(
                lambda: client.connected and client.stats()["buffered"] == 0, "reconnected and flushed"
            )
            return client.stats()
        finally:
            await client.aclose(timeout_s=2)
            away.stop()

    stats = run(scenario)
    assert stats["sent"] == 3
    operations = sorted(
        ErrorEvent.objects.filter(service="sdk-async-away").values_list("operation", flat=True)
    )
    assert operations == ["op-0", "op-1", "op-2"]

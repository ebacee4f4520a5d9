"""The SDK's trace propagation (rebound_client/_tracing.py): a request made while a span is current carries its
`traceparent`; one made with no span carries none. Spans come from a provider of the test's own (the global
provider is never set)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

from rebound_client import AsyncClient, Client, _tracing

PLAN = {
    "plan_id": "6f1c0f55-6bd8-4c1c-9d0e-2b7f2b1c9a10",
    "action": "retry",
    "delay_s": 1.0,
    "fallback": None,
    "attempts_left": 2,
    "reason": "a timeout: retry",
    "error_class": "timeout",
    "severity": "low",
    "kind": "transient",
    "retry_after_s": None,
    "breaker_state": "closed",
    "degradation_level": "normal",
    "policy": "global default",
}


class Rebound:
    """An in-process Rebound whose breaker view is unreachable and whose planner answers PLAN; it keeps the
    headers of each plan request."""

    def __init__(self) -> None:
        self.plan_headers: list[httpx.Headers] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/recovery/plan":
            self.plan_headers.append(request.headers)
            return httpx.Response(200, json=PLAN)
        raise httpx.ConnectError("connection refused", request=request)


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    provider = TracerProvider()
    yield provider
    provider.shutdown()


@pytest.fixture
def client_and_server() -> Iterator[tuple[Client, Rebound]]:
    server = Rebound()
    client = Client(
        "http://rebound.test", "rb_test_key", test_mode=True, transport=httpx.MockTransport(server)
    )
    yield client, server
    client.close(timeout_s=0.1)


def test_it_sends_the_current_spans_traceparent(
    client_and_server: tuple[Client, Rebound], provider: TracerProvider
) -> None:
    client, server = client_and_server
    with provider.get_tracer("agent").start_as_current_span("agent step") as span:
        client.plan("svc", TimeoutError("slow"))

    context = span.get_span_context()
    assert (
        server.plan_headers[0]["traceparent"]
        == f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    )


def test_it_sends_no_traceparent_without_a_current_span(client_and_server: tuple[Client, Rebound]) -> None:
    client, server = client_and_server
    client.plan("svc", TimeoutError("slow"))

    assert "traceparent" not in server.plan_headers[0]
    assert "tracestate" not in server.plan_headers[0]


def test_it_sends_the_current_spans_traceparent_from_the_async_client(provider: TracerProvider) -> None:
    server = Rebound()

    async def scenario() -> Any:
        client = AsyncClient(
            "http://rebound.test", "rb_test_key", test_mode=True, transport=httpx.MockTransport(server)
        )
        try:
            with provider.get_tracer("agent").start_as_current_span("agent step") as span:
                await client.plan("svc", TimeoutError("slow"))
        finally:
            await client.aclose()
        return span.get_span_context()

    context = asyncio.run(scenario())
    assert (
        server.plan_headers[0]["traceparent"]
        == f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    )


def test_it_sends_no_traceparent_when_opentelemetry_is_not_installed(
    client_and_server: tuple[Client, Rebound], provider: TracerProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_tracing, "_AVAILABLE", False)  # as when `import opentelemetry` failed
    client, server = client_and_server
    with provider.get_tracer("agent").start_as_current_span("agent step"):
        client.plan("svc", TimeoutError("slow"))

    assert "traceparent" not in server.plan_headers[0]

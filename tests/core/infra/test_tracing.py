"""Traces (core/infra/tracing.py, docs/tracing.md): off without an endpoint; with the instrumentation on, an
agent's request, the Celery task it enqueued and the task's outbound call are one trace, and the request id of the
log lines is an attribute of the server and task spans.

Spans go to an in-memory exporter through a provider of the test's own (the global provider is never set), and
every instrumentation is undone after the test. The task runs in this process through Celery's own tracer, from
the message the request published (headers and body, as a worker receives them): nothing reaches the broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kombu
import pytest
from celery import current_app
from celery.app.trace import build_tracer
from django.conf import settings
from django.test import override_settings
from opentelemetry import trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from core.infra import tracing
from recovery.breakers.models import Service
from recovery.decisions import policies
from recovery.decisions.models import RetryPolicy
from recovery.retries.models import RetryJob
from recovery.retries.services import RUN_ATTEMPT_TASK
from recovery.retries.tasks import run_retry_attempt
from tests.support.factories import rebound_settings
from tests.support.http_target import Answer, Target, running_target


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.instrument(tracer_provider=provider)
    try:
        yield exporter
    finally:
        tracing.uninstrument()
        provider.shutdown()


@pytest.fixture
def target() -> Iterator[Target]:
    with (
        running_target() as server,
        override_settings(REBOUND=rebound_settings(OUTBOUND_ALLOWED_HOSTS=[server.host])),
    ):
        yield server


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The messages Celery publishes (body and headers, after every before_task_publish handler ran), kept here
    instead of reaching the broker."""
    messages: list[dict[str, Any]] = []

    def publish(self: kombu.Producer, body: Any, **kwargs: Any) -> None:
        messages.append({"body": body, **kwargs})

    monkeypatch.setattr(kombu.Producer, "publish", publish)
    return messages


def run_as_worker(message: dict[str, Any]) -> None:
    """Run the published task in this process as a worker would: its request made of the message's headers."""
    headers = dict(message["headers"])
    args, kwargs, _ = message["body"]
    assert headers["task"] == run_retry_attempt.name
    task = current_app.tasks[headers["task"]]
    request = {**headers, "delivery_info": {"routing_key": "celery"}, "hostname": "test@tracing"}
    build_tracer(task.name, task, app=current_app, eager=False, propagate=True)(
        headers["id"], args, kwargs, request
    )


def only(found: list[ReadableSpan], kind: SpanKind, name_part: str = "") -> ReadableSpan:
    matching = [s for s in found if s.kind == kind and name_part in s.name]
    assert len(matching) == 1, [(s.name, s.kind) for s in found]
    return matching[0]


def test_it_installs_nothing_without_an_endpoint() -> None:
    with override_settings(REBOUND=rebound_settings(OTEL_EXPORTER_OTLP_ENDPOINT="")):
        assert tracing.configure("web") is False

    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert not DjangoInstrumentor().is_instrumented_by_opentelemetry
    assert not CeleryInstrumentor().is_instrumented_by_opentelemetry
    assert not HTTPXClientInstrumentor().is_instrumented_by_opentelemetry
    assert not any("opentelemetry" in name for name in settings.MIDDLEWARE)


def test_it_sends_spans_to_the_collectors_traces_path() -> None:
    assert tracing.traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert tracing.traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert tracing.traces_url("http://collector:4318/v1/traces") == "http://collector:4318/v1/traces"


@pytest.mark.django_db(transaction=True)
def test_it_follows_a_retry_from_the_request_through_the_task_to_the_outbound_call(
    agent_client: Any, target: Target, spans: InMemorySpanExporter, published: list[dict[str, Any]]
) -> None:
    service = Service.objects.create(name="billing")
    policies.forget()
    RetryPolicy.objects.create(
        name="fast", service=service, strategy="fixed", max_attempts=3, base_delay_s=0, max_delay_s=0
    )
    target.script(Answer(201, {"id": "inv_1"}))
    body = {
        "service": "billing",
        "operation": "create_invoice",
        "kind": "http",
        "request": {"method": "POST", "url": target.url("/invoices"), "body": {"amount": 42}},
        "idempotency_key": "invoice-42",
        "policy": "fast",
    }

    try:
        response = agent_client.post("/api/v1/retries", body, format="json", HTTP_X_REQUEST_ID="agent-req-1")
        assert response.status_code == 201, response.json()
        assert [m["headers"]["task"] for m in published] == [RUN_ATTEMPT_TASK]
        run_as_worker(published[0])
    finally:
        policies.forget()

    assert RetryJob.objects.get().state == "succeeded"
    found = list(spans.get_finished_spans())
    server = only(found, SpanKind.SERVER)
    enqueued = only(found, SpanKind.PRODUCER, RUN_ATTEMPT_TASK)
    task = only(found, SpanKind.CONSUMER, RUN_ATTEMPT_TASK)
    outbound = only(found, SpanKind.CLIENT, "POST")
    trace_id = server.context.trace_id
    assert {s.context.trace_id for s in (server, enqueued, task, outbound)} == {trace_id}
    assert task.parent is not None and task.parent.span_id == enqueued.context.span_id
    assert outbound.parent is not None and outbound.parent.span_id == task.context.span_id
    assert response["X-Request-ID"] == "agent-req-1"
    assert server.attributes is not None and server.attributes[tracing.REQUEST_ID_ATTRIBUTE] == "agent-req-1"
    assert task.attributes is not None and task.attributes[tracing.REQUEST_ID_ATTRIBUTE] == "agent-req-1"
    sent = {name.lower(): value for name, value in target.seen[0].headers.items()}
    assert sent["traceparent"].split("-")[1] == f"{trace_id:032x}"

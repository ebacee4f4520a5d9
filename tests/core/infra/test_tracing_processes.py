"""Traces across real processes (docs/tracing.md): gunicorn and a Celery worker started with
OTEL_EXPORTER_OTLP_ENDPOINT export their spans over OTLP/HTTP to a collector of the test's own (a local HTTP
server that keeps what it receives); an agent's request that carries `traceparent`, the retry task it enqueued
and the task's outbound call all land in the agent's trace, with the request id on the server and task spans."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from django.test import override_settings
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from recovery.breakers.models import Service
from recovery.decisions.models import RetryPolicy
from recovery.retries.models import RetryJob
from tests.support import factories
from tests.support.factories import rebound_settings
from tests.support.http_target import Answer, Target, running_target
from tests.support.processes import PYTHON, process_env, start, stop, wait_for
from tests.support.sdk_server import SdkServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
AGENT_SPAN = "00f067aa0ba902b7"


def exported(collector: Target) -> list[Span]:
    spans: list[Span] = []
    for seen in list(collector.seen):
        if seen.path == "/v1/traces":
            request = ExportTraceServiceRequest.FromString(seen.body)
            spans += [s for r in request.resource_spans for scope in r.scope_spans for s in scope.spans]
    return spans


def attribute(span: Span, name: str) -> str | None:
    return next((a.value.string_value for a in span.attributes if a.key == name), None)


def test_it_exports_one_trace_from_the_agents_request_to_the_outbound_call(tmp_path: Path) -> None:
    service = Service.objects.create(name="billing")
    RetryPolicy.objects.create(
        name="quick", service=service, strategy="fixed", max_attempts=2, base_delay_s=0.1, max_delay_s=0.1
    )
    _, key = factories.agent_key()
    with running_target() as target, running_target() as collector:
        collector.script(*[Answer(200, b"") for _ in range(200)])
        target.script(Answer(201, {"id": "inv_7"}))
        tracing_env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url(""),
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OUTBOUND_ALLOWED_HOSTS": target.host,
        }
        server = SdkServer(tmp_path, workers=1, threads=4)
        server.env.update(tracing_env)
        worker_log = tmp_path / "worker.log"
        worker = start(
            [PYTHON, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "-l", "INFO"],
            process_env(tmp_path, **tracing_env),
            worker_log,
        )
        try:
            server.start()
            with override_settings(REBOUND=rebound_settings(OUTBOUND_ALLOWED_HOSTS=[target.host])):
                response = httpx.post(
                    f"{server.url}/api/v1/retries",
                    json={
                        "service": "billing",
                        "operation": "create_invoice",
                        "kind": "http",
                        "request": {"method": "POST", "url": target.url("/invoices"), "body": {"n": 7}},
                        "idempotency_key": "inv-7",
                        "policy": "quick",
                    },
                    headers={
                        "Authorization": f"Bearer {key}",
                        "traceparent": f"00-{TRACE_ID}-{AGENT_SPAN}-01",
                        "X-Request-ID": "agent-req-7",
                    },
                    timeout=30,
                )
            assert response.status_code == 201, response.text
            job = RetryJob.objects.get(pk=response.json()["id"])

            def finished() -> bool:
                job.refresh_from_db()
                return job.is_finished

            assert wait_for(finished, timeout=60), worker_log.read_text()[-3000:]
            assert job.state == "succeeded"

            def spans_of(kind: int, name_part: str) -> list[Span]:
                return [s for s in exported(collector) if s.kind == kind and name_part in s.name]

            wanted: dict[str, Any] = {
                "server": (Span.SPAN_KIND_SERVER, ""),
                "task": (Span.SPAN_KIND_CONSUMER, "run_retry_attempt"),
                "outbound": (Span.SPAN_KIND_CLIENT, "POST"),
            }
            assert wait_for(lambda: all(spans_of(*w) for w in wanted.values()), timeout=30), (
                [(s.name, s.kind) for s in exported(collector)],
                worker_log.read_text()[-2000:],
                server.tail(),
            )
        finally:
            stop(worker)
            server.stop()

    server_span = next(s for s in spans_of(*wanted["server"]) if s.trace_id.hex() == TRACE_ID)
    assert server_span.parent_span_id.hex() == AGENT_SPAN
    assert attribute(server_span, "rebound.request_id") == "agent-req-7"
    task_span = next(s for s in spans_of(*wanted["task"]) if s.trace_id.hex() == TRACE_ID)
    assert attribute(task_span, "rebound.request_id") == "agent-req-7"
    outbound_span = next(s for s in spans_of(*wanted["outbound"]) if s.trace_id.hex() == TRACE_ID)
    assert outbound_span.parent_span_id == task_span.span_id
    sent = {name.lower(): value for name, value in target.seen[0].headers.items()}
    assert sent["traceparent"].split("-")[1] == TRACE_ID

"""OpenTelemetry traces (docs/tracing.md): off unless OTEL_EXPORTER_OTLP_ENDPOINT is set.

`configure(process)` is called where each process starts (gunicorn's post_fork, Celery's worker_process_init
and beat_init, `manage.py mcp`). With the endpoint set it installs a TracerProvider that batches spans to the
OTLP/HTTP collector and instruments Django, Celery, httpx, psycopg and redis: an agent's request (joined to the
agent's own trace when it sends `traceparent`), the Celery task it enqueued and the task's outbound call are one
trace. The request id of the log lines is the attribute `rebound.request_id` of the Django server span and of
each Celery task span.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import task_prerun
from django.http import HttpRequest, HttpResponseBase
from opentelemetry import trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.trace import Span, TracerProvider

from core.infra import request_ids
from core.infra.conf import rebound

log = logging.getLogger(__name__)

REQUEST_ID_ATTRIBUTE = "rebound.request_id"
PROCESS_ATTRIBUTE = "rebound.process"
_TASK_HOOK_UID = "rebound.tracing.request_id"

_lock = threading.Lock()
_configured = False


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a collector's base URL, as the OpenTelemetry specification builds it from
    OTEL_EXPORTER_OTLP_ENDPOINT (an endpoint that already names /v1/traces is kept)."""
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else f"{base}/v1/traces"


def configure(process: str) -> bool:
    """Export this process's spans and instrument its libraries, once; nothing at all when the endpoint is
    blank. `process` (web, worker, beat, mcp) is the resource attribute `rebound.process`. True when on."""
    global _configured
    endpoint = str(rebound("OTEL_EXPORTER_OTLP_ENDPOINT") or "")
    if not endpoint:
        return False
    with _lock:
        if _configured:
            return True
        # Imported here: a process without an endpoint never loads the SDK or the exporter.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create({"service.name": rebound("OTEL_SERVICE_NAME"), PROCESS_ATTRIBUTE: process})
        provider = SdkTracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url(endpoint))))
        trace.set_tracer_provider(provider)
        instrument()
        _configured = True
    log.info("traces of %s go to %s", process, traces_url(endpoint))
    return True


def instrument(tracer_provider: TracerProvider | None = None) -> None:
    """Instrument Django, Celery, httpx, psycopg and redis (with the global provider unless one is given) and tag
    the request id on server and task spans. `uninstrument()` undoes it all."""
    DjangoInstrumentor().instrument(tracer_provider=tracer_provider, response_hook=_tag_request)
    CeleryInstrumentor().instrument(tracer_provider=tracer_provider)
    HTTPXClientInstrumentor().instrument(tracer_provider=tracer_provider)
    PsycopgInstrumentor().instrument(tracer_provider=tracer_provider, skip_dep_check=True)
    RedisInstrumentor().instrument(tracer_provider=tracer_provider)
    # Connected after the Celery instrumentation's task_prerun handler and config/celery.py's, so both the
    # task's span and its request id are current when this runs.
    task_prerun.connect(_tag_task, weak=False, dispatch_uid=_TASK_HOOK_UID)


def uninstrument() -> None:
    task_prerun.disconnect(_tag_task, dispatch_uid=_TASK_HOOK_UID)
    RedisInstrumentor().uninstrument()
    PsycopgInstrumentor().uninstrument()
    HTTPXClientInstrumentor().uninstrument()
    CeleryInstrumentor().uninstrument()
    DjangoInstrumentor().uninstrument()


def _tag_request(span: Span, request: HttpRequest, response: HttpResponseBase) -> None:
    # The instrumentation's middleware is the outermost: by now RequestIdMiddleware (or the hot lane) has put
    # the request's id, the one in its log lines, on the answer.
    request_id = response.get("X-Request-ID")
    if request_id and span.is_recording():
        span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)


def _tag_task(**_: Any) -> None:
    request_id = request_ids.get_request_id()
    span = trace.get_current_span()
    if request_id and span.is_recording():
        span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)

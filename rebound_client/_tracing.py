"""W3C trace context on the SDK's requests: when the agent runs OpenTelemetry (`opentelemetry-api` importable)
and a span is current in the calling thread or task, each request to Rebound carries `traceparent` (and
`tracestate`), so that Rebound's spans join the agent's trace (docs/tracing.md). Without the package, or with no
current span, nothing is added. The SDK never requires OpenTelemetry: `pip install rebound-client[tracing]`."""

from __future__ import annotations

import httpx

try:
    from opentelemetry import propagate, trace

    _AVAILABLE = True
except ImportError:  # the agent does not trace: nothing to propagate
    _AVAILABLE = False

_HEADERS = ("traceparent", "tracestate")


def inject(request: httpx.Request) -> None:
    """httpx's request hook: the current span's trace context into the request's headers, if there is one."""
    if not _AVAILABLE or not trace.get_current_span().get_span_context().is_valid:
        return
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    for name in _HEADERS:
        if name in carrier:
            request.headers[name] = carrier[name]


async def inject_async(request: httpx.Request) -> None:
    """The same, for httpx.AsyncClient's hooks (which must be coroutines)."""
    inject(request)

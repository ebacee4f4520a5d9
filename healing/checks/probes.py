"""The probes of each kind of check: one run, one outcome (ok, latency, status code or error text). No database
here, and no exception escapes: a probe that cannot even start (a refused host, a broker down) is a failure
with its reason, as a probe that got a bad answer is.

* http: through recovery/calls/outbound.py, the one way Rebound calls out (the OUTBOUND_ALLOWED_HOSTS allowlist,
  the SSRF checks after DNS resolution, no redirects, bounded time and body).
* tcp: the same guard: the host and port must be allowlisted, and every address the name resolves to must pass
  outbound.refusal(); the connection goes to the address that was checked.
* celery: the workers that consume the queue (a broadcast of active_queues), then a ping to them; the first
  pong passes.
* heartbeat: nothing to probe; the verdict comes from the pings (heartbeat_verdict and silence_verdict).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import celery
import httpx

from core.infra.conf import rebound
from recovery.calls import outbound

if TYPE_CHECKING:
    from healing.checks.models import HealthCheck

ERROR_CHARS = 2000  # what a result keeps of an error text
# A celery check first finds the workers that consume its queue: a broadcast that waits for every worker's
# answer, so it waits its whole timeout. Healthy workers answer in milliseconds; this bounds the wait, and the
# rest of the check's timeout goes to the ping (which returns at the first pong).
CELERY_DISCOVERY_MAX_S = 2.0


@dataclass(frozen=True)
class Outcome:
    """One run of a probe."""

    ok: bool
    latency_ms: float | None = None
    status_code: int | None = None
    error: str = ""

    @property
    def duration_s(self) -> float | None:
        return self.latency_ms / 1000 if self.latency_ms is not None else None


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _failed(started: float, error: str, status_code: int | None = None) -> Outcome:
    return Outcome(False, _ms(started), status_code, error[:ERROR_CHARS])


def probe(check: HealthCheck) -> Outcome:
    """Run the probe of an http, tcp or celery check (a heartbeat check has none: see heartbeat_verdict)."""
    if check.kind == "http":
        return run_http(check)
    if check.kind == "tcp":
        return run_tcp(check)
    if check.kind == "celery":
        return run_celery(check)
    raise ValueError(f"a {check.kind} check has no probe")


# --- http ------------------------------------------------------------------------------------------------


def success_statuses(expected: list[int]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(expected)) if expected else outbound.DEFAULT_SUCCESS


def body_text(body: Any) -> str:
    """The body as text: outbound decodes a JSON answer, so it is written back as JSON to be searched."""
    if isinstance(body, str):
        return body
    return json.dumps(body, ensure_ascii=False)


def body_has(body: Any, wanted: str) -> bool:
    if isinstance(body, str):
        return wanted in body
    # A JSON answer was decoded: look in its compact and its spaced form, as servers write either.
    compact = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return wanted in compact or wanted in body_text(body)


def call_error(result: outbound.OutboundResult) -> str:
    """A failed call in words: the status and the body's start, the refusal, or the network error with its type
    ("httpx.ReadTimeout: timed out")."""
    error = result.error
    if error is None:
        return "the call failed"
    if error.status_code is not None or error.type_name == outbound.REFUSED_TYPE:
        return error.message
    return f"{error.type_name}: {error.message}"


def run_http(check: HealthCheck) -> Outcome:
    request = outbound.OutboundRequest(
        method=check.method or "GET",
        url=check.url,
        success_statuses=success_statuses(list(check.expected_status or [])),
        timeout_s=float(check.timeout_s),
    )
    result = outbound.execute(request)
    if not result.ok:
        return Outcome(False, result.duration_ms, result.status_code, call_error(result)[:ERROR_CHARS])
    if check.body_contains and not body_has(result.body, check.body_contains):
        snippet = " ".join(body_text(result.body).split())[:200]
        error = f"HTTP {result.status_code}: the body does not contain {check.body_contains!r}"
        return Outcome(False, result.duration_ms, result.status_code, f"{error}: {snippet}"[:ERROR_CHARS])
    return Outcome(True, result.duration_ms, result.status_code)


# --- tcp -------------------------------------------------------------------------------------------------


class TargetRefused(Exception):
    """A tcp target the settings do not allow (the message says why)."""


def tcp_url(host: str, port: int) -> httpx.URL:
    """The host and port as the outbound guard checks them (an http URL, whose host and port are what counts),
    or TargetRefused: the allowlist names hosts and ports, whatever the protocol."""
    bare = host.strip().removeprefix("[").removesuffix("]")
    try:
        literal = ipaddress.ip_address(bare)
    except ValueError:
        literal = None
    netloc = f"[{literal.compressed}]" if literal is not None and literal.version == 6 else bare
    try:
        url = outbound.check_url(f"http://{netloc}:{port}/")
    except outbound.UrlRefused as error:
        raise TargetRefused(str(error)) from None
    # A host with URL syntax in it ("a.example/@b.example") would be read as another host: refuse it.
    if url.host.lower().rstrip(".") != (
        literal.compressed if literal is not None else bare.lower().rstrip(".")
    ):
        raise TargetRefused(f"{host!r} is not a host name or an IP address")
    if (url.port or 80) != port:
        raise TargetRefused(f"{host!r} is not a host name or an IP address")
    return url


def run_tcp(check: HealthCheck) -> Outcome:
    started = time.perf_counter()
    port = int(check.port or 0)
    try:
        # Checked again at every run: the allowlist may have changed since the check was saved.
        address = outbound.pinned_address(tcp_url(check.host, port))
    except (TargetRefused, outbound.UrlRefused) as error:
        return _failed(started, f"connection refused by Rebound: {error}")
    except OSError as error:
        return _failed(started, f"cannot resolve {check.host}: {error}")
    timeout = min(float(check.timeout_s), float(rebound("OUTBOUND_MAX_TIMEOUT_SECONDS")))
    try:
        with socket.create_connection((address, port), timeout=timeout):
            pass
    except TimeoutError:
        return _failed(started, f"no connection to {check.host}:{port} within {timeout:g} s")
    except OSError as error:
        return _failed(started, f"cannot connect to {check.host}:{port}: {error.strerror or error}")
    return Outcome(True, _ms(started))


# --- celery ----------------------------------------------------------------------------------------------


def run_celery(check: HealthCheck) -> Outcome:
    """Pass when at least one worker consuming the queue answers a ping within the check's timeout. Celery's app
    is the current one (config.celery's in Rebound's processes); this module never imports config."""
    started = time.perf_counter()
    control = celery.current_app.control
    timeout = float(check.timeout_s)
    discovery = min(timeout / 2, CELERY_DISCOVERY_MAX_S)
    try:
        replies = control.inspect(timeout=discovery).active_queues() or {}
    except Exception as error:  # the broker's own errors are many (kombu, redis, socket)
        return _failed(started, f"cannot ask the workers (broker unreachable?): {error}")
    workers = sorted(
        name
        for name, queues in replies.items()
        if any(isinstance(q, dict) and q.get("name") == check.queue for q in queues or [])
    )
    if not workers:
        return _failed(
            started,
            f"no worker consumes the queue {check.queue!r}: none of the {len(replies)} worker(s) that answered "
            f"within {discovery:g} s does",
        )
    remaining = max(timeout - (time.perf_counter() - started), 0.1)
    try:
        pongs = control.ping(destination=workers, timeout=remaining, limit=1) or []
    except Exception as error:
        return _failed(started, f"cannot ping the workers (broker unreachable?): {error}")
    if not pongs:
        named = ", ".join(workers[:5]) + (" …" if len(workers) > 5 else "")
        return _failed(
            started,
            f"no worker of the queue {check.queue!r} answered a ping within {remaining:.3g} s ({named})",
        )
    return Outcome(True, _ms(started))


# --- heartbeat -------------------------------------------------------------------------------------------


def window_s(check: HealthCheck) -> float:
    """How long a heartbeat check may go without a ping: its interval plus its grace."""
    return float(check.interval_s) + float(check.grace_s)


def silence_error(check: HealthCheck, last_ping_at: datetime | None) -> str:
    last = f"the last one at {last_ping_at.isoformat(timespec='seconds')}" if last_ping_at else "never pinged"
    return f"no ping within {window_s(check):g} s ({last})"


def heartbeat_verdict(
    check: HealthCheck, last_ping_ok: bool | None, last_ping_error: str, now: datetime
) -> Outcome:
    """A heartbeat check asked to run now (an operator, a verification): it passes when the last ping came within
    the window and said ok."""
    last = check.last_ping_at
    if last is None or (now - last).total_seconds() > window_s(check):
        return Outcome(False, error=silence_error(check, last))
    if last_ping_ok is False:
        return Outcome(False, error=f"the last ping reported a failure: {last_ping_error}"[:ERROR_CHARS])
    return Outcome(True)

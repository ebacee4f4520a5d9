"""The one way Rebound calls out over HTTP: server-side retries now; compensations, health checks and healing
later. Every caller goes through `parse_request` (when a request is handed to Rebound) and `execute` (when it is
made), so that the rules below hold everywhere:

* Only hosts in OUTBOUND_ALLOWED_HOSTS, only http and https, no credentials in URLs: checked when the request
  is parsed (a 400 before anything is stored) and again when it is made, after DNS resolution. A name that
  resolves to a link-local or cloud-metadata address (169.254.0.0/16, fe80::/10, fd00:ec2::254, ...), to an
  unspecified, multicast or reserved one, or to loopback (unless the URL itself names loopback) is refused
  unless that exact IP is allowlisted. The connection then goes to the address that was checked (the Host
  header and TLS name stay the original), so a second DNS answer cannot slip another address in.
* No redirects are followed: a 3xx is an answer like any other, a failure unless listed as a success.
* Timeouts come from the request, capped by OUTBOUND_MAX_TIMEOUT_SECONDS, and bound the whole call; the
  response body is read in chunks and the call fails once it passes OUTBOUND_MAX_RESPONSE_BYTES.
* `execute` never raises for network or HTTP failures: it answers an `OutboundResult` whose `error` is an
  `ErrorReport` ready for classification (type, message, status, Retry-After).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

import httpx
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, field_validator

from core.api.errors import InvalidInput
from core.api.validation import parse
from core.infra.conf import rebound
from recovery.errors.classification import ErrorReport, retry_after_from_headers

log = logging.getLogger(__name__)

DEFAULT_SUCCESS: tuple[int, ...] = tuple(range(200, 300))
DEFAULT_TIMEOUT_S = 10.0
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Headers the executor sets itself: letting a caller set them would let it talk past the checks (Host) or
# break the framing of the request.
RESERVED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer", "keep-alive"}
)
# Addresses that hand out cloud credentials, beyond the link-local range (AWS over IPv6, Alibaba, Oracle).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)
REFUSED_TYPE = "rebound.PermissionDenied"  # classified as permission denied: a human must allow the host
SNIPPET_CHARS = 500
_HOST_CHARS = re.compile(r"^[a-z0-9.\-_:]+$")
_TOKEN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$"


@dataclass(frozen=True)
class OutboundRequest:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None  # a JSON value (sent as JSON), a str (sent as is), or None
    success_statuses: tuple[int, ...] = DEFAULT_SUCCESS
    timeout_s: float = DEFAULT_TIMEOUT_S

    def to_json(self) -> dict[str, Any]:
        """What is stored (a retry job's `request`); `from_json` reads it back."""
        return {
            "method": self.method,
            "url": self.url,
            "headers": dict(self.headers),
            "body": self.body,
            "success_statuses": list(self.success_statuses),
            "timeout_s": self.timeout_s,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OutboundRequest:
        return cls(
            method=str(data.get("method", "GET")),
            url=str(data.get("url", "")),
            headers=dict(data.get("headers") or {}),
            body=data.get("body"),
            success_statuses=tuple(data.get("success_statuses") or DEFAULT_SUCCESS),
            timeout_s=float(data.get("timeout_s") or DEFAULT_TIMEOUT_S),
        )


@dataclass(frozen=True)
class OutboundResult:
    ok: bool
    status_code: int | None
    body: Any
    duration_ms: float
    error: ErrorReport | None = None


# --- parsing ---------------------------------------------------------------------------------------------

HeaderName = Annotated[str, StringConstraints(pattern=_TOKEN)]
HeaderValue = Annotated[str, StringConstraints(max_length=8000)]


class RequestIn(BaseModel):
    """An HTTP request as callers hand it to Rebound."""

    model_config = ConfigDict(extra="forbid")

    method: Annotated[str, StringConstraints(to_upper=True)] = "GET"
    url: Annotated[str, StringConstraints(min_length=1, max_length=2000, strip_whitespace=True)]
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict)
    body: Any = None
    success_statuses: list[Annotated[int, Field(ge=100, le=599)]] | None = Field(
        default=None, min_length=1, max_length=100, description="Default: 200-299."
    )
    timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0, le=3600)

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        if value not in METHODS:
            raise ValueError(f"must be one of {', '.join(METHODS)}")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"{name} is set by Rebound, not by the caller")
            if any(c in text for c in "\r\n\x00"):
                raise ValueError(f"the value of {name} holds a line break")
        return value


_REQUEST = TypeAdapter(RequestIn)


def parse_request(data: dict[str, Any], field_prefix: str = "request") -> OutboundRequest:
    """Validate a request before anything is stored: InvalidInput naming the field (`request.url`, ...)."""
    if not isinstance(data, dict):
        raise InvalidInput("must be an object with at least a url", field=field_prefix)
    item = parse(_REQUEST, data, prefix=field_prefix)
    try:
        check_url(item.url)
    except UrlRefused as error:
        raise InvalidInput(str(error), field=f"{field_prefix}.url") from None
    try:
        json.dumps(item.body, allow_nan=False)
    except (TypeError, ValueError):
        raise InvalidInput("must be a JSON value", field=f"{field_prefix}.body") from None
    return OutboundRequest(
        method=item.method,
        url=item.url,
        headers=dict(item.headers),
        body=item.body,
        success_statuses=tuple(dict.fromkeys(item.success_statuses or DEFAULT_SUCCESS)),
        timeout_s=min(item.timeout_s, float(rebound("OUTBOUND_MAX_TIMEOUT_SECONDS"))),
    )


# --- the allowlist ---------------------------------------------------------------------------------------


class UrlRefused(Exception):
    """A URL or an address the settings do not allow (the message says why)."""


@dataclass(frozen=True)
class AllowEntry:
    host: str  # lower-case; for "*.internal.example", ".internal.example"
    port: int | None  # None: any port
    wildcard: bool

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.wildcard:
            return host.endswith(self.host) and len(host) > len(self.host) and _ip(host) is None
        return host == self.host


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _normal_host(host: str) -> str:
    host = host.lower().rstrip(".")
    address = _ip(host)
    return address.compressed if address is not None else host


def parse_entry(text: str) -> AllowEntry:
    """`api.example.com`, `*.internal.example`, `127.0.0.1:8080`, `[::1]:8080`, `::1`."""
    text = text.strip().lower()
    port: int | None = None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    else:
        host = text
    wildcard = host.startswith("*.")
    return AllowEntry(host=host[1:] if wildcard else _normal_host(host), port=port, wildcard=wildcard)


def allowlist() -> list[AllowEntry]:
    entries = []
    for text in rebound("OUTBOUND_ALLOWED_HOSTS"):
        try:
            entries.append(parse_entry(text))
        except ValueError:
            log.warning("ignoring an unreadable OUTBOUND_ALLOWED_HOSTS entry: %r", text)
    return entries


def check_url(url: str) -> httpx.URL:
    """The URL, parsed, if the settings allow a call to it; UrlRefused saying why otherwise."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as error:
        raise UrlRefused(f"not a valid URL: {error}") from None
    if parsed.scheme not in ("http", "https"):
        raise UrlRefused(f"the scheme {parsed.scheme or '(none)'!r} is not allowed: only http and https")
    host = _normal_host(parsed.host)
    if not host or not _HOST_CHARS.match(host):
        raise UrlRefused("the URL needs a valid host name")
    if parsed.userinfo:
        raise UrlRefused("credentials in the URL are not allowed: send them in a header")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if not any(entry.matches(host, port) for entry in allowlist()):
        raise UrlRefused(
            f"the host {host}:{port} is not allowed: add it to OUTBOUND_ALLOWED_HOSTS to let Rebound call it"
        )
    return parsed


def refusal(address: str, host: str) -> str | None:
    """Why a resolved address may not be called, or None. The exact IP in the allowlist lifts every refusal."""
    ip = _ip(address)
    if ip is None:
        return "not an IP address"
    if any(not e.wildcard and e.host == ip.compressed for e in allowlist()):
        return None
    checked = getattr(ip, "ipv4_mapped", None) or ip
    if checked in METADATA_ADDRESSES or ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if checked.is_link_local:
        return "a link-local address (where cloud metadata services live)"
    if checked.is_loopback:
        # Loopback is fine when the URL says so (an allowlisted 127.0.0.1:8080 or localhost), not when an
        # outside name suddenly resolves to it.
        named = _ip(host) is not None or host == "localhost" or host.endswith(".localhost")
        return None if named else "loopback, reached through a name that is not (DNS rebinding?)"
    if checked.is_unspecified or checked.is_multicast or checked.is_reserved:
        return "an unspecified, multicast or reserved address"
    return None


def resolve(host: str, port: int) -> list[str]:
    """The host's addresses (a function of its own so that a test can stand in for DNS)."""
    address = _ip(host)
    if address is not None:
        return [address.compressed]
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def pinned_address(url: httpx.URL) -> str:
    """The address to connect to, after every address the name resolves to has been checked."""
    host = _normal_host(url.host)
    addresses = resolve(host, url.port or (443 if url.scheme == "https" else 80))
    if not addresses:
        raise socket.gaierror(f"{host} has no address")
    for address in addresses:
        why = refusal(address, host)
        if why:
            raise UrlRefused(f"{host} resolves to {address}, {why}: refused unless that IP is allowlisted")
    return addresses[0]


# --- redaction -------------------------------------------------------------------------------------------

_SECRET_NAME = re.compile(
    r"authorization|cookie|api[-_]?key|apikey|token|secret|password|passwd|session|signature|credential|"
    r"^x-amz-security|private[-_]?key",
    re.I,
)
REDACTED = "[redacted]"


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name)) and name.lower() != "idempotency-key"


def redact_by_name(values: dict[str, Any] | None) -> dict[str, Any]:
    """Values under secret-looking names hidden: headers, a task's keyword arguments."""
    return {k: (REDACTED if is_secret_name(k) else v) for k, v in (values or {}).items()}


redact_headers = redact_by_name


def redact_url(url: str) -> str:
    """A URL with the values of secret-looking query parameters (`api_key=...`) hidden."""
    head, sep, query = url.partition("?")
    if not sep:
        return url
    fragment = ""
    if "#" in query:
        query, fragment = query.split("#", 1)
        fragment = "#" + fragment
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(is_secret_name(k) for k, _ in pairs):
        return url
    hidden = [(k, REDACTED if is_secret_name(k) else v) for k, v in pairs]
    return f"{head}?{urlencode(hidden)}{fragment}"


def redact_request(data: dict[str, Any] | None) -> dict[str, Any]:
    """A stored request as every output shows it: secret headers and query values hidden."""
    data = dict(data or {})
    if "headers" in data:
        data["headers"] = redact_headers(data["headers"])
    if isinstance(data.get("url"), str):
        data["url"] = redact_url(data["url"])
    return data


def redact_task(data: dict[str, Any] | None) -> dict[str, Any]:
    """A stored task call ({name, args, kwargs}) as every output shows it: secret-looking kwargs hidden."""
    data = dict(data or {})
    if isinstance(data.get("kwargs"), dict):
        data["kwargs"] = redact_by_name(data["kwargs"])
    return data


# --- executing -------------------------------------------------------------------------------------------

_clients: dict[int, httpx.Client] = {}
_clients_lock = threading.Lock()


def _client() -> httpx.Client:
    """One client (and TLS context) per process: after a fork the child makes its own."""
    pid = os.getpid()
    client = _clients.get(pid)
    if client is None:
        with _clients_lock:
            client = _clients.get(pid)
            if client is None:
                # trust_env off: a proxy from the environment would connect to a host nobody checked.
                client = httpx.Client(trust_env=False, follow_redirects=False)
                _clients[pid] = client
    return client


def _failure(
    started: float,
    type_name: str,
    message: str,
    status_code: int | None = None,
    body: Any = None,
    retry_after_s: float | None = None,
) -> OutboundResult:
    report = ErrorReport(
        type_name=type_name, message=message, status_code=status_code, retry_after_s=retry_after_s
    )
    return OutboundResult(False, status_code, body, _ms(started), report)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


class _BodyTooLarge(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(status_code)
        self.status_code = status_code


class _TooSlow(Exception):
    pass


def _read(response: httpx.Response, limit: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes(65536):
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge(response.status_code)
        if time.perf_counter() > deadline:
            # httpx's timeouts bound each read; a server dripping bytes must not hold a worker for ever.
            raise _TooSlow
        chunks.append(chunk)
    return b"".join(chunks)


def decode_body(content: bytes, content_type: str) -> Any:
    text = content.decode("utf-8", errors="replace")
    if "json" in content_type.lower() and text.strip():
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _send_args(req: OutboundRequest) -> dict[str, Any]:
    if req.body is None:
        return {}
    if isinstance(req.body, str):
        return {"content": req.body.encode()}
    return {"json": req.body}


def execute(req: OutboundRequest) -> OutboundResult:
    """Make the call. Never raises for network or HTTP failures: they come back as the result's `error`."""
    started = time.perf_counter()
    try:
        url = check_url(req.url)  # again: the settings may have changed since the request was parsed
        address = pinned_address(url)
    except UrlRefused as error:
        return _failure(started, REFUSED_TYPE, f"outbound call refused: {error}")
    except OSError as error:  # DNS: socket.gaierror is "connection failed", retryable
        return _failure(started, f"socket.{type(error).__name__}", str(error) or "name resolution failed")
    timeout = min(req.timeout_s, float(rebound("OUTBOUND_MAX_TIMEOUT_SECONDS")))
    limit = int(rebound("OUTBOUND_MAX_RESPONSE_BYTES"))
    headers = {**req.headers, "Host": url.netloc.decode("ascii")}
    extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
    try:
        with _client().stream(
            req.method,
            url.copy_with(host=address),
            headers=headers,
            timeout=httpx.Timeout(timeout),
            extensions=extensions,
            **_send_args(req),
        ) as response:
            content = _read(response, limit, started + timeout)
    except _BodyTooLarge as error:
        return _failure(
            started,
            "rebound.ResponseTooLarge",
            f"the response body is larger than {limit} bytes (OUTBOUND_MAX_RESPONSE_BYTES)",
            error.status_code,
        )
    except _TooSlow:
        return _failure(started, "httpx.ReadTimeout", f"the response did not finish within {timeout:g} s")
    except httpx.HTTPError as error:
        return _failure(started, f"httpx.{type(error).__name__}", str(error) or type(error).__name__)
    except OSError as error:
        return _failure(started, type(error).__name__, str(error) or type(error).__name__)
    body = decode_body(content, response.headers.get("content-type", ""))
    if response.status_code in req.success_statuses:
        return OutboundResult(True, response.status_code, body, _ms(started), None)
    return _failure(
        started,
        "HTTPStatusError",
        _status_message(response, body),
        response.status_code,
        body,
        retry_after_from_headers(dict(response.headers)),
    )


def _status_message(response: httpx.Response, body: Any) -> str:
    message = f"HTTP {response.status_code} {response.reason_phrase}".strip()
    text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    snippet = " ".join(text.split())[:SNIPPET_CHARS]
    # The body often says more than the status (a quota exhausted behind a 429): classification reads it.
    return f"{message}: {snippet}" if snippet else message

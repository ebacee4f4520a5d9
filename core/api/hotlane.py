"""The hot lane: the agents' busiest calls (`POST /api/v1/errors`, `POST /api/v1/breakers/{service}/permit`, and a
checkpoint's save, `POST /api/v1/tasks/{task_id}/checkpoints`) answered without the middleware chain and DRF's
dispatch, when the request is the plain case they always are.

Measured in one process (CPU per request, WSGI calls without a socket, 2026-12-04), a one-error report cost
707 µs through the full stack and the bare view `GET /healthz` 215 µs: the report itself (parse, classify, one
Redis script) was about 150 µs; the rest was the thirteen middleware layers (each a wrapper, most doing nothing
for a bearer-key JSON call: sessions, CSRF, messages, htmx, whitenoise, CommonMiddleware's header scan),
django-prometheus resolving 18 label sets per request, and DRF's request wrapping, authenticators, permissions,
negotiation, renderer and response finalisation. On the lane the same report costs 322 µs and a permit 250 µs
(543 before): Django's handler (the WSGI request, the request_started/finished signals that keep database
connections healthy) about 42 µs, the lane's own checks and headers about 20 µs, the metrics about 20 µs
(multiprocess mode writes each sample to its mmap file), the rest the view's own work.

The lane is the first middleware. A request takes it only when it is the plain case: POST to a registered route
(the URLconf's own path, checked to resolve to the registered view), no query string, a `Content-Length`
within API_MAX_BODY_BYTES (no chunked body), a JSON body where the route reads one (`Content-Type:
application/json`), a Host in ALLOWED_HOSTS, no `Idempotency-Key`, and a bearer key this process verified
within API_KEY_CACHE_SECONDS whose principal the view's permission classes admit. Anything else, before any
side effect, goes down the full stack unchanged, which answers it as it always has (413, 411, 400 for the
query, 401, 403, 415, 503 for a key that cannot be verified, the session and CSRF path of operators, keyed
requests); the bare view `GET /healthz` meets one comparison here.

What the lane keeps, the same as the full stack: the key cache and the view's permission classes; the body
parsed by the API's one strict parser (core/api/parsers.py); the view's own handler (the DRF view calls the
same function); errors mapped by core/api/exceptions.py (an uncaught exception answered by Django's own
`response_for_exception`, logged and counted, as a view's would be); the answer's JSON as DRF's renderer writes
it and every header the full stack sets (Allow, X-Request-ID, Content-Length, SecurityMiddleware's and
XFrameOptionsMiddleware's, by calling them); the request id in the log context; and every metric django-
prometheus counts for a request, through label children bound once per route and status.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.exception import response_for_exception
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware
from django.urls import NoReverseMatch, Resolver404, get_resolver, resolve, reverse
from django_prometheus.middleware import Metrics
from rest_framework.utils.encoders import JSONEncoder
from rest_framework.views import APIView

from core.access.authentication import Principal, cached_principal
from core.api.exceptions import exception_handler
from core.api.parsers import loads
from core.infra import request_ids
from core.infra.middleware import request_id_of

# The answer a handler gives: its status and its JSON body.
Answer = tuple[int, Any]
_PLACEHOLDER = "hotlaneargument"
_JSON = "application/json"


@dataclass
class HotRequest:
    """What a route's handler reads of a request (a DRF Request has the same attributes)."""

    user: Principal
    data: Any
    method: str = "POST"


class Caller(Protocol):
    """What a route's handler may read of its request: a DRF Request or a HotRequest."""

    @property
    def user(self) -> Any: ...

    @property
    def data(self) -> Any: ...


# handler(request, **path arguments) -> (status, body): the DRF view calls the same function.
Handler = Callable[..., Answer]


@dataclass(frozen=True)
class Route:
    url_name: str
    view: type[APIView]
    handler: Handler
    json_body: bool
    params: tuple[str, ...]  # the path's arguments, in the URLconf's `str` converter
    raw_body: bool = False  # the handler parses the JSON body itself (`data` is the body's bytes)


@dataclass
class _Bound:
    """A route as this process's URLconf has it, with what its answers share."""

    route: Route
    path: str  # as reverse() gives it, arguments as placeholders
    pattern: re.Pattern[str]
    view_name: str
    allow: str
    metrics: _RouteMetrics


_routes: list[Route] = []


def route(
    url_name: str,
    view: type[APIView],
    handler: Handler,
    *,
    json_body: bool,
    params: tuple[str, ...] = (),
    raw_body: bool = False,
) -> None:
    """Serve `url_name` (`v1:errors`) on the hot lane with `handler`, which `view` (the route's DRF view, the
    schema's source) calls too. Called where the view is defined. With `raw_body`, the handler is given the JSON
    body as bytes, to parse with its own parser (a checkpoint's state may hold what the API's parser refuses)."""
    if all(r.url_name != url_name for r in _routes):
        _routes.append(Route(url_name, view, handler, json_body, params, raw_body))


class _RouteMetrics:
    """django-prometheus's request metrics for one route, with the label children bound once: the same series
    PrometheusBeforeMiddleware and PrometheusAfterMiddleware count, without a `labels()` look-up each."""

    def __init__(self, view_name: str) -> None:
        m = Metrics.get_instance()
        self.m = m
        self.view_name = view_name
        self.by_method = m.requests_by_method.labels(method="POST")
        self.by_transport = {t: m.requests_by_transport.labels(transport=t) for t in ("http", "https")}
        self.by_view = {
            t: m.requests_by_view_transport_method.labels(view=view_name, transport=t, method="POST")
            for t in ("http", "https")
        }
        self.latency_by_view = m.requests_latency_by_view_method.labels(view=view_name, method="POST")
        self.by_charset = m.responses_by_charset.labels(charset=settings.DEFAULT_CHARSET)
        # A DRF Response is a template response without a template: the full stack counts it under "None".
        self.by_template = m.responses_by_templatename.labels(templatename="None")
        self.by_status: dict[int, tuple[Any, Any]] = {}

    def request(self, request: HttpRequest, transport: str, length: int) -> None:
        m = self.m
        m.requests_total.inc()
        self.by_method.inc()
        self.by_transport[transport].inc()
        if request.META.get("HTTP_X_REQUESTED_WITH") == "XMLHttpRequest":
            m.requests_ajax.inc()
        m.requests_body_bytes.observe(length)
        self.by_view[transport].inc()

    def response(self, status: int, size: int, elapsed: float, *, drf: bool) -> None:
        pair = self.by_status.get(status)
        if pair is None:
            label = str(status)
            pair = (
                self.m.responses_by_status.labels(status=label),
                self.m.responses_by_status_view_method.labels(
                    status=label, view=self.view_name, method="POST"
                ),
            )
            self.by_status[status] = pair
        if drf:
            self.by_template.inc()
        pair[0].inc()
        pair[1].inc()
        self.by_charset.inc()
        self.m.responses_body_bytes.observe(size)
        self.latency_by_view.observe(elapsed)
        self.m.responses_total.inc()
        self.m.requests_latency_before.observe(elapsed)

    def exception(self, error: BaseException) -> None:
        self.m.exceptions_by_type.labels(type=type(error).__name__).inc()
        self.m.exceptions_by_view.labels(view=self.view_name).inc()


@dataclass
class _Table:
    urlconf: str
    exact: dict[str, _Bound] = field(default_factory=dict)
    patterns: list[_Bound] = field(default_factory=list)


def _bind(r: Route) -> _Bound | None:
    """The route's path as the URLconf builds it (its arguments as the path converter `str` takes them), or None
    where this URLconf does not route it to the registered view (the lane then leaves it to the full stack)."""
    params = r.params
    try:
        path = reverse(r.url_name, kwargs={p: f"{_PLACEHOLDER}{i}" for i, p in enumerate(params)})
        match = resolve(path)
    except (NoReverseMatch, Resolver404):
        return None
    if getattr(match.func, "view_class", None) is not r.view:
        return None
    regex = re.escape(path)
    for i, p in enumerate(params):
        regex = regex.replace(f"{_PLACEHOLDER}{i}", f"(?P<{p}>[^/]+)")
    view_name = match.view_name
    allow = ", ".join(r.view().allowed_methods)  # DRF's Allow header
    return _Bound(r, path, re.compile(regex), view_name, allow, _RouteMetrics(view_name))


def _table() -> _Table:
    get_resolver().url_patterns  # noqa: B018 (imports the URLconf, whose views register their routes)
    table = _Table(str(settings.ROOT_URLCONF))
    for r in _routes:
        bound = _bind(r)
        if bound is None:
            continue
        if bound.pattern.groups:
            table.patterns.append(bound)
        else:
            table.exact[bound.path] = bound
    return table


class HotLaneMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        self.table: _Table | None = None
        self.security = SecurityMiddleware(get_response)
        self.xframe = XFrameOptionsMiddleware(get_response)
        # CommonMiddleware refuses these user agents with a 403: where any are configured, the full stack checks.
        self.agents_checked = bool(settings.DISALLOWED_USER_AGENTS)

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if request.method != "POST":  # the bare view and every read: one comparison
            return self.get_response(request)
        found = self._match(request.path_info)
        if found is None:
            return self.get_response(request)
        bound, kwargs = found
        length = self._plain(request, bound.route)
        user = self._principal(request, bound.route) if length is not None else None
        if length is None or user is None:
            return self.get_response(request)
        return self._serve(request, bound, kwargs, user, length)

    def _match(self, path: str) -> tuple[_Bound, dict[str, str]] | None:
        table = self.table
        if table is None or table.urlconf != settings.ROOT_URLCONF:
            table = self.table = _table()
        bound = table.exact.get(path)
        if bound is not None:
            return bound, {}
        for candidate in table.patterns:
            m = candidate.pattern.fullmatch(path)
            if m:
                return candidate, m.groupdict()
        return None

    def _plain(self, request: HttpRequest, r: Route) -> int | None:
        """The body's length when the request is the plain case this lane serves, else None (full stack)."""
        meta = request.META
        if (
            self.agents_checked
            or meta.get("QUERY_STRING")
            or "HTTP_IDEMPOTENCY_KEY" in meta
            or "HTTP_TRANSFER_ENCODING" in meta
            or request.path != request.path_info
            or "\x00" in request.path
        ):
            return None
        try:
            length = int(meta.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return None
        if length < 0 or length > int(settings.API_MAX_BODY_BYTES):
            return None
        if r.json_body and (length == 0 or meta.get("CONTENT_TYPE") != _JSON):
            return None
        try:
            request.get_host()
        except DisallowedHost:
            return None
        if self.security.process_request(request) is not None:  # an HTTPS redirect, when configured
            return None
        return length

    def _principal(self, request: HttpRequest, r: Route) -> Principal | None:
        """The caller, from a key this process verified recently, if the view's permissions admit it."""
        scheme, _, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        user = cached_principal(token)
        if user is None:
            return None
        probe = HotRequest(user, None)
        if not all(p().has_permission(probe, None) for p in r.view.permission_classes):  # type: ignore[arg-type]
            return None
        return user

    def _serve(
        self, request: HttpRequest, bound: _Bound, kwargs: dict[str, str], user: Principal, length: int
    ) -> HttpResponseBase:
        started = time.perf_counter()
        metrics = bound.metrics
        metrics.request(request, "https" if request.is_secure() else "http", length)
        request_id = request_id_of(request)
        request_ids.set_request_id(request_id)
        try:
            response = self._answer(request, bound, kwargs, user)
        finally:
            request_ids.set_request_id(None)
        # What the middleware the lane skips would add to this answer (CommonMiddleware: Content-Length).
        response["X-Request-ID"] = request_id
        response["Content-Length"] = str(len(response.content))
        self.security.process_response(request, response)
        self.xframe.process_response(request, response)
        # Every answer but an uncaught failure's (Django's JSON 500, without Allow) is one DRF would have given.
        drf = response.has_header("Allow")
        metrics.response(response.status_code, len(response.content), time.perf_counter() - started, drf=drf)
        return response

    def _answer(
        self, request: HttpRequest, bound: _Bound, kwargs: dict[str, str], user: Principal
    ) -> HttpResponse:
        headers: dict[str, str] = {}
        try:
            r = bound.route
            data = (request.body if r.raw_body else loads(request.body)) if r.json_body else None
            status, body = r.handler(HotRequest(user, data), **kwargs)
        except Exception as error:
            mapped = exception_handler(error, {"request": request, "view": None})
            if mapped is None:  # a bug: answered, logged and counted as Django answers any view's
                bound.metrics.exception(error)
                failed = response_for_exception(request, error)
                assert isinstance(failed, HttpResponse)
                return failed
            status, body = mapped.status_code, mapped.data
            headers = {k: v for k, v in mapped.items() if k != "Content-Type"}
        response = HttpResponse(render(body), content_type=_JSON, status=status)
        response["Allow"] = bound.allow  # DRF's finalize_response
        for name, value in headers.items():
            response[name] = value
        return response


def render(body: Any) -> bytes:
    """JSON exactly as DRF's JSONRenderer writes it with the project's settings: compact, UTF-8, no NaN, its
    encoder for dates and decimals, and U+2028/U+2029 escaped."""
    text = json.dumps(body, cls=JSONEncoder, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if "\u2028" in text or "\u2029" in text:
        text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return text.encode()

"""Liveness (/healthz) and readiness (/readyz).

Readiness checks what this process needs to serve: the database, and Redis whenever one is configured (the
breakers' state, the key caches' peers, the intake's buffer and the Celery broker live there). Higher floors add
their own checks with `register_readiness_check` in their AppConfig.ready (for instance the intake buffer's
durability): core never imports them. A failed check is a 503 naming it, in the API's error envelope plus
`checks`, so that a load balancer stops sending traffic and an operator sees why.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from core.infra import redisconn

log = logging.getLogger(__name__)

# A check returns None when all is well, or (ready, detail) to say more (the detail is shown under its name);
# raising says it failed, and why.
ReadinessCheck = Callable[[], tuple[bool, dict[str, Any]] | None]

_checks: dict[str, ReadinessCheck] = {}
_lock = threading.Lock()


def register_readiness_check(name: str, check: ReadinessCheck) -> None:
    """Add (or replace, by name) a check that /readyz runs on every call. Keep it fast: a probe is called
    every few seconds, and its answer must come back well within the balancer's timeout."""
    with _lock:
        _checks[name] = check


def unregister_readiness_check(name: str) -> None:
    with _lock:
        _checks.pop(name, None)


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def check_redis() -> None:
    """Redis answers, when one is configured (the embedded mode has none, and needs none)."""
    if settings.REDIS_URL:
        redisconn.client().ping()


register_readiness_check("database", check_database)
register_readiness_check("redis", check_redis)


def live(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. No database, no auth (also the benchmarks' bare JSON view)."""
    return JsonResponse({"status": "ok"})


def run_checks() -> tuple[dict[str, Any], list[dict[str, str]]]:
    """What each check found (every check runs, so that one answer names every failure), and the failures as
    the error envelope's `errors`."""
    with _lock:
        checks = list(_checks.items())
    results: dict[str, Any] = {}
    failures: list[dict[str, str]] = []
    for name, check in checks:
        try:
            found = check()
        except Exception as error:  # any failure of a check means not ready, and says why
            results[name] = f"{type(error).__name__}: {error}".strip()[:300]
            failures.append({"field": name, "message": results[name]})
            log.warning("readiness check %s failed: %s", name, results[name])
            continue
        if found is None:
            results[name] = "ok"
            continue
        ready, detail = found
        results[name] = {"status": "ok" if ready else "failed", **detail}
        if not ready:
            failures.append({"field": name, "message": str(detail.get("why") or detail)[:300]})
            log.warning("readiness check %s failed: %s", name, detail)
    return results, failures


def ready(request: HttpRequest) -> JsonResponse:
    """Readiness: every registered check passes (200), or a 503 naming each that failed."""
    results, failures = run_checks()
    if not failures:
        return JsonResponse({"status": "ok", "checks": results})
    body = {
        "status": "unavailable",
        "detail": f"Not ready: {', '.join(f['field'] for f in failures)} failed.",
        "code": "unavailable",
        "errors": failures,
        "checks": results,
    }
    return JsonResponse(body, status=503, headers={"Retry-After": "5"})

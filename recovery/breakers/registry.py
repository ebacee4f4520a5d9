"""The service registry as the hot path sees it: each process keeps Service rows for
BREAKER_CONFIG_CACHE_SECONDS, so a permit costs no database query; an edit (settings or an override) is in force
at once in the process that made it and within that time everywhere else."""

from __future__ import annotations

import math
import threading
import time
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from core.api.errors import NotFound
from core.infra.conf import rebound
from recovery.breakers import logic
from recovery.breakers.models import Service

_lock = threading.Lock()
# The largest wait multiplier (the API refuses more): the wait grows by it per failed trial, up to max_wait_s.
MAX_MULTIPLIER = 100.0
_cache: dict[str, tuple[float, Service]] = {}


def cap_ms() -> int:
    """MAX_RETRY_AFTER_S in ms: no wait is ever longer, whatever a service's settings or a Retry-After say."""
    return int(float(rebound("MAX_RETRY_AFTER_S")) * 1000)


def _finite(value: float, low: float, high: float) -> float:
    """A stored setting within its range: rows written before the settings had a ceiling may hold anything
    up to 1e308 (or NaN, which Django's validators let through)."""
    number = float(value)
    return low if math.isnan(number) else max(low, min(high, number))


def _wait_ms(seconds: float, cap: int) -> int:
    return int(_finite(float(seconds) * 1000, 1, cap))


def config_of(service: Service) -> logic.Config:
    cap = cap_ms()
    return logic.Config(
        threshold=service.failure_rate_threshold,
        window_type=service.window_type,
        window_size=service.window_size,
        minimum_calls=service.minimum_calls,
        consecutive=service.consecutive_failures,
        slow_ms=service.slow_call_ms,
        wait_ms=_wait_ms(service.wait_duration_s, cap),
        half_open_max=service.half_open_max_calls,
        success_threshold=service.success_threshold,
        multiplier=_finite(service.wait_multiplier, 1.0, MAX_MULTIPLIER),
        max_wait_ms=_wait_ms(service.max_wait_s, cap),
        trial_ttl_ms=int(rebound("BREAKER_TRIAL_PERMIT_TTL_SECONDS") * 1000),
        cap_ms=cap,
    )


def override_in_force(service: Service, now: datetime | None = None) -> str:
    """The override that applies now: `auto` once an override's expiry has passed, even before beat clears it."""
    if service.override == Service.Override.AUTO:
        return Service.Override.AUTO
    if service.override_until is not None and service.override_until <= (now or timezone.now()):
        return Service.Override.AUTO
    return service.override


def get(name: str) -> Service:
    """The service, from the process cache; registered with defaults on first sight unless that is turned off."""
    now = time.monotonic()
    cached = _cache.get(name)
    if cached is not None and cached[0] > now:
        return cached[1]
    service = Service.objects.filter(name=name).first()
    if service is None:
        service = _register(name)
    with _lock:
        _cache[name] = (now + rebound("BREAKER_CONFIG_CACHE_SECONDS"), service)
    return service


def _register(name: str) -> Service:
    if not rebound("AUTO_REGISTER_SERVICES"):
        raise NotFound(
            f"Unknown service {name!r}: automatic registration is off (AUTO_REGISTER_SERVICES); "
            "an operator must register it first.",
            field="service",
        )
    try:
        with transaction.atomic():  # a savepoint: a lost race must not spoil the caller's transaction
            return Service.objects.create(name=name, auto_registered=True)
    except IntegrityError:
        # Another process registered it first: use theirs.
        return Service.objects.get(name=name)


def forget(name: str | None = None) -> None:
    with _lock:
        if name is None:
            _cache.clear()
        else:
            _cache.pop(name, None)

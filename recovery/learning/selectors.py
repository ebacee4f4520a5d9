"""Reads of error learning: the effectiveness rows with their figures decayed to now (the API, the admin, MCP),
and what the planner should trust of each action it may choose for one error (cached a few seconds per
process, as the policies are: the planner asks on every plan)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from core.infra.conf import rebound
from recovery.learning import stats
from recovery.learning.models import Effectiveness

Scope = Effectiveness.Scope
# Distinct (fingerprint, service, error class) entries this process keeps at most: past it, it starts afresh
# (a storm of new patterns must not grow the cache without end).
CACHE_ENTRIES = 10_000


@dataclass(frozen=True)
class Row:
    scope: str  # pattern | service
    fingerprint: str
    service: str
    error_class: str
    action: str
    figures: stats.Figures  # decayed to `now`
    total_tries: int
    total_successes: int
    total_unknown: int
    first_result_at: datetime
    last_result_at: datetime


@dataclass(frozen=True)
class Learned:
    """What the planner needs of one action for one error: the figure it should trust."""

    action: str
    scope: str  # pattern when that row is trusted, else service when that is trusted, else the row with more tries
    figures: stats.Figures


def _settings() -> tuple[float, float]:
    """(half-life in seconds, tries before a figure is trusted), read at call time."""
    return float(rebound("LEARNING_HALF_LIFE_DAYS")) * stats.DAY_S, float(rebound("LEARNING_MIN_TRIES"))


def figures_of(row: Effectiveness, now_s: float | None = None) -> stats.Figures:
    """One row's figures decayed to now (or `now_s`), with the settings in force (the admin's columns)."""
    half_life_s, min_tries = _settings()
    return _figures(row, time.time() if now_s is None else now_s, half_life_s, min_tries)


def _figures(row: Effectiveness, now_s: float, half_life_s: float, min_tries: float) -> stats.Figures:
    return stats.figures(row.sums(), now_s=now_s, half_life_s=half_life_s, min_tries=min_tries)


def _row(row: Effectiveness, figures: stats.Figures) -> Row:
    return Row(
        scope=row.scope,
        fingerprint=row.fingerprint,
        service=row.service,
        error_class=row.error_class,
        action=row.action,
        figures=figures,
        total_tries=row.total_tries,
        total_successes=row.total_successes,
        total_unknown=row.total_unknown,
        first_result_at=row.first_result_at,
        last_result_at=row.last_result_at,
    )


def _group(row: Row) -> tuple[str, ...]:
    # The (scope, key) a row belongs to: its pattern, or its service and error class.
    if row.scope == Scope.PATTERN:
        return (row.scope, row.fingerprint)
    return (row.scope, row.service, row.error_class)


def statistics(
    *,
    service: str | None = None,
    fingerprint: str | None = None,
    error_class: str | None = None,
    now: datetime | None = None,
    limit: int = 500,
) -> list[Row]:
    """For the API, the admin and MCP: rows of a service (both scopes) and/or a pattern, best lower bound first
    within each (scope, key). No filter: every row (up to limit). Uses the half-life and min-tries settings."""
    half_life_s, min_tries = _settings()
    now_s = (now or timezone.now()).timestamp()
    rows = Effectiveness.objects.all()
    if service:
        rows = rows.filter(service=service)
    if fingerprint:
        rows = rows.filter(scope=Scope.PATTERN, fingerprint=fingerprint)
    if error_class is not None:
        rows = rows.filter(error_class=error_class)
    # Whole groups first (the model's ordering keeps a group's rows together), then the best within each.
    found = [_row(r, _figures(r, now_s, half_life_s, min_tries)) for r in rows[: max(0, limit)]]
    return sorted(found, key=lambda r: (_group(r), -r.figures.lower_bound, -r.figures.tries, r.action))


# --- the planner ---------------------------------------------------------------------------------------------

CacheKey = tuple[str, str, str]
_lock = threading.Lock()
_cache: dict[CacheKey, tuple[float, dict[str, Learned]]] = {}


def forget() -> None:
    """Drop this process's copy (after a reset here, and in tests)."""
    with _lock:
        _cache.clear()


def _choose(pattern: Learned | None, service: Learned | None) -> Learned:
    """The pattern row if trusted, else the service row if trusted, else the better filled of the two."""
    if pattern is not None and pattern.figures.trusted:
        return pattern
    if service is not None and service.figures.trusted:
        return service
    if pattern is None:
        assert service is not None
        return service
    if service is None or pattern.figures.tries >= service.figures.tries:
        return pattern
    return service


def _learned(fingerprint: str, service: str, error_class: str) -> dict[str, Learned]:
    half_life_s, min_tries = _settings()
    now_s = time.time()
    by_scope: dict[str, dict[str, Learned]] = {Scope.PATTERN: {}, Scope.SERVICE: {}}
    queries = [Effectiveness.objects.filter(scope=Scope.SERVICE, service=service, error_class=error_class)]
    if fingerprint:
        queries.append(Effectiveness.objects.filter(scope=Scope.PATTERN, fingerprint=fingerprint))
    for query in queries:
        for row in query:
            if stats.choosable(row.action):
                figures = _figures(row, now_s, half_life_s, min_tries)
                by_scope[row.scope][row.action] = Learned(row.action, row.scope, figures)
    patterns, services = by_scope[Scope.PATTERN], by_scope[Scope.SERVICE]
    return {
        action: _choose(patterns.get(action), services.get(action))
        for action in sorted(patterns.keys() | services.keys())
    }


def for_planner(*, fingerprint: str, service: str, error_class: str) -> dict[str, Learned]:
    """Per choosable action key (stats.choosable), the figure to use: the pattern row if trusted, else the
    (service, error_class) row if trusted, else the better-filled of the two (trusted False). Two indexed
    queries at most, cached in-process for LEARNING_CACHE_SECONDS per (fingerprint, service, error_class)
    (0: no cache); `forget()` drops the cache. An empty dict when nothing was learned; a database error
    propagates (the planner's caller handles it)."""
    ttl = float(rebound("LEARNING_CACHE_SECONDS"))
    key = (fingerprint, service, error_class)
    if ttl > 0:
        hit = _cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < ttl:
            return dict(hit[1])
    learned = _learned(fingerprint, service, error_class)
    if ttl > 0:
        with _lock:
            if len(_cache) >= CACHE_ENTRIES:
                _cache.clear()
            _cache[key] = (time.monotonic(), learned)
    return dict(learned)

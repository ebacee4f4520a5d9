"""The fleet page's reads: one row per service, worst first, and the banner of everything forced.

Every column comes from one bulk read of its room (the breaker store in one round trip, the traffic counters in
one more, one query each for transitions, health, degradation, escalations and patterns), so the page costs the
same number of queries for 5 services as for 500 (tests/console/test_fleet.py counts them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone
from django.utils.safestring import SafeString

from console.sparklines import sparkline
from core.api.errors import InvalidInput
from healing.checks import selectors as check_selectors
from healing.escalations import selectors as escalation_selectors
from recovery.breakers import selectors as breaker_selectors
from recovery.breakers import traffic
from recovery.degradation import selectors as degradation_selectors
from recovery.errors import selectors as error_selectors

WINDOW_MIN = 60  # the sparkline's and the error rate's span
# The states a row's data-breaker takes (the browser tests read them): a disabled breaker never blocks, so it
# is drawn as forced closed, its pill saying "disabled".
STATES = ("closed", "open", "half_open", "forced_open", "forced_closed", "unknown")
DRAWN_AS = {"disabled": "forced_closed"}
OVERRIDES = ("forced_open", "forced_closed", "disabled")
ESCALATION_LEVELS = ("emergency", "critical", "warning", "info")  # worst first, as the cells show them
# Worst first: a row's rank is its worst finding (lower is worse); a row with none is all fine.
BREAKER_RANK = {"open": 0, "half_open": 1, "forced_open": 2, "forced_closed": 2, "disabled": 2, "unknown": 2}
HEALTH_FAILING, DEGRADED, ESCALATED, ERRORING, FINE = 3, 4, 5, 6, 7


@dataclass(frozen=True)
class Filters:
    q: str = ""
    state: str = ""
    problem: bool = False

    @property
    def active(self) -> bool:
        return bool(self.q or self.state or self.problem)


def parse_filters(params: Any) -> Filters:
    """The filter form's GET parameters; a bad value is a 400 naming its field."""
    q = (params.get("q") or "").strip()
    if len(q) > 100:
        raise InvalidInput("must be at most 100 characters", field="q")
    state = params.get("state") or ""
    if state and state not in STATES:
        raise InvalidInput(f"must be one of {', '.join(STATES)}", field="state")
    problem = params.get("problem") or ""
    if problem not in ("", "0", "1"):
        raise InvalidInput("must be 1 (only services with a problem) or 0", field="problem")
    return Filters(q=q.lower(), state=state, problem=problem == "1")


@dataclass(frozen=True)
class Row:
    name: str
    state: str  # one of STATES (data-breaker)
    label: str  # what the pill says (the override's mode for a forced breaker)
    since: datetime | None
    health: str  # healthy, unhealthy, unknown; "" when the service has no enabled check
    degradation: str
    degradation_forced: bool
    calls: int
    failures: int
    spark: SafeString
    escalations: list[tuple[str, int]]  # (level, count), worst level first
    pattern: Any  # the busiest ErrorPattern of the last hour (with `recent`), or None
    rank: int

    @property
    def error_rate(self) -> float:
        return 100.0 * self.failures / self.calls if self.calls else 0.0

    @property
    def fine(self) -> bool:
        return self.rank == FINE


@dataclass(frozen=True)
class BannerItem:
    kind: str  # "breaker" or "degradation"
    scope: str  # the service, or "*" for the fleet's level
    mode: str  # the override's mode, or the forced level
    by: str
    reason: str
    until: datetime | None


@dataclass
class Fleet:
    rows: list[Row]
    banner: list[BannerItem]
    total: int  # services in the fleet, before the filters
    open_breakers: int
    half_open: int
    escalations: dict[str, int] = field(default_factory=dict)  # open, by level, across the fleet
    filters: Filters = field(default_factory=Filters)
    states: tuple[str, ...] = STATES


def fleet(filters: Filters | None = None, *, now: datetime | None = None) -> Fleet:
    """Every service as a row, worst first, filtered; the banner; the summary line."""
    filters = filters or Filters()
    now = now or timezone.now()
    services = list(breaker_selectors.services())
    names = [s.name for s in services]
    breakers = breaker_selectors.breaker_states(services)
    health = check_selectors.service_health()
    levels, forced_levels = degradation_selectors.levels_of(names, now)
    escalations = escalation_selectors.open_by_service()
    patterns = error_selectors.top_pattern_by_service(now - timedelta(minutes=WINDOW_MIN))
    series = _series(names, now)
    rows = []
    for name in names:
        breaker = breakers[name]
        points = series.get(name, [])
        rows.append(
            _row(
                name,
                breaker.state,
                breaker.since,
                health.get(name, {}).get("state", ""),
                levels[name],
                escalations.get(name, {}),
                patterns.get(name),
                points,
            )
        )
    totals: dict[str, int] = {}
    for by_level in escalations.values():
        for level, n in by_level.items():
            totals[level] = totals.get(level, 0) + n
    return Fleet(
        rows=sorted((r for r in rows if _matches(r, filters)), key=lambda r: (r.rank, r.name)),
        banner=_banner(services, breakers, forced_levels),
        total=len(rows),
        open_breakers=sum(1 for r in rows if r.label in ("open", "forced_open")),
        half_open=sum(1 for r in rows if r.state == "half_open"),
        escalations={level: totals[level] for level in ESCALATION_LEVELS if totals.get(level)},
        filters=filters,
    )


def _series(names: list[str], now: datetime) -> dict[str, list[tuple[int, int]]]:
    """Calls and failures per minute of every service, in one round trip; none when the store is down (the
    page still shows everything else)."""
    try:
        return traffic.counts_many(names, WINDOW_MIN, now=now)
    except Exception:  # counting is best effort, and so is showing it
        return {}


def _row(
    name: str,
    state: str,
    since: datetime | None,
    health: str,
    level: Any,
    escalations: dict[str, int],
    pattern: Any,
    points: list[tuple[int, int]],
) -> Row:
    calls = sum(c for c, _ in points)
    failures = sum(f for _, f in points)
    by_level = [(lv, escalations[lv]) for lv in ESCALATION_LEVELS if escalations.get(lv)]
    rank = BREAKER_RANK.get(state, FINE)
    if rank == FINE:
        if health == "unhealthy":
            rank = HEALTH_FAILING
        elif level.level != "normal":
            rank = DEGRADED
        elif by_level:
            rank = ESCALATED
        elif failures:
            rank = ERRORING
    return Row(
        name=name,
        state=DRAWN_AS.get(state, state),
        label=state,
        since=since,
        health=health,
        degradation=level.level,
        degradation_forced=level.source == "operator",
        calls=calls,
        failures=failures,
        spark=sparkline(points or [(0, 0)]),
        escalations=by_level,
        pattern=pattern,
        rank=rank,
    )


def _matches(row: Row, filters: Filters) -> bool:
    if filters.q and filters.q not in row.name:
        return False
    if filters.state and row.state != filters.state:
        return False
    return not (filters.problem and row.fine)


def _banner(services: list[Any], breakers: dict[str, Any], forced_levels: list[Any]) -> list[BannerItem]:
    """Each breaker override in force and each forced degradation level in force, with who, why, until."""
    overridden = [s for s in services if breakers[s.name].state in OVERRIDES]
    setters = breaker_selectors.override_setters(overridden) if overridden else {}
    items = [
        BannerItem(
            "breaker", s.name, s.override, setters.get(s.name, ""), s.override_reason, s.override_until
        )
        for s in overridden
    ]
    items += [BannerItem("degradation", f.scope, f.level, f.by, f.reason, f.until) for f in forced_levels]
    return items

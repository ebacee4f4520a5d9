"""The local fail-safe breaker: the server's state machine (recovery/breakers/logic.py), ported.

The SDK is its own distribution and must not import Django or the server, so the few functions it needs are
copied here: closed, open, half-open; a failure rate over a count or time window with a minimum of calls,
consecutive failures, slow calls, Retry-After, trial calls and growing waits. They run only while Rebound is
unreachable (or cannot tell the state), one breaker per service in this process, with the settings the server
last gave. tests/sdk/test_breaker.py drives this module and the server's with the same sequences and compares.

Times are integer milliseconds of a monotonic clock; the state is a plain dict, as on the server.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

log = logging.getLogger("rebound_client")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
# The server's MAX_RETRY_AFTER_S by default: no wait and no open-until is ever further away than this.
DEFAULT_CAP_MS = 86_400_000


@dataclass(frozen=True)
class Config:
    """A service's breaker settings in the server's units (milliseconds), as recovery.breaker_logic.Config."""

    threshold: float = 50.0
    window_type: str = "count"
    window_size: int = 20
    minimum_calls: int = 10
    consecutive: int = 5
    slow_ms: int = 0
    wait_ms: int = 30_000
    half_open_max: int = 3
    success_threshold: int = 2
    multiplier: float = 1.0
    max_wait_ms: int = 300_000
    trial_ttl_ms: int = 30_000
    cap_ms: int = DEFAULT_CAP_MS

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None) -> Config:
        """From the `settings` object of `GET /api/v1/breakers` (unknown or missing keys keep the defaults)."""
        s = settings or {}
        d = cls()
        try:
            return cls(
                threshold=float(s.get("failure_rate_threshold", d.threshold)),
                window_type="time" if s.get("window_type") == "time" else "count",
                window_size=max(1, int(s.get("window_size", d.window_size))),
                minimum_calls=max(1, int(s.get("minimum_calls", d.minimum_calls))),
                consecutive=max(0, int(s.get("consecutive_failures", d.consecutive))),
                slow_ms=max(0, int(s.get("slow_call_ms", d.slow_ms))),
                wait_ms=max(0, int(float(s.get("wait_duration_s", d.wait_ms / 1000)) * 1000)),
                half_open_max=max(1, int(s.get("half_open_max_calls", d.half_open_max))),
                success_threshold=max(1, int(s.get("success_threshold", d.success_threshold))),
                multiplier=max(1.0, float(s.get("wait_multiplier", d.multiplier))),
                max_wait_ms=max(0, int(float(s.get("max_wait_s", d.max_wait_ms / 1000)) * 1000)),
            )
        except (TypeError, ValueError) as error:
            # Not silent: the local breaker would otherwise judge with other limits than the fleet's.
            log.warning("rebound_client: unreadable breaker settings %r (%s); the defaults apply", s, error)
            return d


@dataclass(frozen=True)
class Outcome:
    failure: bool
    ignored: bool = False
    permit_id: str = ""
    retry_after_ms: int = 0


@dataclass
class Result:
    state: str
    allowed: bool = True
    retry_after_ms: int = 0
    permit_id: str = ""
    reason: str = ""
    transitions: list[tuple[str, str, str]] = field(default_factory=list)


class State(TypedDict):
    """A breaker's state: a plain dict, so that it is stored as JSON as it is."""

    state: str
    opened_at: int
    open_until: int
    wait_ms: int
    consecutive: int
    ho_ok: int  # successes while half-open
    win: Any  # a count window: list of 0/1, oldest first; a time window: {second: [calls, failures]}
    win_type: str
    trials: dict[str, int]  # {permit_id: expiry}


def new_state() -> State:
    return {
        "state": CLOSED,
        "opened_at": 0,
        "open_until": 0,
        "wait_ms": 0,
        "consecutive": 0,
        "ho_ok": 0,
        "win": [],
        "win_type": "count",
        "trials": {},
    }


def _fit_window(st: State, cfg: Config, now: int) -> None:
    if st["win_type"] != cfg.window_type:
        st["win"], st["win_type"] = ([] if cfg.window_type == "count" else {}), cfg.window_type
    if cfg.window_type == "count":
        del st["win"][: max(0, len(st["win"]) - cfg.window_size)]
    else:
        oldest = now // 1000 - cfg.window_size
        st["win"] = {s: v for s, v in st["win"].items() if int(s) > oldest}


def window_counts(st: State, cfg: Config, now: int) -> tuple[int, int]:
    _fit_window(st, cfg, now)
    if cfg.window_type == "count":
        return len(st["win"]), sum(st["win"])
    return sum(v[0] for v in st["win"].values()), sum(v[1] for v in st["win"].values())


def _push(st: State, cfg: Config, now: int, failed: bool) -> None:
    _fit_window(st, cfg, now)
    if cfg.window_type == "count":
        st["win"].append(1 if failed else 0)
        _fit_window(st, cfg, now)
    else:
        bucket = st["win"].setdefault(str(now // 1000), [0, 0])
        bucket[0] += 1
        bucket[1] += 1 if failed else 0


def _reset_window(st: State) -> None:
    st["win"] = [] if st["win_type"] == "count" else {}
    st["consecutive"] = 0


def _open(st: State, cfg: Config, now: int, wait_ms: int, until: int = 0) -> None:
    st["state"], st["opened_at"], st["wait_ms"] = OPEN, now, min(wait_ms, cfg.cap_ms)
    st["open_until"] = min(max(now + st["wait_ms"], until), now + cfg.cap_ms)
    st["ho_ok"], st["trials"] = 0, {}
    _reset_window(st)


def advance(st: State, now: int, result: Result) -> None:
    if st["state"] == OPEN and now >= st["open_until"]:
        st["state"], st["ho_ok"], st["trials"] = HALF_OPEN, 0, {}
        result.transitions.append((OPEN, HALF_OPEN, "the wait is over: trial calls allowed"))
    if st["state"] == HALF_OPEN:
        st["trials"] = {k: v for k, v in st["trials"].items() if v > now}


def permit(st: State, cfg: Config, now: int, permit_id: str) -> Result:
    result = Result(state=st["state"])
    advance(st, now, result)
    result.state = st["state"]
    if st["state"] == CLOSED:
        result.reason = "closed"
    elif st["state"] == OPEN:
        result.allowed, result.retry_after_ms = False, st["open_until"] - now
        result.reason = "open"
    elif len(st["trials"]) < cfg.half_open_max:
        st["trials"][permit_id] = now + cfg.trial_ttl_ms
        result.permit_id, result.reason = permit_id, "half-open: a trial call"
    else:
        # As the server's logic.trials_full_wait: not until the soonest permit's TTL runs out (30 s by default,
        # while a trial usually ends within a second), but after the base open wait at most, at least 1 ms.
        soonest = min(st["trials"].values())
        result.allowed, result.retry_after_ms = False, max(1, min(soonest - now, cfg.wait_ms))
        result.reason = (
            f"half-open: all {cfg.half_open_max} trial permits are in use: "
            f"ask again in {result.retry_after_ms / 1000:g} s"
        )
    return result


def record(st: State, cfg: Config, now: int, outcome: Outcome) -> Result:
    result = Result(state=st["state"])
    advance(st, now, result)
    if outcome.permit_id:
        st["trials"].pop(outcome.permit_id, None)
    if not outcome.ignored:
        _count(st, cfg, now, outcome, result)
    result.state = st["state"]
    return result


def _count(st: State, cfg: Config, now: int, outcome: Outcome, result: Result) -> None:
    state = st["state"]
    if outcome.retry_after_ms > 0:
        retry_after_ms = min(outcome.retry_after_ms, cfg.cap_ms)
        until = now + retry_after_ms
        if state != OPEN or until > st["open_until"]:
            _open(st, cfg, now, max(st["wait_ms"], cfg.wait_ms), until)
            if state != OPEN:
                why = rate_limit_reason(retry_after_ms, outcome.retry_after_ms / 1000)
                result.transitions.append((state, OPEN, why))
        return
    if state == OPEN:
        return
    if state == HALF_OPEN:
        if outcome.failure:
            # min() before int(): a huge multiplier must give the cap, not an overflow.
            wait = int(min(max(st["wait_ms"], cfg.wait_ms) * cfg.multiplier, cfg.max_wait_ms, cfg.cap_ms))
            _open(st, cfg, now, wait)
            result.transitions.append((HALF_OPEN, OPEN, f"a trial call failed: open for {wait / 1000:g} s"))
            return
        st["ho_ok"] += 1
        if st["ho_ok"] >= cfg.success_threshold:
            st["state"], st["wait_ms"], st["trials"], st["ho_ok"] = CLOSED, 0, {}, 0
            _reset_window(st)
            result.transitions.append((HALF_OPEN, CLOSED, f"{cfg.success_threshold} trial calls succeeded"))
        return
    _push(st, cfg, now, outcome.failure)
    st["consecutive"] = st["consecutive"] + 1 if outcome.failure else 0
    if state != CLOSED:
        return
    calls, failures = window_counts(st, cfg, now)
    reason = trip_reason(cfg, calls, failures, st["consecutive"])
    if reason:
        _open(st, cfg, now, cfg.wait_ms)
        result.transitions.append((CLOSED, OPEN, reason))


def rate_limit_reason(retry_after_ms: int, asked_s: float) -> str:
    if asked_s * 1000 > retry_after_ms:
        return (
            f"rate limited: Retry-After {asked_s:g} s, capped at {retry_after_ms / 1000:g} s "
            "(MAX_RETRY_AFTER_S)"
        )
    return f"rate limited: Retry-After {retry_after_ms / 1000:g} s"


def trip_reason(cfg: Config, calls: int, failures: int, consecutive: int) -> str:
    if cfg.consecutive and consecutive >= cfg.consecutive:
        return f"{consecutive} consecutive failures (threshold {cfg.consecutive})"
    if calls >= cfg.minimum_calls and 100.0 * failures / calls >= cfg.threshold:
        span = f"the last {calls} calls" if cfg.window_type == "count" else f"the last {cfg.window_size} s"
        return f"failure rate {100.0 * failures / calls:.0f}% over {span} (threshold {cfg.threshold:g}%)"
    return ""


def monotonic_ms() -> int:
    return int(time.monotonic() * 1000)


class LocalBreaker:
    """One service's breaker in this process, for while the fleet's cannot be asked. Thread-safe."""

    def __init__(self, cfg: Config, clock: Callable[[], int] = monotonic_ms) -> None:
        self.cfg = cfg
        self.clock = clock
        self.state = new_state()
        self._lock = threading.Lock()

    @classmethod
    def starting_from(
        cls, cfg: Config, state: str, open_for_ms: int, clock: Callable[[], int] = monotonic_ms
    ) -> LocalBreaker:
        """Take over from the fleet's last known state: open for as long as it still had to be, half-open as
        it was, closed with an empty window otherwise (the fleet's window is not known here)."""
        breaker = cls(cfg, clock)
        now = clock()
        if state == OPEN and open_for_ms > 0:
            _open(breaker.state, cfg, now, cfg.wait_ms)
            breaker.state["open_until"] = now + min(
                open_for_ms, cfg.cap_ms
            )  # what is left of the fleet's wait
        elif state in (OPEN, HALF_OPEN):
            breaker.state.update({"state": HALF_OPEN, "opened_at": now, "wait_ms": cfg.wait_ms})
        return breaker

    def permit(self) -> Result:
        with self._lock:
            return permit(self.state, self.cfg, self.clock(), uuid.uuid4().hex)

    def record(self, outcome: Outcome) -> Result:
        with self._lock:
            return record(self.state, self.cfg, self.clock(), outcome)

    @property
    def current(self) -> str:
        with self._lock:
            result = Result(state=self.state["state"])
            advance(self.state, self.clock(), result)
            return str(self.state["state"])

"""The breaker's state machine as pure functions over a plain dict: the database store runs these, and the
Redis store's Lua scripts (lua.py) do the same steps. One contract suite (tests/recovery/breakers/test_store_contract.py)
holds both to the same semantics.

Times are integer milliseconds. A state dict has: state, opened_at, open_until, wait_ms, consecutive, ho_ok
(half-open successes), win (count window: list of 0/1, oldest first; time window: {second: [calls, failures]}),
win_type, trials ({permit_id: expiry}).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class Config:
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


@dataclass(frozen=True)
class Outcome:
    """One call's result as the breaker sees it: a counted failure, a success, or neither (ignored)."""

    failure: bool
    ignored: bool = False
    permit_id: str = ""
    retry_after_ms: int = 0  # a rate limit's Retry-After
    frozen: bool = False  # an operator override is in force: record, never transition


@dataclass
class Result:
    state: str
    allowed: bool = True
    retry_after_ms: int = 0
    permit_id: str = ""
    reason: str = ""
    transitions: list[tuple[str, str, str]] = field(default_factory=list)
    calls: int = 0
    failures: int = 0
    consecutive: int = 0
    # The window as it was when the breaker tripped (the window itself starts afresh on opening).
    snapshot: tuple[int, int] | None = None

    @property
    def rate(self) -> float:
        return round(100.0 * self.failures / self.calls, 2) if self.calls else 0.0


class State(TypedDict):
    """A breaker's state: a plain dict, so that it is stored as JSON (and read by the Lua scripts) as it is."""

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


# --- the window ------------------------------------------------------------------------------------------


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


# --- transitions -----------------------------------------------------------------------------------------


def _open(st: State, cfg: Config, now: int, wait_ms: int, until: int = 0) -> None:
    st["state"], st["opened_at"], st["wait_ms"] = OPEN, now, wait_ms
    st["open_until"] = max(now + wait_ms, until)
    st["ho_ok"], st["trials"] = 0, {}
    _reset_window(st)


def advance(st: State, cfg: Config, now: int, result: Result) -> None:
    """open becomes half_open once the wait is over: lazily, on the next permit or outcome."""
    if st["state"] == OPEN and now >= st["open_until"]:
        st["state"], st["ho_ok"], st["trials"] = HALF_OPEN, 0, {}
        result.transitions.append((OPEN, HALF_OPEN, "the wait is over: trial calls allowed"))
    if st["state"] == HALF_OPEN:
        st["trials"] = {k: v for k, v in st["trials"].items() if v > now}


def permit(st: State, cfg: Config, now: int, permit_id: str) -> Result:
    result = Result(state=st["state"])
    advance(st, cfg, now, result)
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
        soonest = min(st["trials"].values())
        result.allowed, result.retry_after_ms = False, max(1, soonest - now)
        result.reason = f"half-open: all {cfg.half_open_max} trial permits are in use"
    result.calls, result.failures = window_counts(st, cfg, now)
    result.consecutive = st["consecutive"]
    return result


def record(st: State, cfg: Config, now: int, outcome: Outcome) -> Result:
    result = Result(state=st["state"])
    advance(st, cfg, now, result)
    if outcome.permit_id:
        st["trials"].pop(outcome.permit_id, None)
    if not outcome.ignored:
        _count(st, cfg, now, outcome, result)
    result.state, result.consecutive = st["state"], st["consecutive"]
    result.calls, result.failures = window_counts(st, cfg, now)
    return result


def _count(st: State, cfg: Config, now: int, outcome: Outcome, result: Result) -> None:
    state = st["state"]
    if outcome.retry_after_ms > 0 and not outcome.frozen:
        # A rate limit with Retry-After: nobody should call before then.
        until = now + outcome.retry_after_ms
        if state != OPEN or until > st["open_until"]:
            result.snapshot = window_counts(st, cfg, now)
            _open(st, cfg, now, max(st["wait_ms"], cfg.wait_ms), until)
            if state != OPEN:
                secs = outcome.retry_after_ms / 1000
                result.transitions.append((state, OPEN, f"rate limited: Retry-After {secs:g} s"))
        return
    if state == OPEN:
        return  # a straggler's outcome: the window starts afresh at half-open
    if state == HALF_OPEN and not outcome.frozen:
        if outcome.failure:
            wait = min(int(max(st["wait_ms"], cfg.wait_ms) * cfg.multiplier), cfg.max_wait_ms)
            result.snapshot = window_counts(st, cfg, now)
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
    if outcome.frozen or state != CLOSED:
        return
    calls, failures = window_counts(st, cfg, now)
    reason = trip_reason(cfg, calls, failures, st["consecutive"])
    if reason:
        result.snapshot = (calls, failures)
        _open(st, cfg, now, cfg.wait_ms)
        result.transitions.append((CLOSED, OPEN, reason))


def trip_reason(cfg: Config, calls: int, failures: int, consecutive: int) -> str:
    if cfg.consecutive and consecutive >= cfg.consecutive:
        return f"{consecutive} consecutive failures (threshold {cfg.consecutive})"
    if calls >= cfg.minimum_calls and 100.0 * failures / calls >= cfg.threshold:
        span = f"the last {calls} calls" if cfg.window_type == "count" else f"the last {cfg.window_size} s"
        return f"failure rate {100.0 * failures / calls:.0f}% over {span} (threshold {cfg.threshold:g}%)"
    return ""

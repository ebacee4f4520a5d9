"""The breaker's state machine as pure functions over a plain dict: the database store runs these, and the
Redis store's Lua scripts (lua.py) do the same steps. One contract suite (tests/recovery/breakers/test_store_contract.py)
holds both to the same semantics.

Times are integer milliseconds. A state dict has: state, opened_at, open_until, wait_ms, consecutive, ho_ok
(half-open successes), win (count window: list of 0/1, oldest first; time window: {second: [calls, failures]}),
win_type, trials ({permit_id: expiry}); the operator's override (override, override_until, override_reason), kept
here so that every process's next permit sees it; and the bookkeeping of its history: gen (this state's
generation: a fresh one whenever the state is rebuilt from the database), tseq (transitions so far in this
generation) and pending (the transitions not yet known to be written as rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, TypedDict

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATES = (CLOSED, OPEN, HALF_OPEN)
AUTO, FORCED_OPEN, FORCED_CLOSED, DISABLED = "auto", "forced_open", "forced_closed", "disabled"
OVERRIDES = (AUTO, FORCED_OPEN, FORCED_CLOSED, DISABLED)
DEFAULT_CAP_MS = 86_400_000
# Transitions waiting for their rows: a breaker that changes state more often than this while the database
# cannot be written keeps the newest (each change of state is minutes apart in practice).
PENDING_MAX = 1000


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
    # MAX_RETRY_AFTER_S: no wait and no open-until is ever further away than this.
    cap_ms: int = DEFAULT_CAP_MS


@dataclass(frozen=True)
class Outcome:
    """One call's result as the breaker sees it: a counted failure, a success, or neither (ignored)."""

    failure: bool
    ignored: bool = False
    permit_id: str = ""
    retry_after_ms: int = 0  # a rate limit's Retry-After (already capped at Config.cap_ms)
    frozen: bool = False  # an operator override is in force: record, never transition
    asked_s: float = 0.0  # the Retry-After the error asked for, in seconds, when it was over the cap (0: not)
    count: int = 1  # a run of this many identical outcomes, in a row (record_run)


@dataclass(frozen=True)
class Facts:
    """What a transition's row records besides from, to and why: the window as it was when it happened (before
    an opening empties it), and where the breaker stood after it."""

    seq: str  # "<gen>.<n>": names the transition, so that a row is never written twice
    at: int
    calls: int
    failures: int
    consecutive: int
    open_until: int = 0  # to open: when trial calls may start
    wait_ms: int = 0  # to open: the wait it started
    check: str = ""  # the health check whose verdict made it ("": not a health check's)


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
    # One per transition, in the same order.
    facts: list[Facts] = field(default_factory=list)
    override: str = ""  # the operator's override in force ("" when the breaker is automatic)
    pending: int = 0  # transitions of this breaker waiting for their rows, these included
    before: str = ""  # a verdict or a reset: the automatic state it found

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
    override: str
    override_until: int  # 0: until cleared
    override_reason: str
    gen: str
    tseq: int
    pending: list[dict[str, Any]]


def new_state(gen: str = "") -> State:
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
        "override": AUTO,
        "override_until": 0,
        "override_reason": "",
        "gen": gen,
        "tseq": 0,
        "pending": [],
    }


# --- reading a stored state ------------------------------------------------------------------------------


def _whole(value: Any) -> int | None:
    """A stored number as a whole number, or None when it is none (text, NaN, infinite, a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return int(value)


def _clamped(value: Any, low: int, high: int) -> int:
    number = _whole(value)
    return low if number is None else max(low, min(high, number))


def sanitize(raw: Any, now: int, cap_ms: int = DEFAULT_CAP_MS) -> State | None:
    """A stored state made safe to run: None when what decides the state cannot be read, or it has no
    generation (then the state is rebuilt from its history); numbers out of range are clamped (an open-until beyond now + the cap comes back
    to it), and the rest (windows, trials, bookkeeping) falls back to its empty value."""
    if not isinstance(raw, dict) or raw.get("state") not in STATES:
        return None
    core = [_whole(raw.get(name)) for name in ("opened_at", "open_until", "wait_ms")]
    if any(number is None for number in core) or not isinstance(raw.get("gen"), str) or not raw["gen"]:
        return None  # a state without a generation was written before generations (and overrides) were kept
    st = new_state(raw["gen"])
    st["state"] = raw["state"]
    st["opened_at"] = _clamped(raw["opened_at"], 0, now)
    st["open_until"] = _clamped(raw["open_until"], 0, now + cap_ms)
    st["wait_ms"] = _clamped(raw["wait_ms"], 0, cap_ms)
    st["consecutive"] = _clamped(raw.get("consecutive"), 0, 2**31)
    st["ho_ok"] = _clamped(raw.get("ho_ok"), 0, 2**31)
    st["tseq"] = _clamped(raw.get("tseq"), 0, 2**53)
    win_type, win = raw.get("win_type"), raw.get("win")
    if win_type == "count" and isinstance(win, list):
        st["win"] = [1 if v == 1 else 0 for v in win if isinstance(v, int)]
    elif win_type == "time" and isinstance(win, dict):
        st["win_type"] = "time"
        st["win"] = {
            str(s): [_clamped(v[0], 0, 2**31), _clamped(v[1], 0, 2**31)]
            for s, v in win.items()
            if str(s).isdigit() and isinstance(v, list) and len(v) == 2
        }
    trials = raw.get("trials")
    if isinstance(trials, dict):
        st["trials"] = {str(k): int(v) for k, v in trials.items() if _whole(v) is not None}
    if raw.get("override") in OVERRIDES:
        st["override"] = raw["override"]
        st["override_until"] = _clamped(raw.get("override_until"), 0, 2**53)
        reason = raw.get("override_reason")
        st["override_reason"] = reason if isinstance(reason, str) else ""
    pending = raw.get("pending")
    if isinstance(pending, list):
        st["pending"] = [p for p in pending if isinstance(p, dict) and isinstance(p.get("seq"), str)]
    return st


# --- the operator's override -----------------------------------------------------------------------------


def override_in_force(st: State, now: int) -> str:
    """The override that applies now ("" when automatic): an expired one no longer does, even before beat
    clears it."""
    mode = st.get("override", AUTO)
    if mode == AUTO or mode not in OVERRIDES:
        return ""
    until = st.get("override_until", 0)
    if until and now >= until:
        return ""
    return mode


def set_override(st: State, mode: str, until: int, reason: str) -> None:
    auto = mode == AUTO
    st["override"], st["override_until"] = mode, 0 if auto else until
    st["override_reason"] = "" if auto else reason


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
    st["state"], st["opened_at"], st["wait_ms"] = OPEN, now, min(wait_ms, cfg.cap_ms)
    st["open_until"] = min(max(now + st["wait_ms"], until), now + cfg.cap_ms)
    st["ho_ok"], st["trials"] = 0, {}
    _reset_window(st)


def _note(
    st: State,
    cfg: Config,
    now: int,
    result: Result,
    move: tuple[str, str, str],
    seen: tuple[int, int, int],
    check: str = "",
) -> None:
    """Record a transition: in the result, and in the state's pending list until its row is written. `seen`
    is the window (calls, failures, consecutive) as it was before the transition emptied it; `check`, the
    health check whose verdict made it (kept in the pending entry, so that a later flush names it too)."""
    st["tseq"] += 1
    opened = move[1] == OPEN
    facts = Facts(
        seq=f"{st['gen']}.{st['tseq']}",
        at=now,
        calls=seen[0],
        failures=seen[1],
        consecutive=seen[2],
        open_until=st["open_until"] if opened else 0,
        wait_ms=st["wait_ms"] if opened else 0,
        check=check,
    )
    result.transitions.append(move)
    result.facts.append(facts)
    st["pending"].append(pending_entry(move, facts))
    del st["pending"][:-PENDING_MAX]


def pending_entry(move: tuple[str, str, str], facts: Facts) -> dict[str, Any]:
    """A transition as the pending list keeps it (the Lua scripts write the same keys)."""
    return {
        "seq": facts.seq,
        "from": move[0],
        "to": move[1],
        "why": move[2],
        "at": facts.at,
        "calls": facts.calls,
        "failures": facts.failures,
        "consecutive": facts.consecutive,
        "open_until": facts.open_until,
        "wait_ms": facts.wait_ms,
        "check": facts.check,
    }


def _seen(st: State, cfg: Config, now: int) -> tuple[int, int, int]:
    calls, failures = window_counts(st, cfg, now)
    return calls, failures, st["consecutive"]


def advance(st: State, cfg: Config, now: int, result: Result) -> None:
    """open becomes half_open once the wait is over: lazily, on the next permit or outcome."""
    if st["state"] == OPEN and now >= st["open_until"]:
        seen = _seen(st, cfg, now)
        st["state"], st["ho_ok"], st["trials"] = HALF_OPEN, 0, {}
        _note(st, cfg, now, result, (OPEN, HALF_OPEN, "the wait is over: trial calls allowed"), seen)
    if st["state"] == HALF_OPEN:
        st["trials"] = {k: v for k, v in st["trials"].items() if v > now}


def permit(st: State, cfg: Config, now: int, permit_id: str) -> Result:
    override = override_in_force(st, now)
    if override:
        # The operator decides: the automatic state does not move, and no trial permit is taken.
        result = Result(state=override, allowed=override != FORCED_OPEN, override=override)
        result.reason = f"{override} by an operator: {st['override_reason']}"
    else:
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
            result.allowed, result.retry_after_ms = False, trials_full_wait(st, cfg, now)
            result.reason = trials_full_reason(cfg, result.retry_after_ms)
    result.calls, result.failures = window_counts(st, cfg, now)
    result.consecutive, result.pending = st["consecutive"], len(st["pending"])
    return result


def trials_full_wait(st: State, cfg: Config, now: int) -> int:
    """How long a caller refused because every trial permit is taken should wait before it asks again.

    Not until the soonest permit expires: that is the permit's TTL (BREAKER_TRIAL_PERMIT_TTL_SECONDS, 30 s by
    default), a bound for a trial whose outcome never comes, while a trial call usually ends, and the breaker
    closes, well within a second. The service's own base open wait (`wait_duration_s`, Config.wait_ms: not the
    grown wait in st["wait_ms"]) is the longest it ever asks anyone to stay away from a dead service, so a refused
    caller of a breaker that is already trying the service waits no longer than that; asking again early costs
    one permit request to Rebound, not a call to the service. Never past the soonest expiry (a slot frees
    then), and at least 1 ms. lua.PERMIT and the SDK's rebound_client/_breaker.py compute the same."""
    soonest = min(st["trials"].values())
    return max(1, min(soonest - now, cfg.wait_ms))


def trials_full_reason(cfg: Config, retry_after_ms: int) -> str:
    return (
        f"half-open: all {cfg.half_open_max} trial permits are in use: "
        f"ask again in {retry_after_ms / 1000:g} s"
    )


def record(st: State, cfg: Config, now: int, outcome: Outcome) -> Result:
    result = Result(state=st["state"])
    result.override = override_in_force(st, now)
    if result.override and not outcome.frozen:
        outcome = Outcome(**{**outcome.__dict__, "frozen": True})
    advance(st, cfg, now, result)
    if outcome.permit_id:
        st["trials"].pop(outcome.permit_id, None)
    if not outcome.ignored:
        _count(st, cfg, now, outcome, result)
    result.state, result.consecutive = st["state"], st["consecutive"]
    result.calls, result.failures = window_counts(st, cfg, now)
    result.pending = len(st["pending"])
    return result


def record_run(st: State, cfg: Config, now: int, outcome: Outcome) -> Result:
    """A run of `outcome.count` identical outcomes, one after another: the state after the last, with every
    transition the run made, in order, exactly as `count` record() calls leave it (tests/recovery/breakers/
    test_runs.py holds it to that). A run of plain outcomes costs O(1) steps but for the few where a transition
    is possible (see _run_safe); lua.RECORD_MANY's record_run does the same steps."""
    result = record(st, cfg, now, outcome)
    left = outcome.count - 1
    plain = not (outcome.permit_id or outcome.ignored or outcome.retry_after_ms > 0)
    while left > 0:
        if plain:
            frozen = outcome.frozen or bool(override_in_force(st, now))
            n = _run_safe(st, cfg, now, left, outcome.failure, frozen)
            if n:
                _apply_safe(st, cfg, now, n, outcome.failure, frozen)
                left -= n
        if left:
            step = record(st, cfg, now, outcome)
            step.transitions[:0], step.facts[:0] = result.transitions, result.facts
            result = step
            left -= 1
    result.state, result.consecutive = st["state"], st["consecutive"]
    result.calls, result.failures = window_counts(st, cfg, now)
    result.pending = len(st["pending"])
    return result


def _run_safe(st: State, cfg: Config, now: int, left: int, failure: bool, frozen: bool) -> int:
    """How many more of a run of plain outcomes can be applied at once, none of them able to make a transition
    (0: the next one goes through record()). With `now` fixed, advance() has nothing left to do after the run's
    first outcome unless an open breaker's wait is already over. An open breaker ignores stragglers; frozen
    outcomes only fill the window; a half-open breaker moves at its success threshold or its first failure; a
    closed one trips on a success only with the window at minimum_calls and its rate at the threshold: a success
    never raises the rate, so once the window holds minimum_calls at a rate under the threshold no later success
    trips it, and before it holds them none can. Failures on a closed breaker go one at a time."""
    if st["state"] == OPEN:
        return left if now < st["open_until"] else 0
    if frozen:
        return left
    if st["state"] == HALF_OPEN:
        return 0 if failure else max(0, min(left, cfg.success_threshold - st["ho_ok"] - 1))
    if failure:
        return 0
    if cfg.window_type == "count" and cfg.minimum_calls > cfg.window_size:
        return left
    calls, failures = window_counts(st, cfg, now)
    if calls < cfg.minimum_calls:
        return min(left, cfg.minimum_calls - calls - 1)
    return left if 100.0 * failures / calls < cfg.threshold else 0


def _apply_safe(st: State, cfg: Config, now: int, n: int, failure: bool, frozen: bool) -> None:
    """What n record() calls do when _run_safe says none of them makes a transition."""
    if st["state"] == OPEN:
        return
    if st["state"] == HALF_OPEN and not frozen:
        st["ho_ok"] += n  # successes only: toward closing, never into the window
        return
    _fit_window(st, cfg, now)
    if cfg.window_type == "count":
        value = 1 if failure else 0
        st["win"] = (
            st["win"] + [value] * min(n, cfg.window_size)
            if n < cfg.window_size
            else [value] * cfg.window_size
        )
        _fit_window(st, cfg, now)
    else:
        bucket = st["win"].setdefault(str(now // 1000), [0, 0])
        bucket[0] += n
        bucket[1] += n if failure else 0
    st["consecutive"] = st["consecutive"] + n if failure else 0


def rate_limit_reason(retry_after_ms: int, asked_s: float) -> str:
    if asked_s * 1000 > retry_after_ms:
        return (
            f"rate limited: Retry-After {asked_s:g} s, capped at {retry_after_ms / 1000:g} s "
            "(MAX_RETRY_AFTER_S)"
        )
    return f"rate limited: Retry-After {retry_after_ms / 1000:g} s"


def _count(st: State, cfg: Config, now: int, outcome: Outcome, result: Result) -> None:
    state = st["state"]
    if outcome.retry_after_ms > 0 and not outcome.frozen:
        # A rate limit with Retry-After: nobody should call before then.
        retry_after_ms = min(outcome.retry_after_ms, cfg.cap_ms)
        until = now + retry_after_ms
        if state != OPEN or until > st["open_until"]:
            seen = _seen(st, cfg, now)
            _open(st, cfg, now, max(st["wait_ms"], cfg.wait_ms), until)
            if state != OPEN:
                why = rate_limit_reason(retry_after_ms, outcome.asked_s)
                _note(st, cfg, now, result, (state, OPEN, why), seen)
        return
    if state == OPEN:
        return  # a straggler's outcome: the window starts afresh at half-open
    if state == HALF_OPEN and not outcome.frozen:
        if outcome.failure:
            # min() before int(): a huge multiplier must give the cap, not an overflow.
            wait = int(min(max(st["wait_ms"], cfg.wait_ms) * cfg.multiplier, cfg.max_wait_ms, cfg.cap_ms))
            seen = _seen(st, cfg, now)
            _open(st, cfg, now, wait)
            _note(
                st,
                cfg,
                now,
                result,
                (HALF_OPEN, OPEN, f"a trial call failed: open for {wait / 1000:g} s"),
                seen,
            )
            return
        st["ho_ok"] += 1
        if st["ho_ok"] >= cfg.success_threshold:
            seen = _seen(st, cfg, now)
            st["state"], st["wait_ms"], st["trials"], st["ho_ok"] = CLOSED, 0, {}, 0
            _reset_window(st)
            _note(
                st,
                cfg,
                now,
                result,
                (HALF_OPEN, CLOSED, f"{cfg.success_threshold} trial calls succeeded"),
                seen,
            )
        return
    _push(st, cfg, now, outcome.failure)
    st["consecutive"] = st["consecutive"] + 1 if outcome.failure else 0
    if outcome.frozen or state != CLOSED:
        return
    calls, failures = window_counts(st, cfg, now)
    reason = trip_reason(cfg, calls, failures, st["consecutive"])
    if reason:
        seen = (calls, failures, st["consecutive"])  # before the opening empties the window
        _open(st, cfg, now, cfg.wait_ms)
        _note(st, cfg, now, result, (CLOSED, OPEN, reason), seen)


def trip_reason(cfg: Config, calls: int, failures: int, consecutive: int) -> str:
    if cfg.consecutive and consecutive >= cfg.consecutive:
        return f"{consecutive} consecutive failures (threshold {cfg.consecutive})"
    if calls >= cfg.minimum_calls and 100.0 * failures / calls >= cfg.threshold:
        span = f"the last {calls} calls" if cfg.window_type == "count" else f"the last {cfg.window_size} s"
        return f"failure rate {100.0 * failures / calls:.0f}% over {span} (threshold {cfg.threshold:g}%)"
    return ""


# --- health checks and resets (healing) --------------------------------------------------------------------


def health_verdict(st: State, cfg: Config, now: int, *, healthy: bool, check: str, why: str) -> Result:
    """A health check's verdict on the service, for the whole fleet (lua.VERDICT does the same steps).

    Unhealthy: a closed or half-open breaker opens, held open for the cap (MAX_RETRY_AFTER_S) since the check,
    not a wait, says when it is over; an open one is held so again, without a transition (a check that keeps
    failing re-asserts it). Healthy: an open breaker half-opens, so that real trial calls confirm recovery;
    closed and half-open stay as they are. An operator's override in force wins: nothing changes.
    `result.reason` is the effect, as the caller records it."""
    result = Result(state=st["state"], before=st["state"])
    result.override = override_in_force(st, now)
    if result.override:
        result.reason = f"override {result.override} in force: verdict not applied"
    else:
        advance(st, cfg, now, result)
        state = st["state"]
        if not healthy and state == OPEN:
            st["open_until"] = now + cfg.cap_ms
            result.reason = "already open"
        elif not healthy:
            seen = _seen(st, cfg, now)
            _open(st, cfg, now, cfg.wait_ms, now + cfg.cap_ms)
            _note(st, cfg, now, result, (state, OPEN, why), seen, check)
            result.reason = "opened"
        elif state == OPEN:
            seen = _seen(st, cfg, now)
            st["state"], st["ho_ok"], st["trials"] = HALF_OPEN, 0, {}
            _note(st, cfg, now, result, (OPEN, HALF_OPEN, why), seen, check)
            result.reason = "moved to half_open"
        else:
            result.reason = f"unchanged: {state}"
    _finish(st, cfg, now, result)
    return result


def close(st: State, cfg: Config, now: int, why: str) -> Result:
    """Close the automatic state and empty its window (reset_breaker, a healing action; lua.CLOSE does the same
    steps). An operator's override in force stays in force: it is the operator's to lift."""
    result = Result(state=st["state"], before=st["state"])
    result.override = override_in_force(st, now)
    before = st["state"]
    seen = _seen(st, cfg, now)
    st["state"], st["wait_ms"], st["trials"], st["ho_ok"] = CLOSED, 0, {}, 0
    _reset_window(st)
    if before != CLOSED:
        _note(st, cfg, now, result, (before, CLOSED, why), seen)
    result.reason = f"closed (was {before})" if before != CLOSED else "already closed: window emptied"
    if result.override:
        result.reason += f"; override {result.override} still in force"
    _finish(st, cfg, now, result)
    return result


def _finish(st: State, cfg: Config, now: int, result: Result) -> None:
    result.state, result.consecutive = st["state"], st["consecutive"]
    result.calls, result.failures = window_counts(st, cfg, now)
    result.pending = len(st["pending"])


def acknowledge(st: State, seqs: set[str]) -> None:
    """Forget pending transitions whose rows are written."""
    st["pending"] = [p for p in st["pending"] if p["seq"] not in seqs]

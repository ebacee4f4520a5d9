"""The recovery planner: "it failed, what now?", answered in one place. Pure: no I/O, no clock, no randomness.

`recovery.decisions.services` gathers what the planner must know into `Inputs` (the error's classification, the retry policy
with its delay already drawn, the retry budget, the breaker, the degradation level, the fallback chain with each
option's availability) and calls `decide`. The same inputs always give the same decision, which is what makes
the tree testable as a table (tests/recovery/decisions/test_planner.py) and explainable (docs/recovery.md draws it).

The tree, in order:
1. fatal: abort.
2. authentication, permission, or any error that needs a human: escalate.
3. validation: abort (the caller must change the request), except an unimplemented operation: its fallback.
4. an open breaker: the first available fallback, else wait until it lets a trial call through.
5. rate_limit: wait for Retry-After while the policy's attempts and deadline last, else fall back.
6. everything else: retry while the policy, its deadline, idempotency and the retry budget allow; then the first
   available fallback; then degrade (non-critical work, or the degradation level skips the service) or escalate.

What was learned (`Inputs.learned`, recovery/learning) weighs in after steps 1 to 3, never in them: in steps 4 to 6
the tree's decision stands unless another action the tree permits at that point has *proven* better for this
error (its lower confidence bound above the decision's upper bound), and a retry's delay moves toward the delay
at which retries of this error have worked, within the policy's bounds. Fatal errors are never retried, and a
human is never skipped, however well something once worked (docs/recovery.md, "Learning in the tree").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from recovery.errors.taxonomy import ErrorClass, ErrorKind
from recovery.learning import stats

RETRY, FALLBACK, WAIT, DEGRADE, ESCALATE, ABORT = "retry", "fallback", "wait", "degrade", "escalate", "abort"
ACTIONS = (RETRY, FALLBACK, WAIT, DEGRADE, ESCALATE, ABORT)
OPEN_STATES = ("open", "forced_open")
HUMAN_KINDS = (ErrorKind.AUTHENTICATION_FAILED.value, ErrorKind.PERMISSION_DENIED.value)
SKIP = "skip"
# The level an escalation carries to the human side (healing's escalation queue names the same levels): an error
# a human must act on (credentials, permissions, quota) is a warning; critical work with nothing left, critical.
HUMAN_LEVEL, CRITICAL_LEVEL = "warning", "critical"


@dataclass(frozen=True)
class PolicyInput:
    name: str | None  # None: no policy row applies (an operator deleted the global default): never retry
    max_attempts: int
    deadline_s: float | None
    retries_class: bool  # the policy retries this error class
    attempts_left: int  # after the attempt that just failed
    delay_s: float  # before the next attempt, by the policy (Retry-After honoured when it says so)
    base_delay_s: float | None = None  # the policy's bounds on a delay: a learned delay stays within them
    max_delay_s: float | None = None


@dataclass(frozen=True)
class BudgetInput:
    allowed: bool
    retries: int
    calls: int
    limit: int
    window_s: int
    note: str = ""  # e.g. "the budget store is unreachable"

    def describe(self) -> str:
        return (
            f"{self.retries} of {self.limit} retries used in the last {self.window_s} s ({self.calls} calls)"
        )


@dataclass(frozen=True)
class BreakerInput:
    state: str  # closed, half_open, open, forced_open, forced_closed, disabled, unknown
    open_for_s: float | None = None  # open: seconds until a trial call; forced_open: until the override ends


@dataclass(frozen=True)
class OptionInput:
    """One fallback option as it stands now."""

    id: int | None
    position: int
    kind: str  # service, cache, static, skip
    available: bool
    why: str
    scope: str = ""  # the operation it was configured for; "" for every operation
    service: str | None = None
    operation: str | None = None
    value: Any = None
    cached_at: str | None = None
    age_s: float | None = None
    warning: str | None = None


@dataclass(frozen=True)
class LearnedInput:
    """What was learned of one action for this error (recovery.learning.selectors.for_planner), as plain
    numbers so that the plan's `inputs` keep it and a decision can be replayed. `tries` and `successes` are
    decayed weights (recent results weigh more); the bounds are their Wilson interval."""

    action: str  # an action key (recovery/learning/stats.py): retry, wait, fallback:cache, ...
    scope: str  # pattern (this error's pattern) or service (this service and error class)
    tries: float
    successes: float
    lower_bound: float
    upper_bound: float
    trusted: bool  # enough tries to act on (LEARNING_MIN_TRIES)
    delay_s: float | None = None  # retries and waits that worked: mean seconds after the first failure


@dataclass(frozen=True)
class Inputs:
    service: str
    operation: str
    error_class: str
    kind: str
    severity: str
    needs_human: bool
    retry_after_s: float | None
    attempt: int
    elapsed_s: float | None
    idempotent: bool
    has_idempotency_key: bool
    operation_critical: bool | None  # None: no Operation row (the service's criticality decides)
    essential: bool
    policy: PolicyInput
    budget: BudgetInput
    breaker: BreakerInput
    degradation_level: str = "normal"
    skipped_at_level: bool = False  # the degradation level says agents skip this service
    chain: tuple[OptionInput, ...] = field(default_factory=tuple)
    learned: tuple[LearnedInput, ...] = ()
    half_life_days: float = 7.0  # how the learned figures weigh time, for the reason's words

    @property
    def critical(self) -> bool:
        return self.operation_critical if self.operation_critical is not None else self.essential


@dataclass(frozen=True)
class Decision:
    action: str
    reason: str
    delay_s: float | None = None
    fallback: OptionInput | None = None
    attempts_left: int | None = None
    chain_exhausted: bool = False  # a fallback was looked for and none was available
    retry_refused: str | None = None  # policy, attempts, deadline, idempotency, budget, breaker
    escalation_level: str | None = None  # escalate only: HUMAN_LEVEL or CRITICAL_LEVEL


def seconds(value: float) -> str:
    return f"{round(value, 3):g} s"


# --- The tree ----------------------------------------------------------------------------------------------


def decide(i: Inputs) -> Decision:
    if i.error_class == ErrorClass.FATAL:
        return Decision(ABORT, f"a fatal error ({i.kind}): no retry or fallback can help; back to the caller")
    if i.error_class == ErrorClass.AUTHENTICATION or i.kind in HUMAN_KINDS or i.needs_human:
        return Decision(
            ESCALATE,
            f"{_human_words(i)}: a human must act (credentials, permissions or quota)",
            escalation_level=HUMAN_LEVEL,
        )
    if i.error_class == ErrorClass.VALIDATION:
        if i.kind == ErrorKind.UNIMPLEMENTED:
            return _fall_back(i, f"{_where(i)} is not implemented", tail=_abort_unimplemented)
        return Decision(
            ABORT, f"a validation error ({i.kind}): the request itself must change; back to the caller"
        )
    if i.breaker.state in OPEN_STATES:
        return _with_learning(i, _breaker_open(i))
    if i.error_class == ErrorClass.RATE_LIMIT:
        return _with_learning(i, _rate_limited(i))
    return _with_learning(i, _retry_or_recover(i))


def _human_words(i: Inputs) -> str:
    if i.kind == ErrorKind.AUTHENTICATION_FAILED:
        return "authentication failed"
    if i.kind == ErrorKind.PERMISSION_DENIED:
        return "permission denied"
    return f"a {i.error_class} error ({i.kind}) that needs a human"


def _where(i: Inputs) -> str:
    return f"{i.service}/{i.operation}" if i.operation else i.service


def _breaker_words(i: Inputs) -> str:
    return f"the breaker of {i.service} is {i.breaker.state.replace('_', ' ')}"


def _breaker_wait_words(i: Inputs, delay: float) -> str:
    until = "a trial call is let through" if i.breaker.state == "open" else "the operator's override ends"
    return f"wait {seconds(delay)} until {until}"


def _breaker_open(i: Inputs) -> Decision:
    why = _breaker_words(i)
    if i.breaker.open_for_s is None:
        why += " with no end set"

    def wait_or_give_up(i: Inputs, why: str) -> Decision:
        refused = _refusal(i, i.breaker.open_for_s or 0.0, budget=False, idempotency=False)
        if i.breaker.open_for_s is None:
            return _degrade_or_escalate(i, why, chain_exhausted=True, refused="breaker")
        if refused is not None:
            return _degrade_or_escalate(i, f"{why}; {refused[1]}", chain_exhausted=True, refused=refused[0])
        return Decision(
            WAIT,
            f"{why}: {_breaker_wait_words(i, i.breaker.open_for_s)}",
            delay_s=i.breaker.open_for_s,
            attempts_left=i.policy.attempts_left,
            chain_exhausted=True,
            retry_refused="breaker",
        )

    return _fall_back(i, why, tail=wait_or_give_up, refused="breaker")


def _rate_limited(i: Inputs) -> Decision:
    delay = i.retry_after_s if i.retry_after_s else i.policy.delay_s
    # A rate-limited call was refused, not run: trying it again is safe even when it is not idempotent.
    refused = _refusal(i, delay, budget=False, idempotency=False)
    if refused is None:
        return Decision(
            WAIT,
            f"rate limited: {_rate_wait_words(i, delay)}",
            delay_s=delay,
            attempts_left=i.policy.attempts_left,
        )
    return _fall_back(
        i, f"rate limited and {refused[1]}", refused=refused[0], attempts_left=i.policy.attempts_left
    )


def _rate_wait_words(i: Inputs, delay: float, source: str = "") -> str:
    source = source or ("Retry-After" if i.retry_after_s else f"policy {i.policy.name}")
    return f"wait {seconds(delay)} ({source}), then try again; {i.policy.attempts_left} attempt(s) left"


def _error_words(i: Inputs) -> str:
    return f"a {i.error_class} error ({i.kind})"


def _retry_words(i: Inputs, delay: float, timing: str = "") -> str:
    timing = f" ({timing})" if timing else ""
    return (
        f"retry in {seconds(delay)}{timing}, attempt {i.attempt + 1} of {i.policy.max_attempts} "
        f"(policy {i.policy.name})"
    )


def _retry_or_recover(i: Inputs) -> Decision:
    refused = _refusal(i, i.policy.delay_s)
    if refused is None:
        return Decision(
            RETRY,
            f"{_error_words(i)}: {_retry_words(i, i.policy.delay_s)}",
            delay_s=i.policy.delay_s,
            attempts_left=i.policy.attempts_left,
        )
    return _fall_back(
        i,
        f"a {i.error_class} error ({i.kind}), not retried: {refused[1]}",
        refused=refused[0],
        attempts_left=i.policy.attempts_left,
    )


def _refusal(
    i: Inputs, delay: float, *, budget: bool = True, idempotency: bool = True
) -> tuple[str, str] | None:
    """Why another attempt is not allowed, as (code, words); None when it is."""
    p = i.policy
    if p.name is None:
        return "policy", "no retry policy applies"
    if not p.retries_class:
        return "policy", f"policy {p.name} does not retry {i.error_class} errors"
    if p.attempts_left <= 0:
        return (
            "attempts",
            f"policy {p.name} is exhausted: it allows {p.max_attempts} attempt(s) and attempt {i.attempt} failed",
        )
    if p.deadline_s is not None and i.elapsed_s is not None and i.elapsed_s + delay > p.deadline_s:
        return (
            "deadline",
            f"policy {p.name}'s deadline of {seconds(p.deadline_s)} would pass "
            f"({seconds(i.elapsed_s)} elapsed + {seconds(delay)} to wait)",
        )
    if idempotency and not i.idempotent and not i.has_idempotency_key:
        return "idempotency", f"{_where(i)} is not idempotent and no idempotency_key was sent"
    if budget and not i.budget.allowed:
        b = i.budget
        note = f"; {b.note}" if b.note else ""
        return (
            "budget",
            f"the retry budget of {i.service} is spent: {b.describe()}{note}",
        )
    return None


# --- Fallbacks, then degrade or escalate -------------------------------------------------------------------

Tail = Callable[[Inputs, str], Decision]


def first_available(chain: tuple[OptionInput, ...]) -> OptionInput | None:
    return next((option for option in chain if option.available), None)


def describe_option(option: OptionInput) -> str:
    if option.kind == "service":
        target = f"{option.service}/{option.operation}" if option.operation else str(option.service)
        return f"{target} (position {option.position})"
    if option.kind == "cache":
        return f"the cached result of {seconds(option.age_s or 0)} ago (position {option.position})"
    if option.kind == "static":
        return f"the static default (position {option.position})"
    return f"skipping it (position {option.position})"


def _no_fallback_words(chain: tuple[OptionInput, ...]) -> str:
    if not chain:
        return "no fallback is configured"
    return "no fallback is available (" + "; ".join(f"{o.kind}: {o.why}" for o in chain) + ")"


def _fall_back(
    i: Inputs,
    why: str,
    *,
    tail: Tail | None = None,
    refused: str | None = None,
    attempts_left: int | None = None,
) -> Decision:
    option = first_available(i.chain)
    if option is not None and option.kind == SKIP:
        warning = f": {option.warning}" if option.warning else ""
        return Decision(
            DEGRADE,
            f"{why}; skip it with a partial result (position {option.position}){warning}",
            fallback=option,
            attempts_left=attempts_left,
            retry_refused=refused,
        )
    if option is not None:
        return Decision(
            FALLBACK,
            f"{why}; fall back to {describe_option(option)}",
            fallback=option,
            attempts_left=attempts_left,
            retry_refused=refused,
        )
    why = f"{why}; {_no_fallback_words(i.chain)}"
    if tail is not None:
        return tail(i, why)
    return _degrade_or_escalate(i, why, chain_exhausted=True, refused=refused, attempts_left=attempts_left)


def _abort_unimplemented(i: Inputs, why: str) -> Decision:
    return Decision(ABORT, f"{why}: back to the caller", chain_exhausted=True)


def criticality_words(i: Inputs) -> str:
    if i.operation_critical is not None:
        return f"operation {i.operation} is {'critical' if i.operation_critical else 'non-critical'}"
    return f"{i.service} is {'essential' if i.essential else 'non-critical'}"


def _degrade_or_escalate(
    i: Inputs,
    why: str,
    *,
    chain_exhausted: bool = False,
    refused: str | None = None,
    attempts_left: int | None = None,
) -> Decision:
    common: dict[str, Any] = {
        "chain_exhausted": chain_exhausted,
        "retry_refused": refused,
        "attempts_left": attempts_left,
    }
    if i.skipped_at_level:
        return Decision(
            DEGRADE,
            f"{why}; the degradation level is {i.degradation_level}, at which agents skip {i.service}: "
            "continue without it",
            **common,
        )
    if not i.critical:
        return Decision(
            DEGRADE, f"{why}; {criticality_words(i)}: skip it and continue with a partial result", **common
        )
    return Decision(
        ESCALATE,
        f"{why}; {criticality_words(i)}: a human must decide",
        escalation_level=CRITICAL_LEVEL,
        **common,
    )


# --- What was learned: a proven better choice, and a retry's timing -----------------------------------------


@dataclass(frozen=True)
class _Candidate:
    """An action the tree permits at this point, as the tree would decide it, and its learning key."""

    key: str
    decision: Decision


def _learned(i: Inputs) -> dict[str, LearnedInput]:
    return {f.action: f for f in i.learned}


def action_key(decision: Decision) -> str | None:
    """The learning key of a decision (recovery/learning/stats.py); None for the actions learning never picks."""
    if decision.action in (RETRY, WAIT):
        return decision.action
    if decision.action == FALLBACK and decision.fallback is not None:
        return _option_key(decision.fallback)
    return None


def _option_key(option: OptionInput) -> str:
    return stats.fallback_key(option.kind, option.service, option.operation)


def _candidates(i: Inputs) -> list[_Candidate]:
    """What the tree permits in the branch `i` falls in (steps 4 to 6 only), each built as the tree would build
    it: a retry the policy, deadline, idempotency and budget allow; a wait for a rate limit or an open breaker
    with an end; each available fallback that is not a skip. Never degrade, escalate, abort or skip."""
    out: list[_Candidate] = []
    attempts_left: int | None
    refused: str | None
    if i.breaker.state in OPEN_STATES:
        situation, attempts_left, refused = _breaker_words(i), None, "breaker"
        end = i.breaker.open_for_s
        if end is not None and _refusal(i, end, budget=False, idempotency=False) is None:
            wait = Decision(
                WAIT,
                f"{situation}: {_breaker_wait_words(i, end)}",
                delay_s=end,
                attempts_left=i.policy.attempts_left,
                retry_refused="breaker",
            )
            out.append(_Candidate(stats.WAIT, wait))
    elif i.error_class == ErrorClass.RATE_LIMIT:
        situation, attempts_left = "rate limited", i.policy.attempts_left
        delay = i.retry_after_s if i.retry_after_s else i.policy.delay_s
        refusal = _refusal(i, delay, budget=False, idempotency=False)
        refused = refusal[0] if refusal else None
        if refusal is None:
            wait = Decision(
                WAIT, f"{situation}: {_rate_wait_words(i, delay)}", delay_s=delay, attempts_left=attempts_left
            )
            out.append(_Candidate(stats.WAIT, wait))
    else:
        situation, attempts_left = _error_words(i), i.policy.attempts_left
        refusal = _refusal(i, i.policy.delay_s)
        refused = refusal[0] if refusal else None
        if refusal is None:
            retry = Decision(
                RETRY,
                f"{situation}: {_retry_words(i, i.policy.delay_s)}",
                delay_s=i.policy.delay_s,
                attempts_left=attempts_left,
            )
            out.append(_Candidate(stats.RETRY, retry))
    for option in i.chain:
        if option.available and option.kind != SKIP:
            fallback = Decision(
                FALLBACK,
                f"{situation}: fall back to {describe_option(option)}",
                fallback=option,
                attempts_left=attempts_left,
                retry_refused=refused,
            )
            out.append(_Candidate(_option_key(option), fallback))
    return out


def _with_learning(i: Inputs, tree: Decision) -> Decision:
    """The tree's decision, or a candidate proven better by what was learned; then a retry's learned timing.

    Proven better: a trusted candidate whose lower bound is above the upper bound of the tree's choice. The
    tree's choice without figures has an upper bound of 1, so an untried default is never abandoned (its own
    results will come); a candidate with too few tries is never chosen, however lucky."""
    if not i.learned:
        return tree
    key = action_key(tree)
    if key is None:
        return tree  # degrade, escalate, abort: learning does not change them
    learned = _learned(i)
    current = learned.get(key)
    best: tuple[_Candidate, LearnedInput] | None = None
    for candidate in _candidates(i):
        figure = learned.get(candidate.key)
        if candidate.key == key or figure is None or not figure.trusted:
            continue
        if (
            best is None or figure.lower_bound > best[1].lower_bound
        ):  # ties: the tree's order (chain position)
            best = candidate, figure
    # The tree's choice without figures has an upper bound of 1, which no lower bound exceeds: it stands.
    if best is not None and current is not None and best[1].lower_bound > current.upper_bound:
        chosen, figure = best
        return replace(
            chosen.decision, reason=f"{chosen.decision.reason}: {_switch_words(i, figure, current)}"
        )
    decision = _timed(i, tree, current)
    if current is not None and current.trusted:
        decision = replace(decision, reason=f"{decision.reason}; learned: {_recovered(current, scoped=True)}")
    return decision


def _scope_words(scope: str) -> str:
    return "this pattern" if scope == "pattern" else "this service and error class"


def _whole(value: float) -> str:
    return f"{round(value):d}"


def _recovered(figure: LearnedInput, *, scoped: bool) -> str:
    where = f" for {_scope_words(figure.scope)}" if scoped else ""
    return (
        f"{stats.words(figure.action)} recovered {_whole(figure.successes)} of {_whole(figure.tries)}{where}"
    )


def _half_life_words(i: Inputs) -> str:
    days = f"{i.half_life_days:g} day{'' if i.half_life_days == 1 else 's'}"
    return f"recent results weigh more: half-life {days}"


def _switch_words(i: Inputs, chosen: LearnedInput, current: LearnedInput) -> str:
    """e.g. "learned for this pattern, fallback to cache recovered 47 of 50 and retry 0 of 12 (...)"."""
    theirs = f"{stats.words(current.action)} {_whole(current.successes)} of {_whole(current.tries)}"
    if chosen.scope == current.scope:
        figures = f"learned for {_scope_words(chosen.scope)}, {_recovered(chosen, scoped=False)} and {theirs}"
    else:
        figures = f"learned, {_recovered(chosen, scoped=True)} and {theirs} for {_scope_words(current.scope)}"
    return f"{figures} ({_half_life_words(i)})"


def _timed(i: Inputs, decision: Decision, figure: LearnedInput | None) -> Decision:
    """A retry (or a rate limit's wait without Retry-After) at the delay at which this error's retries have
    worked: learned delay minus the time already spent, within the policy's bounds, and only if the policy's
    deadline still allows it. A server's Retry-After is never overridden."""
    rate_wait = decision.action == WAIT and i.error_class == ErrorClass.RATE_LIMIT
    if decision.action != RETRY and not (rate_wait and i.breaker.state not in OPEN_STATES):
        return decision
    low, high = i.policy.base_delay_s, i.policy.max_delay_s
    if i.retry_after_s or figure is None or not figure.trusted or figure.delay_s is None:
        return decision
    if low is None or high is None:
        return decision
    suggested = round(min(max(figure.delay_s - (i.elapsed_s or 0.0), low), high), 3)
    if decision.delay_s is not None and abs(suggested - decision.delay_s) < 0.001:
        return decision  # the policy's own delay already is the learned one (or its bounds leave no room)
    if decision.action == RETRY and _refusal(i, suggested) is not None:
        return decision
    if rate_wait and _refusal(i, suggested, budget=False, idempotency=False) is not None:
        return decision
    kind = "retries" if decision.action == RETRY else "waits"
    timing = (
        f"learned: {kind} of {_scope_words(figure.scope)} worked {seconds(figure.delay_s)} after the first "
        f"failure; policy bounds {low:g}-{high:g} s"
    )
    if decision.action == RETRY:
        reason = f"{_error_words(i)}: {_retry_words(i, suggested, timing)}"
    else:
        reason = f"rate limited: {_rate_wait_words(i, suggested, source=timing)}"
    return replace(decision, reason=reason, delay_s=suggested)


# --- Every option, with why it is or is not available now --------------------------------------------------


@dataclass(frozen=True)
class Availability:
    action: str
    available: bool
    why: str
    delay_s: float | None = None
    fallback: OptionInput | None = None


def options(i: Inputs) -> list[Availability]:
    """What the caller could do now and why each is or is not possible: the planner's inputs, laid out, each
    with what was learned of it when anything was."""
    listed = [
        _retry_option(i),
        *[Availability(FALLBACK, o.available, o.why, fallback=o) for o in i.chain],
        _wait_option(i),
        _degrade_option(i),
        Availability(
            ESCALATE,
            True,
            "a human can always be asked; the planner escalates authentication, permission and quota errors, "
            f"and critical work once nothing else is left ({criticality_words(i)})",
        ),
        Availability(ABORT, True, "return the error to the caller"),
    ]
    if not i.learned:
        return listed
    learned = _learned(i)
    return [_with_figure(a, learned) for a in listed]


def _with_figure(option: Availability, learned: dict[str, LearnedInput]) -> Availability:
    key = _option_key(option.fallback) if option.action == FALLBACK and option.fallback else option.action
    figure = learned.get(key)
    if figure is None:
        return option
    trust = "" if figure.trusted else ", too few to trust yet"
    note = (
        f"; learned: {_whole(figure.successes)} of {_whole(figure.tries)} recovered for "
        f"{_scope_words(figure.scope)}{trust}"
    )
    return replace(option, why=option.why + note)


def _retry_option(i: Inputs) -> Availability:
    if i.error_class in (ErrorClass.FATAL, ErrorClass.AUTHENTICATION, ErrorClass.VALIDATION):
        return Availability(RETRY, False, f"{i.error_class} errors are never retried")
    if i.breaker.state in OPEN_STATES:
        return Availability(
            RETRY, False, f"the breaker of {i.service} is {i.breaker.state.replace('_', ' ')}"
        )
    refused = _refusal(i, i.policy.delay_s, idempotency=i.error_class != ErrorClass.RATE_LIMIT)
    if refused is not None:
        return Availability(RETRY, False, refused[1])
    why = (
        f"policy {i.policy.name}: {i.policy.attempts_left} more attempt(s), next after "
        f"{seconds(i.policy.delay_s)}; budget: {i.budget.describe()}; breaker {i.breaker.state.replace('_', ' ')}"
    )
    return Availability(RETRY, True, why, delay_s=i.policy.delay_s)


def _wait_option(i: Inputs) -> Availability:
    if i.breaker.state in OPEN_STATES:
        if i.breaker.open_for_s is None:
            return Availability(WAIT, False, f"the breaker of {i.service} is forced open with no end set")
        return Availability(
            WAIT,
            True,
            f"the breaker of {i.service} lets calls through again in {seconds(i.breaker.open_for_s)}",
            delay_s=i.breaker.open_for_s,
        )
    if i.error_class == ErrorClass.RATE_LIMIT:
        delay = i.retry_after_s if i.retry_after_s else i.policy.delay_s
        refused = _refusal(i, delay, budget=False, idempotency=False)
        if refused is not None:
            return Availability(WAIT, False, refused[1])
        return Availability(WAIT, True, f"rate limited: wait {seconds(delay)}, then try again", delay_s=delay)
    return Availability(WAIT, False, "nothing to wait for: the breaker is not open and this is no rate limit")


def _degrade_option(i: Inputs) -> Availability:
    level = f"degradation level {i.degradation_level}"
    if i.skipped_at_level:
        return Availability(DEGRADE, True, f"{level}: agents skip {i.service}")
    skip = next((o for o in i.chain if o.kind == SKIP and o.available), None)
    if skip is not None:
        return Availability(
            DEGRADE, True, f"a skip option (position {skip.position}); {level}", fallback=skip
        )
    if not i.critical:
        return Availability(DEGRADE, True, f"{criticality_words(i)}: it may be skipped; {level}")
    return Availability(DEGRADE, False, f"{criticality_words(i)}: it may not be skipped; {level}")

"""The arithmetic of error learning, pure: decayed weights, the Wilson bounds, and the action keys.

A result counts 1 when it comes and half as much every half-life after. Decaying a sum is multiplying it by
0.5 ** (elapsed / half_life), the same factor for every term, so a row keeps only its sums and the moment they are
as of: a new result decays the sums to its own moment and adds itself (`fold`), a read decays them to now
(`figures`). Nothing is ever recomputed from history.

Why Wilson: a success share from few tries says little (3 of 3 is not "100 %"); the Wilson score interval's
lower bound is what the share is at least, with 95 % confidence, and its upper bound what it is at most. The
planner moves away from the decision tree's choice only to an action whose lower bound is above the choice's
upper bound: proven better, not merely luckier (recovery/decisions/planner.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

Z_95 = 1.959964  # two-sided 95 %
DAY_S = 86_400.0


def decay_factor(from_s: float, to_s: float, half_life_s: float) -> float:
    """How much a weight as of `from_s` is worth at `to_s`. Never more than 1: a clock that went back (two
    processes a few milliseconds apart) leaves the weights as they are rather than growing them."""
    if to_s <= from_s:
        return 1.0
    return float(0.5 ** ((to_s - from_s) / half_life_s))


def wilson(successes: float, tries: float, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a success share, for weighted (fractional) counts too; (0, 1) for none."""
    if tries <= 0:
        return 0.0, 1.0
    p = min(max(successes / tries, 0.0), 1.0)
    z2 = z * z
    centre = p + z2 / (2 * tries)
    spread = z * math.sqrt(p * (1 - p) / tries + z2 / (4 * tries * tries))
    denominator = 1 + z2 / tries
    return max(0.0, (centre - spread) / denominator), min(1.0, (centre + spread) / denominator)


@dataclass(frozen=True)
class Sums:
    """A row's decayed sums, as of `as_of_s`."""

    tries: float = 0.0
    successes: float = 0.0
    recover_s_sum: float = 0.0
    delay_s_sum: float = 0.0
    delay_weight: float = 0.0
    as_of_s: float = 0.0

    def at(self, now_s: float, half_life_s: float) -> Sums:
        f = decay_factor(self.as_of_s, now_s, half_life_s)
        return Sums(
            self.tries * f,
            self.successes * f,
            self.recover_s_sum * f,
            self.delay_s_sum * f,
            self.delay_weight * f,
            max(self.as_of_s, now_s),
        )


def fold(
    sums: Sums,
    *,
    at_s: float,
    half_life_s: float,
    succeeded: bool,
    recover_s: float | None = None,
    recovered_after_s: float | None = None,
) -> Sums:
    """The sums with one more result, as of that result's moment. An unknown result is a try without a success."""
    now = sums.at(at_s, half_life_s)
    if not succeeded:
        return replace(now, tries=now.tries + 1)
    out = replace(now, tries=now.tries + 1, successes=now.successes + 1)
    if recover_s is not None:
        out = replace(out, recover_s_sum=out.recover_s_sum + max(recover_s, 0.0))
    if recovered_after_s is not None:
        out = replace(
            out,
            delay_s_sum=out.delay_s_sum + max(recovered_after_s, 0.0),
            delay_weight=out.delay_weight + 1,
        )
    return out


def retract(sums: Sums, *, at_s: float, originally_at_s: float, half_life_s: float) -> Sums:
    """The sums with a success counted at `originally_at_s` turned into a failure (a plan resolved as it was
    answered, whose recovery the agent later said failed): its weight now is what it was worth then, decayed."""
    now = sums.at(at_s, half_life_s)
    weight = decay_factor(originally_at_s, at_s, half_life_s)
    return replace(now, successes=max(now.successes - weight, 0.0))


@dataclass(frozen=True)
class Figures:
    """One row's figures as of a moment: what the API, the admin, MCP and the planner read."""

    tries: float
    successes: float
    success_rate: float | None  # None: no tries
    lower_bound: float
    upper_bound: float
    trusted: bool  # tries >= LEARNING_MIN_TRIES
    recover_s: float | None  # mean seconds to recover, over the successes
    delay_s: float | None  # retries and waits that worked: mean seconds after the first failure


def figures(sums: Sums, *, now_s: float, half_life_s: float, min_tries: float) -> Figures:
    s = sums.at(now_s, half_life_s)
    low, high = wilson(s.successes, s.tries)
    return Figures(
        tries=s.tries,
        successes=s.successes,
        success_rate=s.successes / s.tries if s.tries > 0 else None,
        lower_bound=low,
        upper_bound=high,
        trusted=s.tries >= min_tries,
        recover_s=s.recover_s_sum / s.successes if s.successes > 1e-9 else None,
        delay_s=s.delay_s_sum / s.delay_weight if s.delay_weight > 1e-9 else None,
    )


# --- Action keys: what a result is a result of -------------------------------------------------------------

RETRY, WAIT, DEGRADE, ESCALATE, ABORT = "retry", "wait", "degrade", "escalate", "abort"
SERVER_RETRY = "server_retry"


def fallback_key(kind: str, service: str | None = None, operation: str | None = None) -> str:
    """fallback:cache, fallback:static, fallback:service:<name>[/<operation>]; a skip option is `degrade`."""
    if kind == "skip":
        return DEGRADE
    if kind == "service":
        return f"fallback:service:{service}" + (f"/{operation}" if operation else "")
    return f"fallback:{kind}"


def healing_key(action_name: str) -> str:
    return f"healing:{action_name}"


def choosable(key: str) -> bool:
    """The keys whose figures the planner may weigh against each other: those it may choose between."""
    return key in (RETRY, WAIT) or key.startswith("fallback:")


def words(key: str) -> str:
    """An action key as a reason says it."""
    if key.startswith("fallback:service:"):
        return f"fallback to {key.removeprefix('fallback:service:')}"
    if key.startswith("fallback:"):
        return f"fallback to {key.removeprefix('fallback:')}"
    if key.startswith("healing:"):
        return f"healing action {key.removeprefix('healing:')}"
    return key.replace("_", " ")

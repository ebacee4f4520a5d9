"""A check's verdict from its results: the rise/fall hysteresis of HAProxy and Envoy, as one pure function.

    unknown --(rise passes in a row)--> healthy --(fall failures in a row)--> unhealthy
    unknown --(fall failures in a row)--> unhealthy --(rise passes in a row)--> healthy

Each result extends its own streak and ends the other one: a pass resets the failures, a failure the passes. A
single odd result inside a streak therefore never flips a check; it only starts the count over.
"""

from __future__ import annotations

from dataclasses import dataclass

UNKNOWN, HEALTHY, UNHEALTHY = "unknown", "healthy", "unhealthy"


@dataclass(frozen=True)
class Step:
    """Where one result leaves a check: its state and both streaks, and whether the state changed."""

    state: str
    consecutive_passes: int
    consecutive_failures: int
    changed: bool


def step(state: str, passes: int, failures: int, ok: bool, *, rise: int, fall: int) -> Step:
    """The check's state after one more result."""
    if ok:
        passes, failures = passes + 1, 0
        new = HEALTHY if state != HEALTHY and passes >= rise else state
    else:
        passes, failures = 0, failures + 1
        new = UNHEALTHY if state != UNHEALTHY and failures >= fall else state
    return Step(new, passes, failures, new != state)

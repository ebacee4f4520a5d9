"""The rise/fall hysteresis, table-driven: the pure step, and the same sequences recorded as results (each a
row, each change of state a transition row with its reason and result)."""

from __future__ import annotations

import pytest

from healing.checks import services, states
from healing.checks.models import HealthCheck, HealthCheckResult, HealthCheckTransition
from healing.checks.probes import Outcome
from tests.support.health_checks import make_check

# (rise, fall, results: P pass / F fail, the state after each result)
SEQUENCES = [
    (2, 3, "PP", ["unknown", "healthy"]),
    (2, 3, "FFF", ["unknown", "unknown", "unhealthy"]),
    (2, 3, "PPFFF", ["unknown", "healthy", "healthy", "healthy", "unhealthy"]),
    (2, 3, "PPFFPFF", ["unknown", "healthy", "healthy", "healthy", "healthy", "healthy", "healthy"]),
    (2, 3, "FFFPFPP", ["unknown", "unknown", "unhealthy", "unhealthy", "unhealthy", "unhealthy", "healthy"]),
    (2, 3, "PFPFPF", ["unknown"] * 6),
    (1, 1, "PFPF", ["healthy", "unhealthy", "healthy", "unhealthy"]),
    (1, 1, "FFPP", ["unhealthy", "unhealthy", "healthy", "healthy"]),
    (3, 2, "PPFFPPP", ["unknown", "unknown", "unknown", "unhealthy", "unhealthy", "unhealthy", "healthy"]),
]
IDS = [f"rise{r}-fall{f}-{seq}" for r, f, seq, _ in SEQUENCES]


def walk(rise: int, fall: int, sequence: str) -> list[states.Step]:
    state, passes, failures, steps = states.UNKNOWN, 0, 0, []
    for letter in sequence:
        step = states.step(state, passes, failures, letter == "P", rise=rise, fall=fall)
        state, passes, failures = step.state, step.consecutive_passes, step.consecutive_failures
        steps.append(step)
    return steps


@pytest.mark.parametrize(("rise", "fall", "sequence", "expected"), SEQUENCES, ids=IDS)
def test_it_steps_through_the_states(rise: int, fall: int, sequence: str, expected: list[str]) -> None:
    assert [s.state for s in walk(rise, fall, sequence)] == expected


def test_it_keeps_each_streak_and_ends_the_other() -> None:
    steps = walk(2, 3, "PPPFFP")
    assert [(s.consecutive_passes, s.consecutive_failures) for s in steps] == [
        (1, 0),
        (2, 0),
        (3, 0),
        (0, 1),
        (0, 2),
        (1, 0),
    ]
    assert [s.changed for s in steps] == [False, True, False, False, False, False]


@pytest.mark.django_db
@pytest.mark.parametrize(("rise", "fall", "sequence", "expected"), SEQUENCES, ids=IDS)
def test_it_records_every_result_and_every_change(
    rise: int, fall: int, sequence: str, expected: list[str]
) -> None:
    check = make_check(rise=rise, fall=fall)
    seen = []
    for letter in sequence:
        ok = letter == "P"
        services.record(check.pk, Outcome(ok, 12.5, None, "" if ok else "boom"), source="manual")
        check.refresh_from_db()
        seen.append(check.state)
    assert seen == expected
    assert HealthCheckResult.objects.filter(health_check=check).count() == len(sequence)
    moves = list(HealthCheckTransition.objects.filter(health_check=check).order_by("id"))
    changes = [(a, b) for a, b in zip(["unknown", *expected], expected, strict=False) if a != b]
    assert [(m.from_state, m.to_state) for m in moves] == changes
    for move in moves:
        assert move.result is not None and move.result.ok == (move.to_state == "healthy")
        assert move.reason == (
            f"passed {rise} checks" if move.to_state == "healthy" else f"failed {fall} checks in a row: boom"
        )


@pytest.mark.django_db
def test_it_stamps_the_state_change_and_leaves_the_settings_time() -> None:
    check = make_check(rise=1)
    updated_at = check.updated_at
    services.record(check.pk, Outcome(True), source="manual")
    check.refresh_from_db()
    assert check.state == HealthCheck.State.HEALTHY
    assert check.state_changed_at is not None
    assert check.updated_at == updated_at  # the settings did not change

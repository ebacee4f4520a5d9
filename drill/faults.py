"""The fault schedule and the task list, as pure functions of the scenario and the seed.

Every random draw is a hash of (seed, what is drawn, and the call's identity: service, task id, step, attempt),
never a shared RNG: both fleets get an identical copy of the faults whatever order their calls arrive in, and a
seed repeats a run exactly. Time-based faults (outages) depend on the time since t0 alone; the one stateful
fault, `hold_s` (a task that got a 503 keeps getting them for a while), takes its state from the caller (the
loopback server keeps it per fleet, so each fleet has its own copy)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from drill.scenario import Scenario, ServiceSpec

UNAUTHORIZED, RATE_LIMITED, UNAVAILABLE, OK = 401, 429, 503, 200


def draw(seed: int, *parts: object) -> float:
    """A number in [0, 1) fixed by the seed and the parts."""
    text = "|".join([str(seed), *(str(p) for p in parts)])
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: cut the connection without an answer (down hard)
    delay_s: float = 0.0  # wait this long before answering (a slow call)
    retry_after_s: float | None = None  # for a 429
    down: bool = False
    hold_until_s: float | None = None  # a 503 that starts (or extends) the task's hold on this service
    why: str = "ok"

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def is_down(service: ServiceSpec, t_s: float) -> bool:
    return any(w.from_s <= t_s < w.to_s for w in service.faults.outages)


def answer(
    service: ServiceSpec,
    seed: int,
    *,
    task_id: str,
    step: int,
    attempt: int,
    t_s: float,
    held_until_s: float | None = None,
) -> Answer:
    """What the loopback server does with this call: always-401 first (a permanent failure), then an outage,
    then a task's hold, then the drawn 503 or 429, then a drawn slow success."""
    f = service.faults
    if f.always_401:
        return Answer(UNAUTHORIZED, why="always 401")
    if is_down(service, t_s):
        return Answer(None, down=True, why="down hard")
    if held_until_s is not None and t_s < held_until_s:
        return Answer(f.transient_status, why="held")
    identity = (service.name, task_id, step, attempt)
    u = draw(seed, "fault", *identity)
    if u < f.transient_rate:
        hold = t_s + f.hold_s if f.hold_s > 0 else None
        return Answer(f.transient_status, hold_until_s=hold, why="transient")
    if u < f.transient_rate + f.rate_limit_rate:
        return Answer(RATE_LIMITED, retry_after_s=f.retry_after_s, why="rate limited")
    if draw(seed, "slow", *identity) < f.slow_rate:
        return Answer(OK, delay_s=f.slow_s, why="slow")
    return Answer(OK)


# --- the task list ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedTask:
    agent: int
    index: int
    task_id: str  # "t<agent>-<index>", the same in both fleets
    steps: tuple[str, ...]
    start_s: float  # since t0: the earliest it starts (after the agent's previous task)
    permanent: bool


def tasks(scenario: Scenario, seed: int, agent: int | None = None) -> list[PlannedTask]:
    """Every task of the run (or of one agent), in each agent's order. An agent's tasks start evenly over the
    duration, each shifted by a drawn fraction of its slot so that agents do not move in lockstep."""
    agents = range(scenario.agents) if agent is None else [agent]
    slot = scenario.duration_s / scenario.tasks_per_agent
    permanent = set(scenario.permanent_services)
    planned = []
    for a in agents:
        for i in range(scenario.tasks_per_agent):
            task_id = f"t{a}-{i}"
            steps = _pick(scenario, seed, task_id)
            start = slot * (i + draw(seed, "start", task_id) * 0.9)
            planned.append(PlannedTask(a, i, task_id, steps, round(start, 3), bool(permanent & set(steps))))
    return planned


def _pick(scenario: Scenario, seed: int, task_id: str) -> tuple[str, ...]:
    total = sum(kind.weight for kind in scenario.tasks)
    target = draw(seed, "kind", task_id) * total
    for kind in scenario.tasks:
        target -= kind.weight
        if target < 0:
            return kind.steps
    return scenario.tasks[-1].steps

"""What one drill run leaves behind, as plain data: the runner (drill/runner.py) fills it from the agents' result
files, the loopback server's call log and Rebound's escalation queue; the report (drill/report.py) reads only
this. Times are seconds since the run's t0 (the moment the faults' clock started), the same clock for both
fleets and the server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Fleet = Literal["rebound", "naive"]
FLEETS: tuple[Fleet, Fleet] = ("rebound", "naive")
# completed: every step done (degraded steps included, `partial` says so); failed: given up with no one told;
# escalated: handed to a human through the escalation queue (rebound only); lost: no record came back (the
# agent process died or was killed at the run's deadline).
TaskStatus = Literal["completed", "failed", "escalated", "lost"]


@dataclass(frozen=True)
class PlanSeen:
    """One recovery plan an agent of the rebound fleet was given, as it saw it."""

    plan_id: str
    service: str
    action: str  # retry, fallback, wait, degrade, escalate, abort
    reason: str = ""
    learned: bool = False  # the plan's reason says learning chose or timed it


@dataclass(frozen=True)
class TaskRecord:
    fleet: Fleet
    agent: int  # the agent process's index in its fleet
    task_id: str  # the same id in both fleets: "t<agent>-<index>"
    steps: tuple[str, ...]  # the services it calls, in order
    permanent: bool  # it calls a service that can never answer (its steps cannot all complete)
    status: TaskStatus
    started_s: float | None = None
    ended_s: float | None = None
    partial: bool = False  # completed with a degraded (skipped) step
    calls: int = 0  # calls it sent to the loopback server
    plans: tuple[PlanSeen, ...] = ()
    error: str = ""  # the last error, for failed and escalated tasks


@dataclass(frozen=True)
class CallRecord:
    """One call the loopback server answered (or cut)."""

    fleet: Fleet
    service: str
    t_s: float
    ok: bool
    status: int | None  # None: the connection was cut (down hard)
    down: bool  # the service was down hard when the call came


@dataclass(frozen=True)
class Outage:
    service: str
    from_s: float
    to_s: float  # the moment it answers again


@dataclass(frozen=True)
class EscalationSeen:
    """An escalation of Rebound's queue that a drill service raised or repeated during the run."""

    escalation_id: str
    service: str
    dedup_key: str
    level: str
    state: str
    title: str
    occurrences: int  # how many times it was raised or repeated during the run


@dataclass
class RunData:
    scenario: str
    seed: int
    t0: float  # epoch seconds
    duration_s: float  # how long tasks kept starting
    ended_s: float  # when the last agent finished, since t0
    agents_per_fleet: int
    services: tuple[str, ...]
    permanent_services: tuple[str, ...]  # always answer 401
    outages: tuple[Outage, ...]
    tasks: list[TaskRecord] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    escalations: list[EscalationSeen] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the runner wants the report to say

"""One agent process of a drill fleet:

    python -m drill.agent --fleet rebound|naive --config <json file>

It runs its share of the run's task list (drill/faults.py `tasks`: the same ids, steps and start offsets in
both fleets), each task's steps in order against the loopback server, and writes one JSON line per task (a
TaskRecord) to its result file as the task ends. At the config's deadline it records what is unfinished as
failed with the error "deadline" and exits.

- **rebound** follows Rebound through the real SDK (`rebound_client.Client.call`): guarded calls, outcomes
  reported, plans followed, `service` fallbacks called on the loopback server, cache and static values taken
  as handed back; a checkpoint saved through the REST API after each step and the task completed at the end.
  A plan `escalate` ends the task `escalated`; `degrade` skips the step (the task completes `partial`); a
  breaker's `wait` is waited out while the task's time lasts (the agent keeps its task, as a checkpointed one
  would).
- **naive** retries any error with tenacity: 3 attempts, exponential backoff (1, 2 s; at most 8); a step that
  still fails fails the task.

Imports no Django: the SDK imports httpx only."""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tenacity import Retrying, stop_after_attempt, wait_exponential

from drill import faults
from drill.records import PlanSeen, TaskRecord, TaskStatus
from drill.scenario import Scenario, parse
from rebound_client import (
    Client,
    DegradedError,
    EscalatedError,
    PartialResult,
    Plan,
    ReboundError,
    RecoveryAbortedError,
)

# The longest wait a plan may ask of a step before the agent looks again: a guard against any long wait a task
# could sleep through while the service is healthy (a half-open breaker's refusal is at most the service's
# wait_duration_s, recovery/breakers/logic.trials_full_wait).
MAX_PLAN_WAIT_S = 8.0
RECHECK_S = 1.0
MAX_ATTEMPTS = 10  # the SDK's cap on one step's calls, whatever the plans say
# Plans a task waits out beyond the SDK's attempts: a breaker's refusal, which lets trial calls through soon.
WAIT_ACTIONS = frozenset({"wait"})
# How the planner's reason says that learning chose the action ("...: learned for this pattern, ..." or, when
# the two figures come from different scopes, "...: learned, fallback to x recovered ...") or timed it ("retry in
# 3.8 s (learned: ..."); a plain note on a decision that stood ("; learned: retry recovered 45 of 50") is neither.
LEARNED_MARKS = ("learned for ", ": learned, ", "(learned:")


class Ended(Exception):
    """The task ends here, with this status."""

    def __init__(self, status: TaskStatus, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


@dataclass
class Running:
    """The task in progress, as the deadline would record it."""

    task: faults.PlannedTask
    started_s: float
    calls: int = 0
    partial: bool = False
    plans: list[PlanSeen] = field(default_factory=list)
    attempts: Counter[tuple[int, str]] = field(default_factory=Counter)


@dataclass(frozen=True)
class Config:
    fleet: str
    agent: int
    scenario: Scenario
    seed: int
    t0: float
    deadline: float  # epoch seconds: the process has ended by then
    loopback_url: str
    result_path: Path
    run_id: str
    rebound_url: str = ""
    agent_key: str = ""

    @classmethod
    def read(cls, path: Path, fleet: str) -> Config:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            fleet=fleet,
            agent=int(raw["agent"]),
            scenario=parse(raw["scenario"]),
            seed=int(raw["seed"]),
            t0=float(raw["t0"]),
            deadline=float(raw["deadline"]),
            loopback_url=str(raw["loopback_url"]).rstrip("/"),
            result_path=Path(raw["result_path"]),
            run_id=str(raw["run_id"]),
            rebound_url=str(raw.get("rebound_url") or ""),
            agent_key=str(raw.get("agent_key") or ""),
        )


class Results:
    """The result file: one line per task, each written once, whoever (the run or the deadline) ends it."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.written: set[str] = set()
        self.file = config.result_path.open("a", encoding="utf-8")

    def since_t0(self) -> float:
        return round(time.time() - self.config.t0, 4)

    def write(self, run: Running, status: TaskStatus, error: str = "") -> None:
        record = TaskRecord(
            fleet=self.config.fleet,  # type: ignore[arg-type]  # "rebound" or "naive", checked by main
            agent=self.config.agent,
            task_id=run.task.task_id,
            steps=run.task.steps,
            permanent=run.task.permanent,
            status=status,
            started_s=run.started_s,
            ended_s=self.since_t0(),
            partial=run.partial,
            calls=run.calls,
            plans=tuple(run.plans),
            error=error[:500],
        )
        with self.lock:
            if record.task_id in self.written:
                return
            self.written.add(record.task_id)
            self.file.write(json.dumps(asdict(record)) + "\n")
            self.file.flush()

    def unstarted(self, task: faults.PlannedTask) -> Running:
        return Running(task=task, started_s=self.since_t0())


class Agent:
    """The schedule and the deadline, common to both fleets; `step` is each fleet's way of calling."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.results = Results(config)
        self.planned = faults.tasks(config.scenario, config.seed, config.agent)
        self.current: Running | None = None
        self.http = httpx.Client(timeout=config.scenario.call_timeout_s)

    def left_s(self) -> float:
        return self.config.deadline - time.time()

    def run(self) -> None:
        watchdog = threading.Timer(max(0.0, self.left_s()), self.at_deadline)
        watchdog.daemon = True
        watchdog.start()
        for task in self.planned:
            pause = self.config.t0 + task.start_s - time.time()
            if pause > 0:
                time.sleep(min(pause, max(0.0, self.left_s())))
            self.run_task(task)
        watchdog.cancel()
        self.close()

    def run_task(self, task: faults.PlannedTask) -> None:
        run = Running(task=task, started_s=self.results.since_t0())
        self.current = run
        try:
            self.begin(run)
            for step, service in enumerate(task.steps):
                self.step(run, step, service)
                self.after_step(run, step)
        except Ended as end:
            self.finish(run, end.status, end.error)
            return
        except Exception as error:  # a bug of the drill's must still leave a record
            self.finish(run, "failed", f"drill agent error: {type(error).__name__}: {error}")
            return
        self.finish(run, "completed", "")

    def finish(self, run: Running, status: TaskStatus, error: str) -> None:
        self.end(run, status)
        self.results.write(run, status, error)
        self.current = None

    def at_deadline(self) -> None:
        """Record every unfinished task as failed ("deadline") and leave now, whatever is in flight."""
        current = self.current
        if current is not None:
            self.results.write(current, "failed", "deadline")
        for task in self.planned:
            self.results.write(self.results.unstarted(task), "failed", "deadline")
        self.results.file.close()
        os._exit(0)

    def send(self, run: Running, step: int, service: str) -> Any:
        """One call to the loopback server, named for its faults: task, step and this service's attempt."""
        run.attempts[(step, service)] += 1
        run.calls += 1
        spec = self.config.scenario.service(service)
        operation = spec.operation if spec is not None else "call"
        response = self.http.post(
            f"{self.config.loopback_url}/{self.config.fleet}/{service}/{operation}",
            headers={
                "X-Drill-Task": run.task.task_id,
                "X-Drill-Step": str(step),
                "X-Drill-Attempt": str(run.attempts[(step, service)]),
            },
        )
        response.raise_for_status()
        return response.json()

    # Each fleet's part.
    def begin(self, run: Running) -> None:
        pass

    def step(self, run: Running, step: int, service: str) -> None:
        raise NotImplementedError

    def after_step(self, run: Running, step: int) -> None:
        pass

    def end(self, run: Running, status: TaskStatus) -> None:
        pass

    def close(self) -> None:
        self.results.file.close()


class NaiveAgent(Agent):
    """tenacity: 3 attempts, exponential backoff, any error retried."""

    def step(self, run: Running, step: int, service: str) -> None:
        retrying = Retrying(
            stop=stop_after_attempt(3), wait=wait_exponential(multiplier=1, max=8), reraise=True
        )
        try:
            retrying(self.send, run, step, service)
        except Exception as error:
            raise Ended("failed", f"{service}: {describe(error)}") from error


class RecordingClient(Client):
    """The SDK's client, noting each plan the planner gives (the SDK asks through `plan`)."""

    seen: list[PlanSeen] | None = None

    def plan(self, service: str, error: BaseException, **kwargs: Any) -> Plan:  # type: ignore[override]
        plan = super().plan(service, error, **kwargs)
        if self.seen is not None and plan.from_planner:
            self.seen.append(seen(plan, service))
        return plan


class ReboundAgent(Agent):
    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.client = RecordingClient(config.rebound_url, config.agent_key, timeout_s=5.0)
        self.api = httpx.Client(
            base_url=config.rebound_url,
            headers={"Authorization": f"Bearer {config.agent_key}"},
            timeout=10.0,
        )
        self.api_errors = 0
        self.checkpointed = False

    def task_key(self, run: Running) -> str:
        return f"drill-{self.config.run_id}-{run.task.task_id}"

    def begin(self, run: Running) -> None:
        self.client.seen = run.plans
        self.checkpointed = False

    def step(self, run: Running, step: int, service: str) -> None:
        spec = self.config.scenario.service(service)
        if spec is None:
            raise Ended("failed", f"{service}: not a service of the scenario")
        fallbacks = {
            fb.target: self.caller(run, step, fb.target)
            for fb in spec.fallbacks
            if fb.kind == "service" and fb.target is not None
        }
        cache_key = service if any(fb.kind == "cache" for fb in spec.fallbacks) else None
        while True:
            left = self.left_s()
            try:
                value = self.client.call(
                    service,
                    self.caller(run, step, service),
                    operation=spec.operation,
                    fallbacks=fallbacks,  # type: ignore[arg-type]  # a dict of str keys is a Fallbacks
                    cache_key=cache_key,
                    max_attempts=MAX_ATTEMPTS,
                    max_delay_s=max(0.0, min(left, MAX_PLAN_WAIT_S)),
                    task_id=self.task_key(run),
                )
            except EscalatedError as error:
                raise Ended("escalated", f"{service}: {describe(error)}") from error
            except DegradedError:
                run.partial = True
                return
            except RecoveryAbortedError as error:
                raise Ended("failed", f"{service}: {describe(error)}") from error
            except ReboundError as error:
                plan = getattr(error, "plan", None)
                if isinstance(plan, Plan) and plan.action in WAIT_ACTIONS and self.left_s() > 1:
                    time.sleep(min(max(plan.wait_s, 0.2), RECHECK_S, self.left_s()))
                    continue
                raise Ended("failed", f"{service}: {describe(error)}") from error
            except Exception as error:
                raise Ended("failed", f"{service}: {describe(error)}") from error
            if isinstance(value, PartialResult):
                run.partial = True
            return

    def caller(self, run: Running, step: int, service: str) -> Callable[[], Any]:
        return lambda: self.send(run, step, service)

    def after_step(self, run: Running, step: int) -> None:
        done = list(run.task.steps[: step + 1])
        body = {
            "state": {"task": run.task.task_id, "done": step + 1, "partial": run.partial},
            "progress": round(100.0 * (step + 1) / len(run.task.steps), 2),
            "step": run.task.steps[step],
            "completed_steps": done,
            "expected_seq": step,
        }
        self.checkpointed = self.rest("post", f"/api/v1/tasks/{self.task_key(run)}/checkpoints", body)

    def end(self, run: Running, status: TaskStatus) -> None:
        self.client.seen = None
        if not self.checkpointed:  # it ended before its first checkpoint: start it, so that it can end
            self.rest("post", "/api/v1/tasks", {"task_id": self.task_key(run)})
        final = "succeeded" if status == "completed" else "failed"
        self.rest("post", f"/api/v1/tasks/{self.task_key(run)}/complete", {"status": final, "reason": status})

    def rest(self, method: str, path: str, body: dict[str, Any]) -> bool:
        """A bookkeeping request to Rebound: its failure is told on stderr, never the task's."""
        try:
            response = self.api.request(method, path, json=body)
            if response.status_code >= 400:
                raise httpx.HTTPStatusError(response.text[:200], request=response.request, response=response)
        except httpx.HTTPError as error:
            self.api_errors += 1
            print(f"drill agent {self.config.agent}: {method.upper()} {path}: {error}", file=sys.stderr)
            return False
        return True

    def close(self) -> None:
        self.client.close(timeout_s=max(0.5, min(5.0, self.left_s())))
        super().close()


def seen(plan: Plan, service: str) -> PlanSeen:
    reason = plan.reason or ""
    learned = plan.raw.get("learned") is True or any(mark in reason for mark in LEARNED_MARKS)
    return PlanSeen(
        plan_id=plan.plan_id, service=service, action=plan.action, reason=reason[:300], learned=learned
    )


def describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"[:300]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drill.agent", description=__doc__)
    parser.add_argument("--fleet", required=True, choices=["rebound", "naive"])
    parser.add_argument("--config", required=True, type=Path)
    args = parser.parse_args(argv)
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)  # `kill -USR1`: where is it?
    config = Config.read(args.config, args.fleet)
    agent: Agent = ReboundAgent(config) if args.fleet == "rebound" else NaiveAgent(config)
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

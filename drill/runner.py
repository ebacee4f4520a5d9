"""One drill run, end to end (the contract `manage.py drill` calls): check that Rebound answers, set it up for
the scenario, start the loopback server and both fleets' agent processes, wait for them (bounded), and gather
what they left into a RunData (drill/records.py) with the escalations Rebound raised meanwhile.

Every process it starts it stops, on success, on an exception and on Ctrl-C. Rebound is set up through its REST
API with the operator's key only, so the drill runs against any Rebound (services: criticality and breaker
settings; fallback chains, through PUT /api/v1/fallbacks/{service}; escalations of an earlier run closed;
breakers closed; learning forgotten). A chain the target does not end up with is said in the notes."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from drill import faults
from drill.records import CallRecord, EscalationSeen, Outage, PlanSeen, RunData, TaskRecord
from drill.scenario import Fallback, Scenario, ServiceSpec

START_MARGIN_S = 3.0  # t0 is this far ahead of the start, so every process is up when the clock starts
WAIT_MARGIN_S = 15.0  # past the scenario's deadline before stragglers are killed
PORT_WAIT_S = 15.0
SETUP_REASON = "chaos drill setup"
FRESH_RUN = "chaos drill: a fresh run"
OPEN_STATES = ("open", "acknowledged", "snoozed")
ROOT = Path(__file__).resolve().parent.parent  # the repository: the agents run `-m drill.agent` from it


class DrillError(RuntimeError):
    """The drill cannot run: Rebound does not answer, a key is refused, a process would not start."""


@dataclass(frozen=True)
class Target:
    url: str  # Rebound's base URL
    agent_key: str  # the rebound fleet acts with it
    operator_key: str | None  # setup, the queue's reads, learning reset; None: setup skipped (said in notes)


def run(
    scenario: Scenario,
    target: Target,
    *,
    seed: int | None = None,
    workdir: Path,
    say: Callable[[str], None] = print,
    fresh_learning: bool = True,
) -> RunData:
    seed = scenario.seed if seed is None else seed
    workdir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    with Rebound(target) as rebound:
        rebound.check()
        before: dict[str, int] = {}
        if rebound.operator is None:
            notes.append("no operator key: Rebound was not set up and its escalation queue was not read")
        else:
            setup(scenario, rebound, notes, say, fresh_learning=fresh_learning)
            before = {e["id"]: int(e.get("occurrences") or 0) for e in rebound.escalations(scenario)}
        say(f"seed {seed} (repeat this run with --seed {seed})")
        with Fleet(scenario, target, seed, workdir, say) as fleet:
            fleet.start()
            fleet.wait()
            tasks = fleet.tasks(notes)
            calls = fleet.calls(notes)
        escalations = seen_escalations(rebound, scenario, fleet.t0, before) if rebound.operator else []
    return RunData(
        scenario=scenario.name,
        seed=seed,
        t0=fleet.t0,
        duration_s=scenario.duration_s,
        ended_s=round(fleet.ended - fleet.t0, 3),
        agents_per_fleet=scenario.agents,
        services=tuple(s.name for s in scenario.services),
        permanent_services=scenario.permanent_services,
        outages=tuple(Outage(s.name, w.from_s, w.to_s) for s in scenario.services for w in s.faults.outages),
        tasks=tasks,
        calls=calls,
        escalations=escalations,
        notes=notes,
    )


# --- Rebound's REST API -------------------------------------------------------------------------------------


class Rebound:
    """The two keys' HTTP clients."""

    def __init__(self, target: Target) -> None:
        self.url = target.url.rstrip("/")
        self.agent = self._client(target.agent_key)
        self.operator = self._client(target.operator_key) if target.operator_key else None

    def _client(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=15.0)

    def __enter__(self) -> Rebound:
        return self

    def __exit__(self, *exc: object) -> None:
        self.agent.close()
        if self.operator is not None:
            self.operator.close()

    def op(self) -> httpx.Client:
        assert self.operator is not None
        return self.operator

    def check(self) -> None:
        """/healthz, then /api/v1/me with each key: the agent key must be an agent's, the operator's an
        operator's."""
        try:
            health = httpx.get(f"{self.url}/healthz", timeout=10.0)
        except httpx.HTTPError as error:
            raise DrillError(f"Rebound at {self.url} does not answer: {error}") from error
        if health.status_code != 200:
            raise DrillError(
                f"Rebound at {self.url}/healthz answered {health.status_code}: {health.text[:200]}"
            )
        me = self._me(self.agent, "the agent key")
        if me.get("kind") != "agent":
            raise DrillError(
                f"the agent key is not an agent's key (it is {me.get('kind')!r} {me.get('name')!r})"
            )
        if self.operator is not None and not self._me(self.operator, "the operator key").get("operator"):
            raise DrillError("the operator key is not an operator's: setup needs one (or leave it out)")

    def _me(self, client: httpx.Client, which: str) -> dict[str, Any]:
        try:
            answer = client.get("/api/v1/me")
        except httpx.HTTPError as error:
            raise DrillError(f"Rebound at {self.url} does not answer /api/v1/me: {error}") from error
        if answer.status_code != 200:
            raise DrillError(f"Rebound refused {which}: /api/v1/me answered {answer.status_code}")
        data = answer.json()
        return data if isinstance(data, dict) else {}

    def escalations(self, scenario: Scenario) -> list[dict[str, Any]]:
        """Every escalation of the scenario's services, in any state."""
        found: list[dict[str, Any]] = []
        for spec in scenario.services:
            page = 1
            while True:
                answer = self.op().get(
                    "/api/v1/escalations", params={"service": spec.name, "page": page, "page_size": 500}
                )
                answer.raise_for_status()
                data = answer.json()
                rows = data.get("results", []) if isinstance(data, dict) else data
                found.extend(rows)
                if not (isinstance(data, dict) and data.get("next")):
                    break
                page += 1
        return found


def setup(
    scenario: Scenario,
    rebound: Rebound,
    notes: list[str],
    say: Callable[[str], None],
    *,
    fresh_learning: bool,
) -> None:
    """Idempotent: a second run with the same scenario changes nothing it need not."""
    for spec in scenario.services:
        configure_service(rebound, spec, say)
    for spec in scenario.services:
        configure_chain(rebound, spec, notes, say)
    closed = close_escalations(rebound, scenario)
    if closed:
        say(f"closed {closed} escalation(s) of the drill's services left open by an earlier run")
    for spec in scenario.services:
        close_breaker(rebound, spec, notes)
    if fresh_learning:
        forget_learning(rebound, scenario, notes)


def configure_service(rebound: Rebound, spec: ServiceSpec, say: Callable[[str], None]) -> None:
    client = rebound.op()
    answer = client.get(f"/api/v1/services/{spec.name}")
    if answer.status_code == 404:  # a permit registers it, as an agent's first call would
        _ok(client.post(f"/api/v1/breakers/{spec.name}/permit", json={}), f"registering {spec.name}")
        answer = client.get(f"/api/v1/services/{spec.name}")
    current = _ok(answer, f"reading service {spec.name}")
    wanted: dict[str, Any] = {"criticality": spec.criticality, **spec.breaker}
    changes = {k: v for k, v in wanted.items() if current.get(k) != v}
    if changes:
        _ok(
            client.patch(f"/api/v1/services/{spec.name}", json={**changes, "reason": SETUP_REASON}),
            f"setting up service {spec.name}",
        )
        say(f"service {spec.name}: set {', '.join(sorted(changes))}")


def configure_chain(
    rebound: Rebound, spec: ServiceSpec, notes: list[str], say: Callable[[str], None]
) -> None:
    """The scenario's chain for the service's operation, through PUT /api/v1/fallbacks/{service}: Rebound writes
    (and audits) only the options that differ, so a second run changes nothing. Checked as GET answers it."""
    wanted = [_option_key(f.kind, f.target, f.value) for f in spec.fallbacks]
    before = _chain_on_target(rebound, spec)
    answer = rebound.op().put(f"/api/v1/fallbacks/{spec.name}", json=chain_body(spec))
    # A Rebound from before the endpoint answers 405: its operators configure chains in its admin.
    if answer.status_code == 405:
        if before != wanted:
            notes.append(
                f"the fallback chain of {spec.name} is not configured on {rebound.url} (this Rebound has no "
                "PUT /api/v1/fallbacks/{service}): configure it in the admin"
            )
        return
    after = _chain_keys(_ok(answer, f"writing the fallback chain of {spec.name}"))
    if after != before:
        say(f"fallback chain of {spec.name}: written ({len(spec.fallbacks)} option(s))")
    if after != wanted:
        notes.append(
            f"the fallback chain of {spec.name} on {rebound.url} is not the scenario's: options for every "
            "operation of the service follow it there"
        )


def chain_body(spec: ServiceSpec) -> dict[str, Any]:
    """The PUT body of the service's chain: each option with the fields its kind has."""
    return {
        "operation": spec.operation,
        "options": [_option_body(f) for f in spec.fallbacks],
        "reason": SETUP_REASON,
    }


def _option_body(fallback: Fallback) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": fallback.kind, "description": "chaos drill"}
    if fallback.kind == "service":
        body["target_service"] = fallback.target
    elif fallback.kind == "static":
        body["static_value"] = fallback.value
    elif fallback.kind == "cache":
        body["max_age_s"] = fallback.max_age_s or 600.0
    return body


def _chain_on_target(rebound: Rebound, spec: ServiceSpec) -> list[tuple[str, str | None, str]]:
    answer = rebound.op().get(f"/api/v1/fallbacks/{spec.name}", params={"operation": spec.operation})
    return _chain_keys(_ok(answer, f"reading the fallback chain of {spec.name}"))


def _chain_keys(chain: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    """A chain as GET (and PUT) answer it, as the options to compare with the scenario's (skips left out)."""
    return [
        _option_key(o["kind"], o.get("service"), o.get("value"))
        for o in chain.get("chain", [])
        if o.get("kind") != "skip"
    ]


def _option_key(kind: str, target: str | None, value: Any) -> tuple[str, str | None, str]:
    return (kind, target if kind == "service" else None, json.dumps(value if kind == "static" else None))


def close_escalations(rebound: Rebound, scenario: Scenario) -> int:
    closed = 0
    for escalation in rebound.escalations(scenario):
        if escalation.get("state") in OPEN_STATES:
            answer = rebound.op().post(
                f"/api/v1/escalations/{escalation['id']}/resolve", json={"resolution": FRESH_RUN}
            )
            if answer.status_code != 409:  # resolved meanwhile
                _ok(answer, f"resolving escalation {escalation['id']}")
            closed += 1
    return closed


def close_breaker(rebound: Rebound, spec: ServiceSpec, notes: list[str], rounds: int = 4) -> None:
    """Back to automatic and closed: an override lifted, an open breaker's wait waited out and closed by trial
    successes (the operator's permits and outcomes, as an agent's would)."""
    client = rebound.op()
    view = _ok(client.get(f"/api/v1/breakers/{spec.name}"), f"reading the breaker of {spec.name}")
    if (view.get("override") or {}).get("mode", "auto") not in ("auto", None):
        _ok(
            client.post(f"/api/v1/breakers/{spec.name}/override", json={"mode": "auto", "reason": FRESH_RUN}),
            f"lifting the override on {spec.name}",
        )
    for _ in range(rounds):
        view = _ok(client.get(f"/api/v1/breakers/{spec.name}"), f"reading the breaker of {spec.name}")
        if view.get("state") == "closed":
            return
        permit = _ok(client.post(f"/api/v1/breakers/{spec.name}/permit", json={}), f"permit for {spec.name}")
        if not permit.get("allowed"):
            time.sleep(min(float(permit.get("retry_after_s") or 1.0), 10.0) + 0.05)
            continue
        outcome = {"service": spec.name, "operation": spec.operation, "success": True, "duration_ms": 1}
        if permit.get("permit_id"):
            outcome["permit_id"] = permit["permit_id"]
        _ok(client.post("/api/v1/outcomes", json=outcome), f"a trial outcome for {spec.name}")
    view = _ok(client.get(f"/api/v1/breakers/{spec.name}"), f"reading the breaker of {spec.name}")
    if view.get("state") != "closed":
        notes.append(f"the breaker of {spec.name} was {view.get('state')} when the run started")


def forget_learning(rebound: Rebound, scenario: Scenario, notes: list[str]) -> None:
    for spec in scenario.services:
        answer = rebound.op().post("/api/v1/learning/reset", json={"service": spec.name, "reason": FRESH_RUN})
        if answer.status_code == 404 and "No route" in answer.text:
            notes.append("learning was not reset: this Rebound has no POST /api/v1/learning/reset")
            return
        if answer.status_code >= 400 and answer.status_code != 404:
            notes.append(f"learning reset of {spec.name} answered {answer.status_code}: {answer.text[:200]}")


def seen_escalations(
    rebound: Rebound, scenario: Scenario, t0: float, before: dict[str, int]
) -> list[EscalationSeen]:
    """The drill services' escalations raised or repeated since t0, with the occurrences of this run."""
    found = []
    for e in rebound.escalations(scenario):
        last = _epoch(e.get("last_seen_at"))
        occurrences = int(e.get("occurrences") or 0) - before.get(e["id"], 0)
        if occurrences <= 0 and (last is None or last < t0):
            continue
        found.append(
            EscalationSeen(
                escalation_id=str(e["id"]),
                service=str(e.get("service") or ""),
                dedup_key=str(e.get("dedup_key") or ""),
                level=str(e.get("level") or ""),
                state=str(e.get("state") or ""),
                title=str(e.get("title") or ""),
                occurrences=max(occurrences, 1),
            )
        )
    return found


def _epoch(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _ok(answer: httpx.Response, doing: str) -> dict[str, Any]:
    if answer.status_code >= 400:
        raise DrillError(f"{doing}: Rebound answered {answer.status_code}: {answer.text[:300]}")
    data = answer.json() if answer.content else {}
    return data if isinstance(data, dict) else {"items": data}


# --- the processes ------------------------------------------------------------------------------------------


class Fleet:
    """The loopback server and both fleets' agents: started, waited for (bounded) and always stopped."""

    def __init__(
        self, scenario: Scenario, target: Target, seed: int, workdir: Path, say: Callable[[str], None]
    ):
        self.scenario = scenario
        self.target = target
        self.seed = seed
        self.workdir = workdir
        self.say = say
        self.run_id = f"{seed}-{secrets.token_hex(3)}"
        self.t0 = 0.0
        self.ended = 0.0
        self.loopback: subprocess.Popen[str] | None = None
        self.port = 0
        self.agents: list[tuple[str, int, subprocess.Popen[bytes], Path]] = []

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def deadline(self) -> float:
        return self.t0 + self.scenario.deadline_s

    def start(self) -> None:
        self.t0 = time.time() + START_MARGIN_S
        scenario = self.scenario.model_dump(mode="json")
        config = {
            "scenario": scenario,
            "seed": self.seed,
            "t0": self.t0,
            "stop_at": self.deadline + 2 * WAIT_MARGIN_S,
        }
        path = self._write("loopback.json", config)
        self.loopback = subprocess.Popen(
            [sys.executable, "-m", "drill.loopback", "--config", str(path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=open(self.workdir / "loopback.err", "w"),  # noqa: SIM115  # closed with the process
            text=True,
            start_new_session=True,
        )
        self.port = self._port()
        url = f"http://127.0.0.1:{self.port}"
        self.say(f"loopback server on {url}; {self.scenario.agents} agent(s) per fleet")
        for fleet in ("rebound", "naive"):
            for agent in range(self.scenario.agents):
                result = self.workdir / f"{fleet}-{agent}.jsonl"
                result.write_text("")
                agent_config = {
                    "agent": agent,
                    "scenario": scenario,
                    "seed": self.seed,
                    "t0": self.t0,
                    "deadline": self.deadline,
                    "loopback_url": url,
                    "result_path": str(result),
                    "run_id": self.run_id,
                    "rebound_url": self.target.url if fleet == "rebound" else "",
                    "agent_key": self.target.agent_key if fleet == "rebound" else "",
                }
                path = self._write(f"{fleet}-{agent}.json", agent_config)
                process = subprocess.Popen(
                    [sys.executable, "-m", "drill.agent", "--fleet", fleet, "--config", str(path)],
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=open(self.workdir / f"{fleet}-{agent}.err", "w"),  # noqa: SIM115
                    start_new_session=True,
                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                )
                self.agents.append((fleet, agent, process, result))

    def _write(self, name: str, data: dict[str, Any]) -> Path:
        path = self.workdir / name
        path.write_text(json.dumps(data), encoding="utf-8")
        os.chmod(path, 0o600)  # it may hold the agent key
        return path

    def _port(self) -> int:
        assert self.loopback is not None and self.loopback.stdout is not None
        start = time.time()
        line = ""
        while time.time() - start < PORT_WAIT_S:
            line = self.loopback.stdout.readline()
            if line or self.loopback.poll() is not None:
                break
        try:
            return int(line.strip())
        except ValueError as error:
            raise DrillError(
                f"the loopback server did not start (it said {line!r}; see {self.workdir / 'loopback.err'})"
            ) from error

    def wait(self) -> None:
        """Until every agent has ended, or the scenario's deadline and a margin have passed."""
        last_said = time.time()
        while time.time() < self.deadline + WAIT_MARGIN_S:
            running = [a for a in self.agents if a[2].poll() is None]
            if not running:
                break
            if time.time() - last_said >= 15:
                self.say(f"t={time.time() - self.t0:.0f}s: {len(running)} agent(s) still running")
                last_said = time.time()
            time.sleep(0.2)
        self.ended = time.time()
        for fleet, agent, process, _ in self.agents:
            if process.poll() is None:
                self.say(f"agent {fleet}-{agent} did not end by the deadline: killed")
                _kill(process)

    def tasks(self, notes: list[str]) -> list[TaskRecord]:
        """Every task of both fleets: as its agent recorded it, else `lost`."""
        records: list[TaskRecord] = []
        planned = faults.tasks(self.scenario, self.seed)
        for fleet, agent, process, result in self.agents:
            got = {r.task_id: r for r in read_tasks(result)}
            if process.returncode not in (0, None):
                notes.append(
                    f"agent {fleet}-{agent} exited with {process.returncode} (see {result.with_suffix('.err')})"
                )
            for task in (t for t in planned if t.agent == agent):
                record = got.get(task.task_id)
                if record is None:
                    record = TaskRecord(
                        fleet=fleet,  # type: ignore[arg-type]  # one of FLEETS
                        agent=agent,
                        task_id=task.task_id,
                        steps=task.steps,
                        permanent=task.permanent,
                        status="lost",
                        error="no record came back from the agent",
                    )
                records.append(record)
        return records

    def calls(self, notes: list[str]) -> list[CallRecord]:
        try:
            answer = httpx.get(f"http://127.0.0.1:{self.port}/_drill/calls", timeout=30.0)
            answer.raise_for_status()
        except httpx.HTTPError as error:
            notes.append(f"the loopback server's call log could not be read: {error}")
            return []
        return [CallRecord(**c) for c in answer.json()["calls"]]

    def stop(self) -> None:
        for _, _, process, _ in self.agents:
            _kill(process)
        if self.loopback is not None:
            _kill(self.loopback)
            if self.loopback.stdout is not None:
                self.loopback.stdout.close()


def _kill(process: subprocess.Popen[Any]) -> None:
    """Stop one process this runner started (its own session): SIGTERM, then SIGKILL after 3 s."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=3)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=3)


def read_tasks(path: Path) -> list[TaskRecord]:
    """An agent's result file: one TaskRecord a line (a torn last line, from a kill, is skipped)."""
    records: list[TaskRecord] = []
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            raw = json.loads(line)
        except ValueError:
            continue
        raw["steps"] = tuple(raw.get("steps", ()))
        raw["plans"] = tuple(PlanSeen(**p) for p in raw.get("plans", ()))
        records.append(TaskRecord(**raw))
    return records

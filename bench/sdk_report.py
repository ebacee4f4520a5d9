"""What the SDK benchmark found, and how it is told: the console, bench/results/*.json and docs/benchmarks.md."""

from __future__ import annotations

import json
import math
import shlex
import sys
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bench import report

if TYPE_CHECKING:
    from bench.sdk import Options

RESULTS = Path(__file__).resolve().parent / "results"
OVERHEAD_GOAL = 2.0  # the SDK guard's cost per call over pybreaker in memory: at most
PEER_GOAL = 5.0  # guarded calls per process over pybreaker with CircuitRedisStorage: at least (issue 3)
PROPAGATION_GOAL_S = 1.0  # p99 from the trip to every client's view: at most
NOISY_CPU_PCT = 10.0


def _state(met: bool) -> str:
    return "met" if met else "NOT met"


@dataclass(frozen=True)
class LoopRun:
    kind: str
    calls: int
    seconds: float
    caller_cpu_seconds: float
    wall_seconds: float
    other_cpu_pct: float
    problem: str
    background_cpu_seconds: float = 0.0
    sent: int = 0
    dropped: int = 0
    sent_in_loop: int = 0

    @classmethod
    def from_json(cls, raw: dict[str, Any], other_cpu_pct: float) -> LoopRun:
        return cls(
            kind=raw["kind"],
            calls=raw["calls"],
            seconds=raw["seconds"],
            caller_cpu_seconds=raw["caller_cpu_seconds"],
            wall_seconds=raw["wall_seconds"],
            other_cpu_pct=other_cpu_pct,
            problem=raw["problem"],
            background_cpu_seconds=raw.get("background_cpu_seconds", 0.0),
            sent=raw.get("sent", 0),
            dropped=raw.get("dropped", 0),
            sent_in_loop=raw.get("sent_in_loop", 0),
        )

    @property
    def us_per_call(self) -> float:
        return 1e6 * self.seconds / self.calls if self.calls else 0.0

    @property
    def per_s(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    @property
    def caller_cpu_us(self) -> float:
        return 1e6 * self.caller_cpu_seconds / self.calls if self.calls else 0.0

    @property
    def background_us_per_outcome(self) -> float:
        return 1e6 * self.background_cpu_seconds / self.sent if self.sent else 0.0


@dataclass(frozen=True)
class Trial:
    service: str
    at: float  # the transition's created_at on the server (epoch seconds)
    returned: float  # when the tripping request returned to the benchmark
    event_id: int
    seen: dict[int, tuple[float, str, int]]  # client index -> (when its view flipped, source, event id)
    expected: int

    @property
    def from_at(self) -> list[float]:
        return [when - self.at for when, _, _ in self.seen.values()]

    @property
    def from_return(self) -> list[float]:
        return [when - self.returned for when, _, _ in self.seen.values()]

    @property
    def max_from_at(self) -> float:
        return max(self.from_at, default=math.inf)

    @property
    def missing(self) -> int:
        return self.expected - len(self.seen)


@dataclass
class Findings:
    opts: Options
    started: datetime
    rounds: list[dict[str, LoopRun]]
    trials: list[Trial]
    clients_as: str
    environment: dict[str, str]

    NAMES: ClassVar[dict[str, str]] = {
        "plain": "plain call of a no-op (floor)",
        "pybreaker_memory": "pybreaker, in-memory storage (baseline)",
        "sdk_decorator": "Rebound SDK: @client.with_circuit_breaker, live view",
        "sdk_guard": "Rebound SDK: with client.guard(...), live view",
        "pybreaker_redis": "pybreaker + CircuitRedisStorage (issue-3 peer)",
        "sustained": "Rebound SDK decorator, continuous (no pauses)",
    }

    # --- figures -----------------------------------------------------------------------------------------

    def median_us(self, kind: str) -> float:
        return report.median(r[kind].us_per_call for r in self.rounds)

    def ratios(self, ours: str, base: str) -> list[float]:
        return [r[ours].us_per_call / r[base].us_per_call for r in self.rounds]

    def ratio(self, ours: str, base: str) -> float:
        # The median of per-round ratios: each pairs two runs seconds apart, which cancels slow drift.
        return report.median(self.ratios(ours, base))

    def total_ratio(self, ours: str) -> float:
        """The caller's cost plus the background threads' CPU per outcome, over pybreaker in memory."""
        return report.median(
            (r[ours].us_per_call + r[ours].background_us_per_outcome) / r["pybreaker_memory"].us_per_call
            for r in self.rounds
        )

    def peer_ratio(self, ours: str = "sdk_decorator") -> float:
        return report.median(r["pybreaker_redis"].us_per_call / r[ours].us_per_call for r in self.rounds)

    def delivered_per_s(self) -> float:
        return report.median(r["sustained"].sent_in_loop / r["sustained"].seconds for r in self.rounds)

    def delivered_peer_ratio(self) -> float:
        return report.median(
            (r["sustained"].sent_in_loop / r["sustained"].seconds) / r["pybreaker_redis"].per_s
            for r in self.rounds
        )

    @property
    def from_at(self) -> list[float]:
        return [v for t in self.trials for v in t.from_at]

    @property
    def from_return(self) -> list[float]:
        return [v for t in self.trials for v in t.from_return]

    @property
    def p99(self) -> float:
        return report.percentile(self.from_at, 99)

    @property
    def missing(self) -> int:
        return sum(t.missing for t in self.trials)

    # --- text --------------------------------------------------------------------------------------------

    def guard_table(self) -> str:
        lines = [
            "| measurement | µs per call | calls/s | / pybreaker in memory | caller CPU µs per call "
            "| sending CPU µs per outcome | call + sending, / pybreaker | other CPU |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for kind in (
            "plain",
            "pybreaker_memory",
            "sdk_decorator",
            "sdk_guard",
            "pybreaker_redis",
            "sustained",
        ):
            runs = [r[kind] for r in self.rounds]
            us = report.median(run.us_per_call for run in runs)
            cpu_us = report.median(run.caller_cpu_us for run in runs)
            sdk = kind.startswith("sdk") or kind == "sustained"
            background = f"{report.median(run.background_us_per_outcome for run in runs):.2f}" if sdk else "-"
            total = f"{self.total_ratio(kind):.2f}" if sdk else "-"
            lines.append(
                f"| {self.NAMES[kind]} | {us:.3f} | {1e6 / us:,.0f} | {self.ratio(kind, 'pybreaker_memory'):.2f} "
                f"| {cpu_us:.3f} | {background} | {total} | {max(run.other_cpu_pct for run in runs):.0f}% |"
            )
        return "\n".join(lines)

    def propagation_table(self) -> str:
        def row(name: str, values: list[float]) -> str:
            ms = [1000 * v for v in values]
            return (
                f"| {name} | {len(ms)} | {report.percentile(ms, 50):.0f} | {report.percentile(ms, 99):.0f} | "
                f"{max(ms, default=math.nan):.0f} | {min(ms, default=math.nan):.0f} |"
            )

        return "\n".join(
            [
                "| latency to each client's view | samples | p50 ms | p99 ms | max ms | min ms |",
                "| --- | ---: | ---: | ---: | ---: | ---: |",
                row("from the transition's creation on the server (`at`)", self.from_at),
                row("from the moment the tripping request returned", self.from_return),
            ]
        )

    def verdict(self) -> str:
        dec, guard = (
            self.ratio("sdk_decorator", "pybreaker_memory"),
            self.ratio("sdk_guard", "pybreaker_memory"),
        )
        per_round = ", ".join(f"{v:.2f}" for v in self.ratios("sdk_decorator", "pybreaker_memory"))
        peer = self.peer_ratio()
        sustained = report.median(r["sustained"].per_s for r in self.rounds)
        pyredis = report.median(r["pybreaker_redis"].per_s for r in self.rounds)
        dropped = report.median(r["sustained"].dropped for r in self.rounds)
        return "\n".join(
            [
                f"1. Guard overhead, SDK decorator / pybreaker in memory: **{dec:.2f}** (goal ≤ {OVERHEAD_GOAL:g}: "
                f"**{_state(dec <= OVERHEAD_GOAL)}**; per round: {per_round}); as a `with` block: **{guard:.2f}** "
                f"({_state(guard <= OVERHEAD_GOAL)}). With the CPU of sending each call's outcome to the fleet added "
                f"(encoding, the batched request): {self.total_ratio('sdk_decorator'):.2f} and "
                f"{self.total_ratio('sdk_guard'):.2f}.",
                f"2. Guarded calls per process, SDK / pybreaker with `CircuitRedisStorage` (issue 3's peer goal): "
                f"**{peer:,.0f}x** ({1e6 / self.median_us('sdk_decorator'):,.0f}/s against {pyredis:,.0f}/s; "
                f"goal ≥ {PEER_GOAL:g}x: **{_state(peer >= PEER_GOAL)}**). Sustained, with no pause for the "
                f"fleet to take the outcomes in: {sustained:,.0f} calls/s, of which "
                f"{self.delivered_per_s():,.0f} outcomes/s reached the server "
                f"({self.delivered_peer_ratio():,.1f}x pybreaker's guarded calls; the rest, median "
                f"{dropped:,.0f} a run, were dropped oldest first from the bounded buffer, and counted).",
                f"3. Propagation to {self.opts.clients} SDK clients ({self.clients_as}), {len(self.trials)} trips: "
                f"p99 **{self.p99 * 1000:.0f} ms** from the transition's creation (goal ≤ "
                f"{PROPAGATION_GOAL_S * 1000:.0f} ms: **{_state(self.p99 <= PROPAGATION_GOAL_S and not self.missing)}**"
                f"); p50 {report.percentile(self.from_at, 50) * 1000:.0f} ms, max "
                f"{max(self.from_at, default=math.nan) * 1000:.0f} ms.",
            ]
        )

    def correctness_items(self) -> list[tuple[str, bool]]:
        items = []
        problems = [
            f"round {i + 1} {k}: {run.problem}"
            for i, r in enumerate(self.rounds)
            for k, run in r.items()
            if run.problem
        ]
        items.append(
            (
                "Every loop ended on a closed breaker, and every SDK loop's live view was connected at its end"
                + (f" ({'; '.join(problems)})" if problems else ""),
                not problems,
            )
        )
        paced = [
            (r[k].calls, r[k].sent, r[k].dropped) for r in self.rounds for k in ("sdk_decorator", "sdk_guard")
        ]
        items.append(
            (
                "Paced SDK loops: every outcome of the timed calls reached the server, none dropped ("
                + ", ".join(
                    f"{calls:,} calls / {sent:,} sent / {dropped} dropped" for calls, sent, dropped in paced
                )
                + ")",
                all(sent == calls and dropped == 0 for calls, sent, dropped in paced),
            )
        )
        sources: dict[str, int] = {}
        wrong_ids = 0
        for trial in self.trials:
            for _, source, seen_id in trial.seen.values():
                sources[source] = sources.get(source, 0) + 1
                wrong_ids += seen_id != trial.event_id
        items.append(
            (
                f"Propagation: every client saw every trip ({self.missing} missing of "
                f"{sum(t.expected for t in self.trials)}), each through the transition the trip wrote "
                f"({wrong_ids} with another id; sources: {', '.join(f'{k} {v}' for k, v in sorted(sources.items()))})",
                self.missing == 0 and wrong_ids == 0,
            )
        )
        return items

    @property
    def correct(self) -> bool:
        return all(ok for _, ok in self.correctness_items())

    def correctness(self) -> str:
        return "\n".join(
            f"- {text}: **{'ok' if ok else 'FAILED'}**." for text, ok in self.correctness_items()
        )

    def section(self) -> str:
        e, o = self.environment, self.opts
        command = "python -m bench.sdk " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        return f"""
## The Python SDK (issue 4)

Two questions, each against a baseline measured in the same run: what the SDK's guard costs a call on a
closed breaker, next to pybreaker in memory (and to pybreaker with `CircuitRedisStorage`, issue 3's peer), while
the breaker state is the fleet's; and how long a trip takes to reach {o.clients} SDK clients.

{self.verdict()}

### The guard's overhead

{self.guard_table()}

"µs per call" is the wall time of the calls divided by their number (median of the {o.rounds} rounds), each
call a no-op, one after another from one thread; "/ pybreaker in memory" the median of the per-round ratios.
"Caller CPU" is the calling thread's own CPU time per call. "Sending CPU" is what reporting an outcome costs
besides the call: encoding it and sending it in a batch (`client.flush()`, timed apart, see below) plus the
SDK's background threads (the live view's long-poll; for the continuous row, the flusher thread, which there
overlaps the calls), per outcome sent, read from /proc. "Call + sending" adds it to the call's cost: the
whole CPU price of a guarded call, against pybreaker's. "Other CPU" is the most that processes outside the
benchmark took of the cores during a run (`bench/cpu.py`); above {NOISY_CPU_PCT:.0f}% a run is noisy.

What each row is (`bench/sdk_loops.py`, a fresh process per row and round, {o.warmup:g} s of warm-up, then
calls in chunks of 5,000 (200 for Redis) until {o.seconds:g} s of them are timed):
- pybreaker: `CircuitBreaker(fail_max=5, reset_timeout=30)` and `.call(noop)`; with Redis, the same with
  `state_storage=CircuitRedisStorage(STATE_CLOSED, redis.Redis(db 13), namespace=<per run>)`: a GET of the
  state and a SET of the failure counter per call.
- The SDK: `Client(url, key)` against the benchmark's gunicorn, its live view connected (the snapshot, then the
  long-poll); the breaker `bench-sdk-guard` closed (the defaults: count window of 20, 10 calls, 50%, 5 in a
  row). `@client.with_circuit_breaker(service)` on the no-op, or `with client.guard(service): noop()`. Each call
  looks the service up in the view, calls, and appends its outcome to the buffer. After each chunk the loop
  sends every queued outcome (`client.flush()`: batches of 2,000, untimed, its CPU counted as sending), so
  that the fleet takes in everything the calls produce, as for a paced agent, and so that the two costs are
  measured apart rather than smeared into each other (the client is made with `flush_at` above the chunk and
  no timed flushes for this; the calls do the same work with any setting). Every outcome reaches the server
  (checked below); the server takes in about 60,000 outcomes/s from 8 connections (bench.breakers), about a
  fifth of that from one client sending one batch at a time here.
- "continuous": the decorator with the default client (the flusher thread sending at 1,000 queued and every
  0.2 s) in one loop with no pauses, for the issue-3 comparison of guarded calls per process: the calls outrun
  the server's intake, the bounded buffer (50,000) drops its oldest outcomes and counts them; "reached the
  server" counts only the outcomes sent while the loop ran, and the flusher's CPU is in the wall time.

### Propagation: a trip to every client's view

{self.propagation_table()}

{o.clients} clients, each `Client(url, key, on_change=...)` in a Python process of its own (`bench/sdk_client.py`:
{self.clients_as}, not threads, so that no client shares a GIL with another or with the benchmark), all connected to the
same gunicorn ({o.workers} gthread workers x {o.threads} threads: each long-poll holds a thread). For each of
{len(self.trials)} trips a fresh service's breaker (the defaults: five consecutive failures) is tripped by one
`POST /api/v1/outcomes` of five failures; its answer carries the transition (id and `at`, its creation on the
server, a few milliseconds before it commits). Each client prints the moment (`time.time()`, the same machine's
clock as the server's) its view saw the breaker open; the latency is that minus `at`, and minus the moment the
tripping request returned (negative when a client saw it before the tripping client had its answer). Trips are
0.3 to 1 s apart, at random. The path: the commit, the publish on `rebound:breaker-transitions`, each waiting
long-poll woken and reading the transition table, the answer, the client applying it.

### How it was measured

- Date: {self.started:%Y-%m-%d %H:%M} UTC. Command: `.venv/bin/{command}`
- Machine: {e.get("cores")} cores ({e.get("cpu")}), {e.get("memory")}, {e.get("os")}; Python {e.get("python")},
  PostgreSQL {e.get("postgresql")}, Redis {e.get("redis")}, Django {e.get("django")}, gunicorn {e.get("gunicorn")},
  httpx {e.get("py_httpx")}, redis-py {e.get("py_redis")}, pybreaker {e.get("py_pybreaker")}.
- Server: `gunicorn -c config/gunicorn.conf.py config.wsgi`, {o.workers} gthread workers x {o.threads} threads,
  `REBOUND_MODE=production` (PostgreSQL database `{o.db_name}`, created fresh and migrated; Redis db 13, emptied
  first; `LOG_LEVEL=WARNING`). The services are registered before anything starts.
- Everything (the loops, the {o.clients} clients, gunicorn, PostgreSQL, Redis) shares the same cores, so the
  absolute figures move with the machine; the ratios are the result.

### Correctness

{self.correctness()}

### Reproduce

1. PostgreSQL on 127.0.0.1:5432 (user `postgres`, trust auth) and Redis on 127.0.0.1:6379; the benchmark
   drops and creates only the database `{o.db_name}` and uses (and empties) only Redis db 13; it waits for
   other benchmarks (they share db 13).
2. `.venv/bin/pip install pybreaker` (the baseline; the benchmark says so if it is missing).
3. `.venv/bin/python -m bench.sdk --write-docs`: prints the tables; `--write-docs` rewrites this section (and
   nothing else in the file); the raw figures go to `bench/results/` (not committed).
"""

    def save(self) -> Path:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"sdk-{self.started:%Y%m%d-%H%M%S}.json"
        data = {
            "started": self.started.isoformat(),
            "options": asdict(self.opts),
            "environment": self.environment,
            "rounds": [{k: asdict(v) for k, v in r.items()} for r in self.rounds],
            "trials": [asdict(t) for t in self.trials],
        }
        path.write_text(json.dumps(data, indent=2, default=str))
        return path

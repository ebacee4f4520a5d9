"""What the SDK benchmark found, and how it is told: the console, bench/results/*.json and docs/benchmarks.md."""

from __future__ import annotations

import json
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
OVERHEAD_GOAL = 2.0  # the SDK guard's bare decision per call over pybreaker in memory: at most
PEER_GOAL = 5.0  # pybreaker with CircuitRedisStorage per call over the SDK's call with its delivery: at least
DELIVERY_GOAL = 50_000  # calls/s one process makes with every outcome delivered (issue 17, goal 4)
PACE_TOLERANCE = 0.95  # a paced run counts for its rate if it made at least this share of the calls asked
NOISY_CPU_PCT = 10.0


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
    delivered_seconds: float = 0.0
    delivered_cpu_seconds: float = 0.0
    delivered_total: int = 0
    server_counted: int = -1  # the server's own count of the run's outcomes (-1: not read)
    rate: float = 0.0
    queued_at_stop: int = 0
    most_queued: int = 0
    late_slots: int = 0
    dropped_total: int = 0
    dropped_reported: int = 0
    compact: bool = True  # False: the server refused runs (older than the compact form), single outcomes sent

    @classmethod
    def from_json(cls, raw: dict[str, Any], other_cpu_pct: float, server_counted: int = -1) -> LoopRun:
        names = set(cls.__dataclass_fields__) - {"other_cpu_pct", "server_counted"}
        return cls(
            **{k: v for k, v in raw.items() if k in names},
            other_cpu_pct=other_cpu_pct,
            server_counted=server_counted,
        )

    @property
    def us_per_call(self) -> float:
        return 1e6 * self.seconds / self.calls if self.calls else 0.0

    @property
    def us_per_call_delivered(self) -> float:
        """The calls and the flush that delivered their outcomes, in one span, per call (wall time)."""
        return 1e6 * self.delivered_seconds / self.calls if self.calls else 0.0

    @property
    def cpu_us_delivered(self) -> float:
        return 1e6 * self.delivered_cpu_seconds / self.calls if self.calls else 0.0

    @property
    def per_s(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    @property
    def delivered_per_s(self) -> float:
        return self.sent_in_loop / self.seconds if self.seconds else 0.0

    @property
    def background_us_per_outcome(self) -> float:
        return 1e6 * self.background_cpu_seconds / self.sent if self.sent else 0.0

    @property
    def paced_ok(self) -> bool:
        """The run made the calls its rate asked for (one thread on a shared machine may fall behind)."""
        return not self.rate or self.per_s >= PACE_TOLERANCE * self.rate

    @property
    def lossless(self) -> bool:
        return self.dropped == 0 and self.server_counted == self.delivered_total


@dataclass
class Findings:
    opts: Options
    started: datetime
    rounds: list[dict[str, LoopRun]]
    environment: dict[str, str]

    NAMES: ClassVar[dict[str, str]] = {
        "plain": "plain call of a no-op (floor)",
        "pybreaker_memory": "pybreaker, in-memory storage (baseline)",
        "sdk_decorator": "Rebound SDK: @client.with_circuit_breaker, live view",
        "sdk_guard": "Rebound SDK: with client.guard(...), live view",
        "pybreaker_redis": "pybreaker + CircuitRedisStorage (shared state in Redis)",
    }
    GUARD_KINDS: ClassVar[tuple[str, ...]] = (
        "plain",
        "pybreaker_memory",
        "sdk_decorator",
        "sdk_guard",
        "pybreaker_redis",
    )

    @staticmethod
    def delivery_name(kind: str, rate: int) -> str:
        return f"paced-{rate}" if kind == "paced" else kind

    # --- figures -----------------------------------------------------------------------------------------

    def runs(self, kind: str) -> list[LoopRun]:
        return [r[kind] for r in self.rounds]

    def median_us(self, kind: str) -> float:
        return report.median(run.us_per_call for run in self.runs(kind))

    def ratios(self, ours: str, base: str) -> list[float]:
        return [r[ours].us_per_call / r[base].us_per_call for r in self.rounds]

    def ratio(self, ours: str, base: str) -> float:
        # The median of per-round ratios: each pairs two runs seconds apart, which cancels slow drift.
        return report.median(self.ratios(ours, base))

    def delivered_ratio(self, ours: str) -> float:
        """The SDK's call with its delivery (wall, calls + flush) over pybreaker in memory."""
        return report.median(
            r[ours].us_per_call_delivered / r["pybreaker_memory"].us_per_call for r in self.rounds
        )

    def peer_ratio(self, ours: str = "sdk_decorator") -> float:
        """pybreaker with Redis per call over the SDK's call with its delivery: like with like, each call's
        outcome in the shared state."""
        return report.median(
            r["pybreaker_redis"].us_per_call / r[ours].us_per_call_delivered for r in self.rounds
        )

    def delivery_kinds(self) -> list[str]:
        return [self.delivery_name("paced", rate) for rate in self.opts.rates] + ["sustained"]

    def lossless_up_to(self) -> int:
        """The highest paced rate at which every round delivered every outcome (0: none)."""
        best = 0
        for rate in self.opts.rates:
            runs = self.runs(self.delivery_name("paced", rate))
            if all(run.lossless and run.paced_ok for run in runs):
                best = rate
            else:
                break
        return best

    def first_drops(self) -> str:
        for rate in self.opts.rates:
            runs = self.runs(self.delivery_name("paced", rate))
            if any(run.dropped for run in runs):
                return f"{rate:,} calls/s"
        sustained = self.runs("sustained")
        if any(run.dropped for run in sustained):
            return f"past the highest paced rate, unpaced ({report.median(r.per_s for r in sustained):,.0f} calls/s)"
        return "nowhere in these runs"

    # --- text --------------------------------------------------------------------------------------------

    def guard_table(self) -> str:
        lines = [
            "| measurement | µs per call (decision) | calls/s | / pybreaker in memory | µs per call with delivery "
            "| caller CPU µs per call with delivery | view thread CPU µs per outcome | delivered / dropped | other CPU |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for kind in self.GUARD_KINDS:
            runs = self.runs(kind)
            us = report.median(run.us_per_call for run in runs)
            sdk = kind.startswith("sdk")
            delivered = f"{report.median(run.us_per_call_delivered for run in runs):.3f}" if sdk else "-"
            cpu = f"{report.median(run.cpu_us_delivered for run in runs):.3f}" if sdk else "-"
            background = f"{report.median(run.background_us_per_outcome for run in runs):.3f}" if sdk else "-"
            counts = f"{sum(r.sent for r in runs):,} / {sum(r.dropped for r in runs)}" if sdk else "-"
            lines.append(
                f"| {self.NAMES[kind]} | {us:.3f} | {1e6 / us:,.0f} | {self.ratio(kind, 'pybreaker_memory'):.2f} "
                f"| {delivered} | {cpu} | {background} | {counts} | {max(r.other_cpu_pct for r in runs):.0f}% |"
            )
        return "\n".join(lines)

    def delivery_table(self) -> str:
        lines = [
            "| calls | calls/s made | outcomes delivered/s while calling | dropped | most queued "
            "| delivered (client) | counted (server) | other CPU |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for kind in self.delivery_kinds():
            runs = self.runs(kind)
            name = (
                f"paced at {runs[0].rate:,.0f}/s" if runs[0].rate else "unpaced (as fast as one thread calls)"
            )
            lines.append(
                f"| {name} | {report.median(r.per_s for r in runs):,.0f} "
                f"| {report.median(r.delivered_per_s for r in runs):,.0f} "
                f"| {', '.join(f'{r.dropped:,}' for r in runs)} | {max(r.most_queued for r in runs):,} "
                f"| {sum(r.delivered_total for r in runs):,} | {sum(r.server_counted for r in runs):,} "
                f"| {max(r.other_cpu_pct for r in runs):.0f}% |"
            )
        return "\n".join(lines)

    def verdict(self) -> str:
        dec, guard = (
            self.ratio("sdk_decorator", "pybreaker_memory"),
            self.ratio("sdk_guard", "pybreaker_memory"),
        )
        per_round = ", ".join(f"{v:.2f}" for v in self.ratios("sdk_decorator", "pybreaker_memory"))
        peer = self.peer_ratio()
        sdk_delivered = report.median(r.us_per_call_delivered for r in self.runs("sdk_decorator"))
        pyredis = self.median_us("pybreaker_redis")
        up_to = self.lossless_up_to()
        sustained = self.runs("sustained")
        return "\n".join(
            [
                f"1. Guard overhead, the bare decision, SDK decorator / pybreaker in memory: **{dec:.2f}** (goal ≤ "
                f"{OVERHEAD_GOAL:g}: **{report.verdict(dec <= OVERHEAD_GOAL)}**; per round: {per_round}); as a `with` block: "
                f"**{guard:.2f}** ({report.verdict(guard <= OVERHEAD_GOAL)}). With each call's delivery in the same span "
                f"(the calls and the flush that sends their outcomes and waits for the server's answer): "
                f"{self.delivered_ratio('sdk_decorator'):.2f} and {self.delivered_ratio('sdk_guard'):.2f}.",
                f"2. Like with like, every call's outcome in the fleet's shared state: pybreaker with "
                f"`CircuitRedisStorage` costs **{peer:,.1f}x** the SDK's guarded call with its delivery "
                f"({pyredis:.2f} µs against {sdk_delivered:.3f} µs a call; goal ≥ {PEER_GOAL:g}x: "
                f"**{report.verdict(peer >= PEER_GOAL)}**). pybreaker reads the state from Redis and writes its counter back "
                "at every call (two round trips) and decides from it; the SDK decides from its live view of the "
                "fleet's breakers and sends the outcomes in batches, which the server applies to the fleet's breaker.",
                f"3. Delivery: every outcome delivered and counted by the server up to **{up_to:,} calls/s** "
                f"(goal ≥ {DELIVERY_GOAL:,}: **{report.verdict(up_to >= DELIVERY_GOAL)}**); drops start at "
                f"{self.first_drops()}. Unpaced, one thread made {report.median(r.per_s for r in sustained):,.0f} "
                f"calls/s, of which {report.median(r.delivered_per_s for r in sustained):,.0f} outcomes/s were "
                f"delivered while it called (dropped per run: {', '.join(f'{r.dropped:,}' for r in sustained)}, "
                "oldest first, each counted in `stats()['dropped']` and told to the server, which counts it in "
                "`sdk_outcomes_dropped_total`).",
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
        chunked = [
            (r[k].calls, r[k].sent, r[k].dropped) for r in self.rounds for k in ("sdk_decorator", "sdk_guard")
        ]
        items.append(
            (
                "Chunked SDK loops: every outcome of the timed calls was delivered, none dropped ("
                + ", ".join(
                    f"{calls:,} calls / {sent:,} delivered / {dropped} dropped"
                    for calls, sent, dropped in chunked
                )
                + ")",
                all(sent == calls and dropped == 0 for calls, sent, dropped in chunked),
            )
        )
        delivery = [r[k] for r in self.rounds for k in self.delivery_kinds()]
        items.append(
            (
                "Delivery runs: the server counted exactly the outcomes each client says it delivered ("
                + ", ".join(f"{run.server_counted:,}/{run.delivered_total:,}" for run in delivery)
                + ")",
                all(run.server_counted == run.delivered_total for run in delivery),
            )
        )
        items.append(
            (
                "Delivery runs: every dropped outcome was told to the server ("
                + ", ".join(f"{run.dropped_reported:,}/{run.dropped_total:,}" for run in delivery)
                + (
                    ""
                    if all(run.compact for run in delivery)
                    else "; the server refused runs and drop counts"
                )
                + ")",
                all(run.dropped_reported == run.dropped_total for run in delivery),
            )
        )
        return items

    @property
    def correct(self) -> bool:
        return all(ok for _, ok in self.correctness_items())

    def correctness(self) -> str:
        return report.checklist(self.correctness_items())

    def section(self) -> str:
        e, o = self.environment, self.opts
        command = "python -m bench.sdk " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        rates = ", ".join(f"{rate:,}" for rate in o.rates)
        return f"""
## The Python SDK (issues 4 and 17)

Two questions, each against a baseline measured in the same run: what a guarded call on a closed breaker costs,
its outcome's delivery to the fleet included, next to pybreaker in memory and to pybreaker with
`CircuitRedisStorage`; and how many outcomes a second one process delivers to the fleet's breakers without
dropping one. (How fast a trip reaches the SDKs: the propagation section.)

{self.verdict()}

### A guarded call's cost

{self.guard_table()}

"µs per call (decision)" is the wall time of the calls alone divided by their number (median of the {o.rounds}
rounds): each a no-op, one after another from one thread; "/ pybreaker in memory" the median of the per-round
ratios. "With delivery" times the same calls and the `client.flush()` after them in one span: the outcomes
encoded (the compact form: each service's plain successes as runs), sent, and the server's answer awaited, so it
includes the server's time to apply them to the fleet's breaker. "Caller CPU" is the calling thread's own CPU
over that span. "View thread" is the live view's long-poll, per outcome delivered, read from /proc. "Other CPU"
is the most that processes outside the benchmark took of the cores during a run (`bench/cpu.py`); above
{NOISY_CPU_PCT:.0f}% a run is noisy.

What each row is (`bench/sdk_loops.py`, a fresh process per row and round, {o.warmup:g} s of warm-up, then
calls in chunks of 5,000 (200 for Redis) until {o.seconds:g} s of them are timed):
- pybreaker: `CircuitBreaker(fail_max=5, reset_timeout=30)` and `.call(noop)`: decides from its own memory and
  sends nothing. With Redis, the same with `state_storage=CircuitRedisStorage(STATE_CLOSED, redis.Redis(db 13),
  namespace=<per run>)`: every call reads the state and writes the failure counter (two round trips), so every
  process sharing the namespace decides from every call's outcome.
- The SDK: `Client(url, key)` against the benchmark's gunicorn, its live view connected (the snapshot, then the
  long-poll); the breaker `bench-sdk-guard` closed (the defaults: count window of 20, 10 calls, 50%, 5 in a
  row). `@client.with_circuit_breaker(service)` on the no-op, or `with client.guard(service): noop()`: a dict
  lookup in the view, the call, a deque append. After each chunk, `client.flush()` in the same thread (the
  client made with `flush_at` above the chunk and no timed flushes, so that no flusher thread competes).

### Delivery: outcomes per second without a drop

{self.delivery_table()}

The default client (`Client(url, key)`: the flusher thread sends when 1,000 outcomes are queued and every 0.2 s,
up to 50,000 outcomes a request as runs; the buffer holds 50,000 and drops the oldest past that), calling the
decorated no-op for {o.delivery_seconds:g} s per run: paced at {rates} calls/s (the calls of each 5 ms slot back
to back, then a sleep until the next slot), then as fast as one thread calls. "Delivered/s while calling" counts
the outcomes the server accepted while the calls went on; "most queued" is the buffer's high-water mark; after
the calls every queued outcome is flushed, and "counted (server)" is the server's own count of the run's service
(its per-minute traffic counters in Redis, a run's successes each), which must equal what the client says it
delivered. A paced run counts for its rate if one thread made at least {PACE_TOLERANCE:.0%} of the calls asked.

### How it was measured

- Date: {self.started:%Y-%m-%d %H:%M} UTC. Command: `.venv/bin/{command}`
- Machine: {e.get("cores")} cores ({e.get("cpu")}), {e.get("memory")}, {e.get("os")}; Python {e.get("python")},
  PostgreSQL {e.get("postgresql")}, Redis {e.get("redis")}, Django {e.get("django")}, gunicorn {e.get("gunicorn")},
  httpx {e.get("py_httpx")}, redis-py {e.get("py_redis")}, pybreaker {e.get("py_pybreaker")}.
- Server: `gunicorn -c config/gunicorn.conf.py config.wsgi`, {o.workers} gthread workers x {o.threads} threads,
  `REBOUND_MODE=production` (PostgreSQL database `{o.db_name}`, created fresh and migrated; Redis db 13, emptied
  first; `LOG_LEVEL=WARNING`). The services are registered before anything starts, one per delivery run.
- Everything (the loops, gunicorn, PostgreSQL, Redis) shares the same cores, so the absolute figures move with
  the machine; the ratios and the counts are the result.

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
        }
        path.write_text(json.dumps(data, indent=2, default=str))
        return path

"""What the propagation benchmark found, and how it is told: the console, bench/results/*.json and
docs/benchmarks.md (the section between `bench:propagation` markers)."""

from __future__ import annotations

import math
import shlex
import sys
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import report

if TYPE_CHECKING:
    from bench.propagation import Options

GOAL_S = 0.100  # p99 from the transition's creation to every client's view, with 100 clients: at most
GOAL_CLIENTS = 100
NOISY_CPU_PCT = 10.0


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

    @property
    def wrong_ids(self) -> int:
        """Flips through a transition other than the trip's. A flip by the client's periodic snapshot (every
        30 s; it carries no id) is the same state read from the server, and counted apart."""
        return sum(
            seen_id != self.event_id for _, source, seen_id in self.seen.values() if source != "snapshot"
        )


@dataclass(frozen=True)
class Run:
    """One set of clients and its trips, with the CPU the server and the clients spent across the trips."""

    clients: int
    trials: list[Trial]
    server_cpu_s: float
    clients_cpu_s: float
    other_cpu_pct: float

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

    @property
    def wrong_ids(self) -> int:
        return sum(t.wrong_ids for t in self.trials)

    def per_client_ms(self, seconds: float) -> float:
        """CPU ms per trip and client: the answer, applying it, and the next long-poll."""
        deliveries = len(self.trials) * self.clients
        return 1000 * seconds / deliveries if deliveries else math.nan


@dataclass
class Findings:
    opts: Options
    threads: int
    started: datetime
    runs: list[Run]
    environment: dict[str, str]

    @property
    def main(self) -> Run:
        return self.runs[0]

    # --- text --------------------------------------------------------------------------------------------

    def table(self) -> str:
        lines = [
            "| clients | latency to each client's view | samples | p50 ms | p99 ms | max ms | min ms |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in self.runs:
            for name, values in (
                ("from the transition's creation on the server (`at`)", r.from_at),
                ("from the moment the tripping request returned", r.from_return),
            ):
                ms = [1000 * v for v in values]
                lines.append(
                    f"| {r.clients} | {name} | {len(ms)} | {report.percentile(ms, 50):.0f} | "
                    f"{report.percentile(ms, 99):.0f} | {max(ms, default=math.nan):.0f} | "
                    f"{min(ms, default=math.nan):.0f} |"
                )
        return "\n".join(lines)

    def cpu_table(self) -> str:
        lines = [
            "| clients | server CPU ms per trip | per client | clients' CPU ms per trip | per client | other CPU |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in self.runs:
            trips = len(r.trials) or 1
            lines.append(
                f"| {r.clients} | {1000 * r.server_cpu_s / trips:.0f} | {r.per_client_ms(r.server_cpu_s):.2f} | "
                f"{1000 * r.clients_cpu_s / trips:.0f} | {r.per_client_ms(r.clients_cpu_s):.2f} | "
                f"{r.other_cpu_pct:.0f}% |"
            )
        return "\n".join(lines)

    def verdict(self) -> str:
        m = self.main
        ok = m.p99 <= GOAL_S and not m.missing and m.clients >= GOAL_CLIENTS
        lines = [
            f"A trip reaches {m.clients} SDK client processes with p99 **{m.p99 * 1000:.0f} ms** from the "
            f"transition's creation (goal ≤ {GOAL_S * 1000:.0f} ms with {GOAL_CLIENTS}: **{report.verdict(ok)}**); p50 "
            f"{report.percentile(m.from_at, 50) * 1000:.0f} ms, max {max(m.from_at, default=math.nan) * 1000:.0f} "
            f"ms, over {len(m.trials)} trips."
        ]
        for r in self.runs[1:]:
            lines.append(
                f"With {r.clients} clients: p99 {r.p99 * 1000:.0f} ms, p50 "
                f"{report.percentile(r.from_at, 50) * 1000:.0f} ms, max "
                f"{max(r.from_at, default=math.nan) * 1000:.0f} ms."
            )
        return " ".join(lines)

    def correctness_items(self) -> list[tuple[str, bool]]:
        items = []
        for r in self.runs:
            sources: dict[str, int] = {}
            for trial in r.trials:
                for _, source, _ in trial.seen.values():
                    sources[source] = sources.get(source, 0) + 1
            items.append(
                (
                    f"{r.clients} clients: every client saw every trip ({r.missing} missing of "
                    f"{sum(t.expected for t in r.trials)}), each through the transition the trip wrote "
                    f"({r.wrong_ids} with another id; sources, a snapshot being the client's periodic refresh: "
                    f"{', '.join(f'{k} {v}' for k, v in sorted(sources.items()))})",
                    r.missing == 0 and r.wrong_ids == 0 and len(r.trials) == self.opts.trips,
                )
            )
        return items

    @property
    def correct(self) -> bool:
        return all(ok for _, ok in self.correctness_items())

    def correctness(self) -> str:
        return report.checklist(self.correctness_items())

    def section(self) -> str:
        e, o, m = self.environment, self.opts, self.main
        command = "python -m bench.propagation " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        noisy = max(r.other_cpu_pct for r in self.runs) > NOISY_CPU_PCT
        return f"""
## Propagation: a trip to every SDK client's view (issue 17)

{self.verdict()}

{self.table()}

{self.cpu_table()}

{
            m.clients
        } clients, each `Client(url, key, on_change=...)` in a Python process of its own (`bench/sdk_client.py`:
processes, not threads, so that no client shares a GIL with another or with the benchmark), all connected to the
same gunicorn ({o.workers} gthread workers x {self.threads} threads: each client holds a long-poll, and so a
thread, on `GET /api/v1/breakers/events`). For each of {len(m.trials)} trips a fresh service's breaker (the
defaults: five consecutive failures) is tripped by one `POST /api/v1/outcomes` of five failures; its answer
carries the transition (its id and `at`, its creation on the server, a few milliseconds before it commits). Each
client prints the moment (`time.time()`, the same machine's clock as the server's) its view saw the breaker open;
the latency is that minus `at`, and minus the moment the tripping request returned (negative when a client saw
it before the tripping client had its answer). Trips are 0.3 to 1 s apart, at random.

"Server CPU" is what gunicorn's workers used across the trips (read from /proc before the first and after the
last), per trip and per trip and client: answering each waiting long-poll and taking the client's next one.
"Clients' CPU" is the same for the client processes: reading the answer, applying it, polling again. Everything
shares the machine's {
            e.get("cores")
        } cores, so the latency's floor is this CPU spread over them. "Other CPU" is
what processes outside the benchmark took of the cores during the trips (`bench/cpu.py`){
            "; above " + f"{NOISY_CPU_PCT:.0f}% a run is noisy (this one was)" if noisy else ""
        }.

### How it was measured

- Date: {self.started:%Y-%m-%d %H:%M} UTC. Command: `.venv/bin/{command}`
- Machine: {e.get("cores")} cores ({e.get("cpu")}), {e.get("memory")}, {e.get("os")}; Python {
            e.get("python")
        },
  PostgreSQL {e.get("postgresql")}, Redis {e.get("redis")}, Django {e.get("django")}, gunicorn {
            e.get("gunicorn")
        },
  httpx {e.get("py_httpx")}, redis-py {e.get("py_redis")}, hiredis {e.get("py_hiredis")}.
- Server: `gunicorn -c config/gunicorn.conf.py config.wsgi`, {o.workers} gthread workers x {
            self.threads
        } threads
  (the sizing rule in `config/gunicorn.conf.py` for {m.clients} held long-polls), `REBOUND_MODE=production`
  (PostgreSQL database `{o.db_name}`, created fresh and migrated, dropped afterwards; Redis db 13, emptied
  first; `LOG_LEVEL=WARNING`). The services are registered before the clients start.

### Correctness

{self.correctness()}

### Reproduce

1. PostgreSQL on 127.0.0.1:5432 (user `postgres`, trust auth) and Redis on 127.0.0.1:6379; the benchmark
   drops and creates only the database `{o.db_name}` and uses (and empties) only Redis db 13; it waits for
   other benchmarks (they share db 13).
2. `.venv/bin/python -m bench.propagation --write-docs`: prints the tables; `--write-docs` rewrites this section
   (and nothing else in the file); the raw figures go to `bench/results/` (not committed).
"""

    def save(self) -> Path:
        data: dict[str, Any] = {
            "options": asdict(self.opts),
            "threads": self.threads,
            "environment": self.environment,
            "runs": [asdict(r) for r in self.runs],
        }
        return report.save_results("propagation", self.started, data)

"""What the breaker benchmark found, and how it is told: the console, bench/results/*.json and the docs."""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bench import report, server
from bench.loadgen import Target

if TYPE_CHECKING:
    from bench.breakers import ExactPass, HttpRound, Options, Rate

RESULTS = Path(__file__).resolve().parent / "results"
NOISY_CPU_PCT = 10.0
PERMIT_GOAL = 0.7  # permit requests/s over the bare view's (issue 17; 0.5 before)
OUTCOMES_GOAL = 10_000.0  # outcomes per second over HTTP, batched
STORE_GOAL = 0.5  # the store's decisions/s over redis-benchmark's
PEER_GOAL = 5.0  # Rebound's guarded calls/s over pybreaker's, per process
ISSUE_PYBREAKER_RATE = 1_800.0  # what the issue quotes for pybreaker with CircuitRedisStorage "here"


@dataclass
class Findings:
    opts: Options
    started: datetime
    targets: dict[str, Target]
    http_rounds: list[HttpRound]
    transitions_after_load: int
    after_load: dict[str, dict[str, Any]]
    exact: ExactPass
    redis_rounds: list[dict[str, Rate]]
    environment: dict[str, str]

    REDIS_NAMES: ClassVar[dict[str, str]] = {
        "rb_permit": "redis-benchmark -c 1 -P 1, comparable script (baseline)",
        "permit": "RedisStore.permit, one process",
        "rb_permit_ours": "redis-benchmark -c 1 -P 1, Rebound's permit script",
        "evalsha": "redis-py evalsha of Rebound's permit script (no RedisStore)",
        "rb_record": "redis-benchmark -c 1, batch of 100 in one call, comparable script (baseline)",
        "record": "RedisStore.record_many, batches of 100 (one call each), one process",
        "rb_record_ours": "redis-benchmark -c 1, batch of 100 in one call, Rebound's record script",
        "pybreaker_redis": "pybreaker + CircuitRedisStorage: guarded calls (peer)",
        "guarded": "Rebound: guarded calls (permit + outcome, batches of 100)",
        "pybreaker_memory": "pybreaker, in-memory storage (no Redis)",
    }

    # --- figures -----------------------------------------------------------------------------------------

    def _http_ratio(self, r: HttpRound) -> float:
        return r.measurements["permit"].rps / r.measurements["bare"].rps

    def _redis_ratio(self, r: dict[str, Rate], ours: str, base: str) -> float:
        return r[ours].per_s / r[base].per_s

    def _median_rate(self, name: str) -> float:
        return report.median(r[name].per_s for r in self.redis_rounds)

    @property
    def http_ratio(self) -> float:
        return report.median(self._http_ratio(r) for r in self.http_rounds)

    def outcomes_per_s(self, name: str = "outcomes") -> float:
        return report.median(r.measurements[name].errors_per_s for r in self.http_rounds)

    def redis_ratio(self, ours: str, base: str) -> float:
        # The median of per-round ratios: each pairs two runs seconds apart, which cancels slow drift.
        return report.median(self._redis_ratio(r, ours, base) for r in self.redis_rounds)

    def per_round(self, ours: str, base: str) -> str:
        return ", ".join(f"{self._redis_ratio(r, ours, base):.2f}" for r in self.redis_rounds)

    @property
    def busiest_other_cpu(self) -> float:
        http = [m.other_cpu_pct for r in self.http_rounds for m in r.measurements.values()]
        loops = [x.other_cpu_pct for r in self.redis_rounds for x in r.values()]
        return max(http + loops)

    # --- tables ------------------------------------------------------------------------------------------

    def http_table(self) -> str:
        rows = [
            (t.name, report.combine([r.measurements[k] for r in self.http_rounds]))
            for k, t in self.targets.items()
        ]
        return report.table(rows, unit="outcomes/s")

    def redis_table(self) -> str:
        lines = [
            "| measurement | per second | µs each | client CPU µs each | other CPU |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name, label in self.REDIS_NAMES.items():
            runs = [r[name] for r in self.redis_rounds]
            client = [x.cpu_us_per_op for x in runs if x.cpu_us_per_op is not None]
            client_text = f"{report.median(client):.1f}" if client else "-"
            per_s = report.median(x.per_s for x in runs)
            lines.append(
                f"| {label} | {per_s:,.0f} | {report.median(x.us_per_op for x in runs):.1f} | {client_text} "
                f"| {max(x.other_cpu_pct for x in runs):.0f}% |"
            )
        return "\n".join(lines)

    # --- verdicts ----------------------------------------------------------------------------------------

    def verdict(self) -> str:
        http_rounds = ", ".join(f"{self._http_ratio(r):.2f}" for r in self.http_rounds)
        outcomes, with_errors = self.outcomes_per_s("outcomes"), self.outcomes_per_s("outcomes_errors")
        permit = self.redis_ratio("permit", "rb_permit")
        record = self.redis_ratio("record", "rb_record")
        peer = self.redis_ratio("guarded", "pybreaker_redis")
        permit_only = self.redis_ratio("permit", "pybreaker_redis")
        pybreaker, guarded = self._median_rate("pybreaker_redis"), self._median_rate("guarded")
        issue_target = PEER_GOAL * ISSUE_PYBREAKER_RATE
        lines = [
            f"1. Permit over HTTP / bare view: **{self.http_ratio:.2f}** (goal ≥ {PERMIT_GOAL}: "
            f"**{report.verdict(self.http_ratio >= PERMIT_GOAL)}**; per round: {http_rounds}).",
            f"2. Batched outcomes over HTTP: **{outcomes:,.0f} outcomes/s** (goal ≥ {OUTCOMES_GOAL:,.0f}/s: "
            f"**{report.verdict(outcomes >= OUTCOMES_GOAL)}**); with 5% of them carrying an error that is classified "
            f"and stored: {with_errors:,.0f} outcomes/s.",
            f"3. Redis store / redis-benchmark with the comparable script: permits **{permit:.2f}** (goal ≥ "
            f"{STORE_GOAL}: **{report.verdict(permit >= STORE_GOAL)}**; per round: {self.per_round('permit', 'rb_permit')}); "
            f"record_many of batches of {self._pipeline()}, one script call each on both sides, **{record:.2f}** (goal ≥ {STORE_GOAL}: "
            f"**{report.verdict(record >= STORE_GOAL)}**; per round: {self.per_round('record', 'rb_record')}).",
            f"4. Guarded calls per process, Rebound / pybreaker with `CircuitRedisStorage`: **{peer:.2f}x** "
            f"({guarded:,.0f}/s against {pybreaker:,.0f}/s; goal ≥ {PEER_GOAL:g}x: **{report.verdict(peer >= PEER_GOAL)}**; "
            f"per round: {self.per_round('guarded', 'pybreaker_redis')}); permits alone {permit_only:.2f}x. "
            f"The issue quotes about {ISSUE_PYBREAKER_RATE:,.0f} pybreaker calls/s here; pybreaker "
            f"{self.environment.get('py_pybreaker', '?')} measured {pybreaker:,.0f}/s in this run (two round trips "
            f"per successful call: GET the state, SET the failure counter). Against the quoted figure the goal "
            f"would be {issue_target:,.0f} guarded calls/s: **{report.verdict(guarded >= issue_target)}**.",
        ]
        text = "\n".join(lines)
        if self.busiest_other_cpu > NOISY_CPU_PCT:
            text += (
                f"\n\nThe machine was shared: other processes took up to {self.busiest_other_cpu:.0f}% of the CPU "
                "during a timed run, so some figures are low; compare the rounds."
            )
        return text

    def _pipeline(self) -> int:
        from bench.breaker_loops import BATCH

        return BATCH

    # --- correctness -------------------------------------------------------------------------------------

    @property
    def http_clean(self) -> bool:
        runs = [m for r in self.http_rounds for m in [*r.measurements.values(), *r.warmups.values()] if m]
        return all(m.status_errors == 0 and m.socket_errors == 0 for m in runs)

    @property
    def breakers_closed(self) -> bool:
        expected = {"bench-svc", *(f"bench-out-{n}" for n in range(1, 6))}
        states = {name: b.get("state") for name, b in self.after_load.items()}
        full = all(
            (self.after_load.get(f"bench-out-{n}", {}).get("window") or {}).get("calls") == 20
            for n in range(1, 6)
        )
        return expected <= set(states) and all(s == "closed" for s in states.values()) and full

    @property
    def loops_ok(self) -> bool:
        return all(not x.problem for r in self.redis_rounds for x in r.values())

    @property
    def correct(self) -> bool:
        checks_ok = all(c.ok for r in self.http_rounds for c in r.error_checks)
        return (
            self.http_clean
            and checks_ok
            and self.transitions_after_load == 0
            and self.breakers_closed
            and self.exact.ok
            and self.loops_ok
        )

    def correctness(self) -> str:
        lines = [
            "| round | target | errors answered (warm-up + timed) | ErrorEvent rows stored | at most | |",
            "| ---: | --- | ---: | ---: | ---: | --- |",
        ]
        for number, r in enumerate(self.http_rounds, 1):
            for c in r.error_checks:
                lines.append(
                    f"| {number} | {c.target} | {c.answered_errors:,} | {c.stored.events:,} "
                    f"| {c.answered_errors + c.in_flight_allowance:,} | {'ok' if c.ok else 'FAILED'} |"
                )
        windows = ", ".join(
            f"{name} {b.get('state')} {(b.get('window') or {}).get('calls')}/{(b.get('window') or {}).get('failures')}"
            for name, b in sorted(self.after_load.items())
            if name != "bench-exact"
        )
        e = self.exact
        statuses = ", ".join(f"{n} x {s}" for s, n in sorted(e.statuses.items()))
        problems = [f"{x.name}: {x.problem}" for r in self.redis_rounds for x in r.values() if x.problem]
        return "\n".join(
            [
                "- Every wrk run, warm-ups included: "
                + (
                    "no non-2xx answer and no socket error: **ok**."
                    if self.http_clean
                    else "**FAILED**: see the tables."
                ),
                f"- Breaker transitions written during the HTTP load: {self.transitions_after_load} "
                f"(must be 0: no breaker tripped). Breakers after it (state calls/failures in the window of 20): "
                f"{windows}: **{'ok' if self.breakers_closed else 'FAILED'}**.",
                "- Error events: only the batches with error objects store rows (25 per batch); after each timed run "
                "the rows stored lie between the errors wrk saw answered and that plus one request per connection "
                "and wrk run (wrk drops what is in flight when its time is up; the server still stores it):",
                "",
                *lines,
                "",
                f"- Exact pass: 8 concurrent clients sent {e.sent:,} outcomes ({sum(e.statuses.values())} batches of "
                f"{self._batch()}, 4 of them with errors) to `bench-exact`, whose count window holds 10,000: answers "
                f"{statuses}; {e.counted:,} counted, of them {e.counted_failures} failures; `GET "
                f"/api/v1/breakers/bench-exact` shows {e.window.get('calls')} calls and {e.window.get('failures')} "
                f"failures, state {e.state}; {e.transitions} transitions; {e.events} error events stored of "
                f"{e.expected_events}: **{'ok' if e.ok else 'FAILED'}**.",
                "- In-process loops: every decision was a closed breaker's allow and every breaker ended closed: "
                + ("**ok**." if self.loops_ok else "**FAILED**: " + "; ".join(problems)),
            ]
        )

    def _batch(self) -> int:
        from bench.breakers import BATCH_SIZE

        return BATCH_SIZE

    # --- output ------------------------------------------------------------------------------------------

    def command(self) -> str:
        return ".venv/bin/python -m bench.breakers " + shlex.join(sys.argv[1:])

    def save(self) -> None:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"breakers-{self.started:%Y%m%dT%H%M%SZ}.json"
        data = {
            "started": self.started.isoformat(),
            "options": asdict(self.opts),
            "environment": self.environment,
            "http_ratio": self.http_ratio,
            "outcomes_per_s": self.outcomes_per_s("outcomes"),
            "outcomes_with_errors_per_s": self.outcomes_per_s("outcomes_errors"),
            "store_permit_ratio": self.redis_ratio("permit", "rb_permit"),
            "store_record_ratio": self.redis_ratio("record", "rb_record"),
            "peer_ratio": self.redis_ratio("guarded", "pybreaker_redis"),
            "http_rounds": [
                {k: {**asdict(m), "rps": m.rps} for k, m in r.measurements.items()} for r in self.http_rounds
            ],
            "redis_rounds": [
                {k: {**asdict(x), "per_s": x.per_s} for k, x in r.items()} for r in self.redis_rounds
            ],
            "after_load": self.after_load,
            "exact": {
                **{k: v for k, v in vars(self.exact).items() if k != "statuses"},
                "statuses": {str(k): v for k, v in self.exact.statuses.items()},
                "ok": self.exact.ok,
            },
            "correct": self.correct,
        }
        path.write_text(json.dumps(data, indent=2, default=str))
        print(f"raw results: {path.relative_to(server.ROOT)}")

    def section(self) -> str:
        env = self.environment
        o = self.opts
        return SECTION.format(
            verdict=self.verdict(),
            http_table=self.http_table(),
            redis_table=self.redis_table(),
            correctness=self.correctness(),
            date=self.started.strftime("%Y-%m-%d %H:%M UTC"),
            command=self.command(),
            noisy=NOISY_CPU_PCT,
            batch=self._batch(),
            pipeline=self._pipeline(),
            workers=o.workers,
            connections=o.connections,
            duration=o.duration,
            warmup=o.warmup,
            rounds=o.rounds,
            db=o.db_name,
            **env,
        )


SECTION = """\
## Circuit breakers (issue 3)

Four questions, each answered against a baseline measured in the same run: how a permit over HTTP compares
with a bare JSON view; how many outcomes per second the batched endpoint takes in; how close the Redis store
comes, from one Python process, to `redis-benchmark` running a comparable Lua script; and how many guarded
calls per process Rebound makes against the peer, pybreaker with its `CircuitRedisStorage`.

{verdict}

### Over HTTP: permits and batched outcomes

{http_table}

Requests/s counts answered requests only; outcomes/s is requests/s times the {batch} outcomes of a batch.
Each figure is the median of the {rounds} rounds, and each ratio the median of the per-round ratios; latencies
are wrk's, from the client, queueing included. "Other CPU" is the most that processes outside the benchmark
(other people's work on this shared machine) took of the cores during a timed run (`bench/cpu.py`: Redis and the
PostgreSQL backends serving the benchmark's database count as the benchmark's own; PostgreSQL's shared background
processes, autovacuum among them, as neither, and each target waits for PostgreSQL to be quiet before it runs);
above {noisy:.0f}% a round is noisy.

### From one process: the Redis store, redis-benchmark and pybreaker

{redis_table}

"Per second" is decisions (a permit, or an outcome recorded) or guarded calls; "µs each" its inverse;
"client CPU" the measuring Python process's own CPU time per operation (the rest of "µs each" is waiting for
Redis and for the core). Each loop runs from one thread of one fresh process, one call after another.

How comparable the baselines are:
- `redis-benchmark` is C with no client library: the floor of one client's round trips, not something a Python
  process can reach. It runs `EVALSHA` of `bench/breaker_baseline.lua`, loaded with `SCRIPT LOAD`, with the
  same four keys and the same arguments as `RedisStore` (the clock, the eleven settings, a permit id of a
  uuid's length; a record adds its four flags), and the Redis commands a closed breaker's script makes: TIME,
  HGETALL of the state hash, LLEN of the count window (a record also RPUSHes and LPOPs it), HSET of the eight
  state fields, a reply of ten values. It leaves out the state machine: on a closed breaker with a full window
  Rebound's permit script makes 5 Redis commands to its 4, its record script 12 to its 7 (the window fitting's
  extra LLENs). The rows "redis-benchmark … Rebound's permit/record script" run Rebound's own scripts the same
  way, to show how much of the gap is the scripts and how much the client.
- Permits: `RedisStore.permit(service, config, uuid4().hex)` (what `POST /permit` calls) against `-c 1 -P 1`:
  one client, no pipelining, a round trip per decision in both.
- Records: the same work on both sides. `RedisStore.record_many` of {pipeline} outcomes of one service (2%
  failures) sends one `EVALSHA` of Rebound's `RECORD_MANY` carrying the whole batch (seven arguments per
  outcome). The baseline is `redis-benchmark -c 1 -P 1` sending that very `EVALSHA`, the same five keys and the
  same arguments, to `bench/breaker_baseline_batch.lua`: a script that loops over the batch doing, per outcome,
  what the single baseline does for one (RPUSH onto the count window, LPOP past its size, LLEN), and TIME,
  HGETALL and HSET once per call, as Rebound's reads and writes the state once. Both count decisions (outcomes)
  per second: redis-benchmark's calls per second times {pipeline}. An earlier version of this benchmark set
  Rebound's one call against `-P 100` of a single-outcome script, 100 scripts against one: that ratio compared
  unlike work and is gone. The row "… Rebound's record script" sends the same batch to `RECORD_MANY` itself.
- The Python loops use the API's own store and its client (`recovery.breakers.store()`: one pool, 0.5 s
  timeouts, health checks) on Redis db 13, with the default settings (count window of 20, 10 calls minimum,
  50%, 5 consecutive), and a fresh process each.
- The peer: `pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30, state_storage=CircuitRedisStorage(
  STATE_CLOSED, client, namespace=<per run>))` with the same client, `.call(no_op)`. Rebound's guarded call:
  `RedisStore.permit`, the no-op, its outcome queued; every {pipeline} calls the queue is flushed with one
  `record_many` pipeline, as the SDK reports outcomes in background batches (here in the same thread, so the
  flush is paid for). pybreaker keeps its state in Redis too, but decides in the client: its call is a GET of
  the state and a SET of the failure counter. Rebound's permit is one atomic script round trip that the whole
  fleet shares (half-open trial permits, rate windows), which pybreaker does not offer. An agent that asks the
  HTTP API instead of Redis is bounded by the permit row of the table above.

### How it was measured

- Date: {date}. Command: `{command}`
- Machine: {cores} cores ({cpu}), {memory}, {os}; Python {python}, PostgreSQL {postgresql}, Redis {redis},
  {redis_benchmark}, Django {django}, gunicorn {gunicorn}, {wrk}, redis-py {py_redis}, hiredis {py_hiredis},
  pybreaker {py_pybreaker}.
- Server: `gunicorn -c config/gunicorn.conf.py config.wsgi`, {workers} sync workers, `REBOUND_MODE=production`
  (PostgreSQL database `{db}`, created fresh and migrated; `REDIS_URL` Redis db 13, so the breakers use the Redis
  store, emptied with FLUSHDB first; `LOG_LEVEL=WARNING`; `PROMETHEUS_MULTIPROC_DIR` set; API key cache 5 s;
  breaker settings cache 2 s). The services are registered before the load with the default settings.
- HTTP load: wrk, 1 thread, {connections} connections, {warmup} s warm-up then {duration} s measured per target,
  {rounds} rounds of bare view, permit, batch, batch with errors. The permit is a `POST` with an empty body
  (`Content-Length: 0`) and the agent key. A batch is `{{"outcomes": [...]}}` of {batch} outcomes round robin
  over five services: 2% failures without an error object (counted into the breaker, nothing written to
  PostgreSQL); the second batch turns a further 5% into failures carrying a 503 `error`, which is classified
  and stored as an error event as in `POST /errors`. Failures are spread so that no breaker trips (at most 7%
  of any window, never two in a row in one batch).
- Redis phase (after gunicorn has stopped): per round, each measurement with a {warmup} s warm-up and
  {duration} s timed (redis-benchmark: a warm-up that also sizes the timed run to about {duration} s), in the
  order of the table, so that each baseline runs next to what it is compared with.
- wrk, redis-benchmark, Redis, PostgreSQL and gunicorn share the same {cores} cores, so the absolute figures
  move with the machine; the ratios are the result.

### Correctness

{correctness}

### Reproduce

1. PostgreSQL on 127.0.0.1:5432 (user `postgres`, trust auth) and Redis on 127.0.0.1:6379; the benchmark
   drops and creates only the database `{db}` and uses (and empties) only Redis db 13.
2. `apt-get install -y wrk redis-tools` and `.venv/bin/pip install pybreaker` (the benchmark says so if one is
   missing).
3. Run `{command}`. It prints the tables; `--write-docs` rewrites this section (and nothing else in the file);
   the raw figures go to `bench/results/` (not committed). See `bench/README.md`.
"""

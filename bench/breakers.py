"""Circuit-breaker benchmarks (issue 3): permits over HTTP, batched outcomes, the Redis store, and pybreaker.

    .venv/bin/python -m bench.breakers [--duration 10] [--rounds 3] [--write-docs]

Four measurements, each against a baseline measured in the same run:
1. HTTP: `POST /api/v1/breakers/bench-svc/permit` (agent key, closed breaker) against the bare JSON view
   `GET /healthz`, one production gunicorn serving both, loaded by wrk. Goal: at least 0.7 (issue 17).
2. HTTP: `POST /api/v1/outcomes` with batches of 500 outcomes over five services (2% failures without an
   error object, counted into the breaker only), and the same with 5% more carrying an `error` (classified and
   stored in PostgreSQL). Goal: at least 10,000 outcomes per second.
3. The Redis store from one Python process: `RedisStore.permit` in a loop against `redis-benchmark -c 1`
   running a comparable Lua script (bench/breaker_baseline.lua), and `record_many` of batches of 100 (one
   EVALSHA carrying the batch) against redis-benchmark sending the same EVALSHA, the same batch, to a
   comparable batch script (bench/breaker_baseline_batch.lua). Goal: at least 0.5 for both.
4. The peer: pybreaker with `CircuitRedisStorage` guarding a no-op from one process, against Rebound's guarded
   call (a permit, the call, its outcome recorded in pipelined batches of 100). Goal: at least 5 times.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import redis

from bench import breaker_loops, cpu, loadgen, redisbench, report, server, verify
from bench.breaker_report import Findings
from bench.loadgen import Measurement, Target

DB_NAME = "rebound_bench_breakers"
BATCH_SIZE = 500
OUTCOME_SERVICES = [f"bench-out-{n}" for n in range(1, 6)]
PERMIT_SERVICE = "bench-svc"
EXACT_SERVICE = "bench-exact"
EXACT_WINDOW = 10_000  # the largest window a service may have: the exact pass's outcomes all fit in it
EXACT_BATCHES = (12, 4)  # plain batches, batches with errors: 8,000 outcomes
PIPELINE = breaker_loops.BATCH
SERVERS = ("redis-server",)  # Redis serves the benchmark: its CPU is ours, not other people's

BARE, PERMIT, OUTCOMES, OUTCOMES_ERR = "bare", "permit", "outcomes", "outcomes_errors"
# The Redis phase, in the order each round runs it: each baseline next to what it is compared with.
RB_PERMIT, RB_PERMIT_OURS, RB_RECORD, RB_RECORD_OURS = (
    "rb_permit",
    "rb_permit_ours",
    "rb_record",
    "rb_record_ours",
)
REDIS_ORDER = [
    RB_PERMIT,
    "permit",
    RB_PERMIT_OURS,
    "evalsha",
    RB_RECORD,
    "record",
    RB_RECORD_OURS,
    "pybreaker_redis",
    "guarded",
    "pybreaker_memory",
]


@dataclass(frozen=True)
class Options:
    duration: int
    warmup: int
    connections: int
    workers: int
    rounds: int
    write_docs: bool
    pg_admin_url: str
    db_name: str
    keep_workdir: bool


@dataclass(frozen=True)
class Rate:
    """One timed run of the Redis phase: a Python loop (with its process's CPU) or redis-benchmark."""

    name: str
    ops: int
    seconds: float
    other_cpu_pct: float
    cpu_seconds: float | None = None
    problem: str = ""

    @property
    def per_s(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    @property
    def us_per_op(self) -> float:
        return 1e6 * self.seconds / self.ops if self.ops else 0.0

    @property
    def cpu_us_per_op(self) -> float | None:
        return 1e6 * self.cpu_seconds / self.ops if self.cpu_seconds is not None and self.ops else None


@dataclass
class HttpRound:
    measurements: dict[str, Measurement] = field(default_factory=dict)
    warmups: dict[str, Measurement | None] = field(default_factory=dict)
    error_checks: list[verify.PhaseCheck] = field(default_factory=list)


@dataclass
class ExactPass:
    """Known outcomes sent concurrently to one service whose window holds them all, then read back."""

    sent: int
    statuses: Counter[int]
    counted: int = 0
    counted_failures: int = 0
    transitions: int = 0
    window: dict[str, Any] = field(default_factory=dict)
    state: str = ""
    events: int = 0
    expected_events: int = 0

    @property
    def ok(self) -> bool:
        return (
            set(self.statuses) == {200}
            and self.counted == self.sent
            and self.window.get("calls") == self.counted
            and self.window.get("failures") == self.counted_failures
            and self.state == "closed"
            and self.transitions == 0
            and self.events == self.expected_events
        )


# --- bodies ----------------------------------------------------------------------------------------------


def outcome(service: str, j: int, with_errors: bool) -> dict[str, Any]:
    """The j-th outcome of a service in a batch: 2% failures without an error; with_errors, 5% more with one."""
    if with_errors and j % 20 == 10:
        return {
            "service": service,
            "operation": "chat",
            "success": False,
            "duration_ms": 950,
            "error": {
                "service": service,
                "operation": "chat",
                "type": "APIStatusError",
                "message": "Service Unavailable",
                "status_code": 503,
            },
        }
    if j % 50 == 25:
        return {"service": service, "operation": "chat", "success": False, "duration_ms": 950}
    return {"service": service, "operation": "chat", "success": True, "duration_ms": 120}


def outcome_batch(services: list[str], size: int, with_errors: bool) -> list[dict[str, Any]]:
    # Round robin over the services, and the failures spread over each service's own outcomes: no run of
    # consecutive failures, and at most 7% failures in any window, so that no breaker trips.
    return [outcome(services[i % len(services)], i // len(services), with_errors) for i in range(size)]


def batch_body(services: list[str], size: int, with_errors: bool) -> bytes:
    return json.dumps({"outcomes": outcome_batch(services, size, with_errors)}).encode()


def errors_in(services: list[str], size: int, with_errors: bool) -> int:
    return sum(1 for o in outcome_batch(services, size, with_errors) if "error" in o)


def targets() -> dict[str, Target]:
    return {
        BARE: Target("bare view: GET /healthz", "GET", "/healthz"),
        # An empty body with Content-Length: 0, as an SDK sends it.
        PERMIT: Target(
            f"POST /api/v1/breakers/{PERMIT_SERVICE}/permit", "POST", _permit_path(), b"", True, 0
        ),
        OUTCOMES: Target(
            f"POST /api/v1/outcomes, batch of {BATCH_SIZE} (2% failures, no error object)",
            "POST",
            "/api/v1/outcomes",
            batch_body(OUTCOME_SERVICES, BATCH_SIZE, False),
            True,
            BATCH_SIZE,
        ),
        OUTCOMES_ERR: Target(
            f"POST /api/v1/outcomes, batch of {BATCH_SIZE} (+5% failures with an error object)",
            "POST",
            "/api/v1/outcomes",
            batch_body(OUTCOME_SERVICES, BATCH_SIZE, True),
            True,
            BATCH_SIZE,
        ),
    }


def _permit_path() -> str:
    return f"/api/v1/breakers/{PERMIT_SERVICE}/permit"


# --- options and set-up ----------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.breakers", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--duration", type=int, default=10, help="seconds of measurement per target and round"
    )
    parser.add_argument("--warmup", type=int, default=3, help="seconds of unmeasured load before each target")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers, one per core (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all targets; medians are reported")
    server.add_stack_options(parser, DB_NAME)
    a = parser.parse_args(argv)
    if min(a.duration, a.connections, a.workers, a.rounds) < 1 or a.warmup < 0:
        parser.error("duration, connections, workers and rounds must be at least 1, warmup at least 0")
    server.check_db_name(parser, a.db, DB_NAME)
    return Options(
        a.duration, a.warmup, a.connections, a.workers, a.rounds, a.write_docs, a.pg, a.db, a.keep_workdir
    )


def missing_tools() -> list[str]:
    hints = []
    if loadgen.wrk_path() is None:
        hints.append(loadgen.INSTALL_HINT)
    if redisbench.path() is None:
        hints.append(redisbench.INSTALL_HINT)
    if importlib.util.find_spec("pybreaker") is None:
        hints.append(
            "pybreaker is not installed: it is the peer.  Install it with:  .venv/bin/pip install pybreaker"
        )
    return hints


CREATE_SERVICES = """
from recovery.models import Service
for name in {names!r}:
    Service.objects.get_or_create(name=name)
Service.objects.get_or_create(name={exact!r}, defaults={{"window_size": {window}}})
"""


def prepare(stack: server.Stack, client: redis.Redis) -> str:
    """A fresh database with the benchmark's services and an agent key, and an empty Redis db 13."""
    print(f"database {stack.db_name}: recreating and migrating …", flush=True)
    server.recreate_database(stack)
    stack.env = server.server_env(stack)
    server.manage(stack, "migrate", "--noinput")
    # Registered beforehand with the defaults (count window of 20, at least 10 calls, 50%, 5 consecutive),
    # so that no timed run includes a registration; the exact pass's service holds 10,000 calls.
    names = [PERMIT_SERVICE, *OUTCOME_SERVICES]
    code = CREATE_SERVICES.format(names=names, exact=EXACT_SERVICE, window=EXACT_WINDOW)
    server.manage(stack, "shell", "-c", code)
    client.flushdb()  # db 13 is the benchmarks': breaker state, the API key cache, pybreaker's keys
    return server.create_agent_key(stack, "bench-agent")


# --- HTTP ------------------------------------------------------------------------------------------------


def measure_http(
    stack: server.Stack, key: str, target: Target, body: Path | None, opts: Options
) -> tuple[Measurement | None, Measurement]:
    return loadgen.warm_then_timed(
        target,
        base_url=stack.base_url,
        key=key,
        body_file=body,
        connections=opts.connections,
        warmup_s=opts.warmup,
        duration_s=opts.duration,
        servers=SERVERS,
    )


def http_round(
    stack: server.Stack, key: str, all_targets: dict[str, Target], bodies: dict[str, Path], opts: Options
) -> HttpRound:
    result = HttpRound()
    for name, target in all_targets.items():
        # An autovacuum of the table the last target filled would take a core from this one (the bare view's
        # included): wait until PostgreSQL is quiet.
        server.wait_for_quiet_postgres(stack.pg_admin_url)
        before = verify.settled_counts(stack)
        warm, m = measure_http(stack, key, target, bodies.get(name), opts)
        result.measurements[name], result.warmups[name] = m, warm
        per = f"  {m.errors_per_s:>9,.0f} outcomes/s" if target.errors_per_request else ""
        print(
            f"  {target.name[:52]:<52} {m.rps:>7,.0f} req/s{per}  p50 {m.p50_ms:6.1f} ms  p99 {m.p99_ms:6.1f} ms"
            f"  (other: {m.other_cpu_pct:.0f}% CPU)",
            flush=True,
        )
        if target.errors_per_request:
            # Only the batches with errors write ErrorEvent rows: between the errors wrk saw answered and that
            # plus one request per connection and wrk run, which the server completed after wrk stopped.
            per_request = errors_in(OUTCOME_SERVICES, BATCH_SIZE, name == OUTCOMES_ERR)
            runs = [r for r in (warm, m) if r is not None]
            answered = sum(r.ok_requests for r in runs) * per_request
            allowance = len(runs) * opts.connections * per_request
            stored = verify.settled_counts(stack) - before
            result.error_checks.append(verify.PhaseCheck(target.name, answered, stored, allowance))
    return result


def _get_json(stack: server.Stack, key: str, path: str) -> Any:
    request = urllib.request.Request(
        stack.base_url + path, headers={"Authorization": f"Bearer {key}", "Accept": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def _post(port: int, key: str, body: bytes) -> tuple[int, Any]:
    status, data = server.post_json(port, key, "/api/v1/outcomes", body)
    return status, json.loads(data) if status == 200 else data


def transitions(stack: server.Stack) -> int:
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM recovery_breakertransition").fetchone()
    return int(row[0]) if row else -1


def exact_pass(stack: server.Stack, key: str) -> ExactPass:
    """8 concurrent clients send 12 plain batches and 4 with errors to one service; its window must hold them."""
    plain, with_errors = EXACT_BATCHES
    bodies = [batch_body([EXACT_SERVICE], BATCH_SIZE, False)] * plain
    bodies += [batch_body([EXACT_SERVICE], BATCH_SIZE, True)] * with_errors
    sent = [
        o
        for flag in [False] * plain + [True] * with_errors
        for o in outcome_batch([EXACT_SERVICE], BATCH_SIZE, flag)
    ]
    before_events, before_transitions = verify.settled_counts(stack).events, transitions(stack)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda body: _post(stack.port, key, body), bodies))
    check = ExactPass(sent=len(sent), statuses=Counter(status for status, _ in answers))
    check.expected_events = sum(1 for o in sent if "error" in o)
    # The answers come back in the order of the bodies, each batch's results in the order of its outcomes.
    results = [r for status, data in answers if status == 200 for r in data["results"]]
    if len(results) == len(sent):
        check.counted = sum(1 for r in results if r["counted"])
        check.counted_failures = sum(
            1 for o, r in zip(sent, results, strict=True) if r["counted"] and not o["success"]
        )
    check.events = verify.settled_counts(stack).events - before_events
    check.transitions = transitions(stack) - before_transitions
    breaker = _get_json(stack, key, f"/api/v1/breakers/{EXACT_SERVICE}")
    check.window, check.state = breaker.get("window") or {}, breaker.get("state", "")
    return check


def breakers_after(stack: server.Stack, key: str) -> dict[str, dict[str, Any]]:
    """The benchmark services' breakers as GET /api/v1/breakers shows them."""
    return {
        b["service"]: b
        for b in _get_json(stack, key, "/api/v1/breakers")
        if b["service"].startswith("bench-")
    }


# --- Redis -----------------------------------------------------------------------------------------------


def run_loop(stack: server.Stack, kind: str, opts: Options, tag: str) -> Rate:
    command = [
        server.PYTHON,
        "-m",
        "bench.breaker_loops",
        kind,
        "--seconds",
        str(opts.duration),
        "--warmup",
        str(opts.warmup),
        "--tag",
        tag,
    ]
    done = subprocess.run(
        command, cwd=server.ROOT, env=stack.env, capture_output=True, text=True, check=False
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(breaker_loops.MARKER)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(
            f"bench.breaker_loops {kind} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    raw = json.loads(line[len(breaker_loops.MARKER) :])
    return Rate(kind, raw["ops"], raw["seconds"], raw["other_cpu_pct"], raw["cpu_seconds"], raw["problem"])


@dataclass(frozen=True)
class Script:
    """A loaded script and the keys and arguments redis-benchmark sends it (as RedisStore would), and how many
    decisions one call of it makes (a batch's outcomes)."""

    sha: str
    keys: list[str]
    args: list[str]
    pipeline: int
    per_call: int = 1


# The batch the record loop sends (bench/breaker_loops.py): PIPELINE outcomes of one service, 2% failures.
def batch_outcomes() -> list[tuple[str, str, str, str, str, str, str]]:
    """RedisStore._record_args' seven values per outcome: no permit id, failure, not ignored, no Retry-After,
    not frozen, no Retry-After asked for (redis-py sends the float 0.0 so), a run of one."""
    return [("", "1" if i % 50 == 25 else "0", "0", "0", "0", "0.0", "1") for i in range(PIPELINE)]


def scripts(client: redis.Redis) -> dict[str, Script]:
    from recovery.breakers.lua import PERMIT as REBOUND_PERMIT
    from recovery.breakers.lua import RECORD_MANY as REBOUND_RECORD_MANY

    # What RedisStore._args sends for the default settings (Redis's clock, count window of 20, …).
    settings = ["0", "count", "20", "50.0", "10", "5", "30000", "3", "2", "1.0", "300000", "30000"]
    permit_id = "0123456789abcdef0123456789abcdef"  # a uuid4().hex's length
    cap = "86400000"  # MAX_RETRY_AFTER_S in ms, the last argument of every call
    batch = [value for outcome in batch_outcomes() for value in outcome]
    record = [*settings, str(PIPELINE), *batch, cap]  # RedisStore._record_args for the record loop's batch

    def keys(name: str) -> list[str]:
        tag = f"rebound:breaker:{{{name}}}"
        return [f"{tag}:state", f"{tag}:count", f"{tag}:time", f"{tag}:trials", f"{tag}:pending"]

    # Our scripts answer "rebuild" for a breaker with no state (lost state is rebuilt from its history, not
    # taken for closed): give them a closed state with a generation, or redis-benchmark times that early return.
    for name in ("bench-rb-permit-ours", "bench-rb-record-ours"):
        client.hset(
            keys(name)[0],
            mapping={"state": "closed", "opened_at": 0, "open_until": 0, "wait_ms": 0, "gen": "bench"},
        )
    baseline = redisbench.load(client, redisbench.BASELINE_SCRIPT.read_text())
    batch_baseline = redisbench.load(client, redisbench.BATCH_BASELINE_SCRIPT.read_text())
    permit, recorder = redisbench.load(client, REBOUND_PERMIT), redisbench.load(client, REBOUND_RECORD_MANY)
    return {
        # The cap is left out of the permits (the baseline takes a 14th argument for a record's outcome):
        # Rebound's permit script then uses the same default, a day.
        RB_PERMIT: Script(baseline, keys("bench-rb-permit"), [*settings, permit_id], 1),
        RB_PERMIT_OURS: Script(permit, keys("bench-rb-permit-ours"), [*settings, permit_id], 1),
        # One EVALSHA carrying the whole batch, as RedisStore.record_many sends it: the same work, not 100
        # scripts pipelined against one.
        RB_RECORD: Script(batch_baseline, keys("bench-rb-record"), record, 1, PIPELINE),
        RB_RECORD_OURS: Script(recorder, keys("bench-rb-record-ours"), record, 1, PIPELINE),
    }


def run_redis_benchmark(stack: server.Stack, name: str, script: Script, opts: Options) -> Rate:
    def bench(requests: int) -> redisbench.Run:
        return redisbench.run(
            stack.redis_url, script.sha, script.keys, script.args, requests=requests, pipeline=script.pipeline
        )

    # The warm-up also sizes the timed run: redis-benchmark takes a number of requests, not a duration.
    warm = bench(2_000 * script.pipeline)
    if opts.warmup:
        warm = bench(max(1_000, int(warm.rps * opts.warmup)))
    before = cpu.sample(SERVERS)
    timed = bench(max(1_000, int(warm.rps * opts.duration)))
    # Decisions, as the Python loops count them: a batch's call makes per_call of them.
    ops = timed.requests * script.per_call
    return Rate(name, ops, timed.seconds, cpu.other_share(before, cpu.sample(SERVERS)))


def redis_round(stack: server.Stack, loaded: dict[str, Script], opts: Options, tag: str) -> dict[str, Rate]:
    rates: dict[str, Rate] = {}
    for name in REDIS_ORDER:
        if name in loaded:
            rate = run_redis_benchmark(stack, name, loaded[name], opts)
        else:
            rate = run_loop(stack, name, opts, tag)
        rates[name] = rate
        cpu_text = f", client CPU {rate.cpu_us_per_op:5.1f} µs/op" if rate.cpu_us_per_op is not None else ""
        print(
            f"  {Findings.REDIS_NAMES[name][:60]:<60} {rate.per_s:>10,.0f}/s  {rate.us_per_op:6.1f} µs/op"
            f"{cpu_text}  (other: {rate.other_cpu_pct:.0f}% CPU){'  ' + rate.problem if rate.problem else ''}",
            flush=True,
        )
    return rates


# --- main ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    hints = missing_tools()
    if hints:
        print("\n\n".join(hints), file=sys.stderr)
        return 2
    server.wait_for_other_benchmarks(("intake", "breakers"))
    with server.scratch_stack(
        prefix="rebound-bench-breakers-",
        pg_admin_url=opts.pg_admin_url,
        db_name=opts.db_name,
        workers=opts.workers,
        keep_workdir=opts.keep_workdir,
    ) as stack:
        return _run(stack, opts)


def _run(stack: server.Stack, opts: Options) -> int:
    started = datetime.now(UTC)
    client = redis.Redis.from_url(stack.redis_url)
    key = prepare(stack, client)
    all_targets = targets()
    bodies = {}
    for name, target in all_targets.items():
        if target.body is not None:
            bodies[name] = stack.workdir / f"{name}.json"
            bodies[name].write_bytes(target.body)

    http_rounds: list[HttpRound] = []
    with server.gunicorn(stack):
        print(
            f"gunicorn on {stack.base_url}, {opts.workers} sync workers; wrk 1 thread, {opts.connections} conns"
        )
        for number in range(1, opts.rounds + 1):
            print(f"HTTP round {number}/{opts.rounds}", flush=True)
            http_rounds.append(http_round(stack, key, all_targets, bodies, opts))
        transitions_after_load = transitions(stack)
        after_load = breakers_after(stack, key)
        exact = exact_pass(stack, key)

    redis_rounds: list[dict[str, Rate]] = []
    loaded = scripts(client)
    for number in range(1, opts.rounds + 1):
        print(f"Redis round {number}/{opts.rounds}", flush=True)
        redis_rounds.append(redis_round(stack, loaded, opts, f"{started:%H%M%S}-{number}"))

    findings = Findings(
        opts=opts,
        started=started,
        targets=all_targets,
        http_rounds=http_rounds,
        transitions_after_load=transitions_after_load,
        after_load=after_load,
        exact=exact,
        redis_rounds=redis_rounds,
        environment=_environment(stack, client),
    )
    blocks = [findings.http_table(), findings.redis_table(), findings.verdict()]
    return report.finish(
        "breakers", findings, [*blocks, "Correctness:\n" + findings.correctness()], write_docs=opts.write_docs
    )


def _environment(stack: server.Stack, client: redis.Redis) -> dict[str, str]:
    env = report.machine()
    env["postgresql"] = server.postgres_version(stack)
    env["wrk"] = loadgen.wrk_version()
    info: Any = client.info("server")  # a dict: this client is synchronous
    env["redis"] = str(info.get("redis_version", "?"))
    env["redis_benchmark"] = redisbench.version()
    for package in ("redis", "hiredis", "pybreaker"):
        env[f"py_{package}"] = report._version(package)
    return env


if __name__ == "__main__":
    raise SystemExit(main())

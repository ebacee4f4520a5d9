#!/usr/bin/env python
"""`make fuzz`: schemathesis over every operation of /api/schema/, against a real server in production mode.

It owns everything it uses and leaves nothing behind:

- a PostgreSQL database of its own, `rebound_fuzz_<pid>` on FUZZ_DATABASE_URL's server, dropped at the end;
- a Redis database of its own on FUZZ_REDIS_URL's server, claimed atomically among FUZZ_REDIS_DBS (7 down to 4;
  never the test suite's 8 to 15): one is taken only if it is unclaimed and either empty or left by an earlier
  fuzz run, and it is flushed at the start and at the end;
- gunicorn (config/gunicorn.conf.py) and a Celery worker in REBOUND_MODE=production on a free port, each in a
  session of its own, stopped at the end by its process group id;
- a temporary folder for their data and logs and for hypothesis' state: nothing is written into the repository
  but the reports, in var/fuzz/<time>/ (ignored by git), so that a failure can be read after the run.

It migrates, seeds the demo data (services, operations, fallback chains, errors; the users admin, operator and
viewer), issues an agent key and a key of the `operator` user, and runs schemathesis twice, as each, with the
four checks of issue 11. It prints how many requests each run sent (gunicorn's access log counts them) and how
long it took, and exits non-zero on any failure or error. Exclusions and why: docs/fuzzing.md.

`--serve` sets up the same server and keys, prints them and waits for Ctrl-C: to reproduce a failure with the
`curl` schemathesis prints (its Authorization header is the key printed here).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import psycopg
import redis
from psycopg import sql
from schemathesis import cli

ROOT = Path(__file__).resolve().parents[1]
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
PHASES = "examples,coverage,fuzzing"  # stateful needs links between operations, which the schema has none of
# What cannot be fuzzed, with the reason in docs/fuzzing.md: nothing today (see SHORT_WAITS).
EXCLUDED_PATHS: list[str] = []
# The server's long waits, shortened so that every operation is fuzzed within the time budget: a long-poll
# (`/breakers/events?wait=25`) answers after at most 1 s, and an event stream (`/breakers/stream`) ends after
# 1 s, as it does after 300 s in production, so that its answer is whole and can be checked.
SHORT_WAITS = {"BREAKER_EVENTS_MAX_WAIT_SECONDS": "1", "BREAKER_STREAM_MAX_SECONDS": "1"}
# Above gunicorn's 30 s worker timeout: a request that hangs is answered (or its worker killed) first.
REQUEST_TIMEOUT_S = 40
KEEP_REPORTS = 5  # var/fuzz/ keeps the reports of the newest runs only

REDIS_CLAIM_KEY = "rebound:fuzz-run:claim"
REDIS_MARKER_KEY = "rebound:fuzz-run:db"  # "a fuzz run used this database": flushing it loses nothing
REDIS_CLAIM_TTL = 3600  # a killed run's claim lapses after an hour
_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
if not holder and redis.call('DBSIZE') > 0 and redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('FLUSHDB')
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
redis.call('SET', KEYS[2], '1')
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('FLUSHDB')
redis.call('SET', KEYS[2], '1')
return 1
"""
# schemathesis' closing sections: with --quiet only they are printed (the whole output is in the report folder).
_SUMMARY = re.compile(r"^=+ (ERRORS|FAILURES|WARNINGS|SUMMARY) =+$")
_GENERATED = re.compile(r"^\s*(\d+) generated\b")


@dataclass
class Server:
    base_url: str
    keys: dict[str, str]
    access_log: Path
    env: dict[str, str]
    work: Path


@dataclass
class Run:
    """One schemathesis run's outcome."""

    role: str
    exit_code: int
    requests: int
    generated: int
    seconds: float


def log(message: str) -> None:
    print(f"[fuzz] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _with_path(url: str, path: str) -> str:
    return urlunparse(urlparse(url)._replace(path=f"/{path}"))


@contextlib.contextmanager
def own_database(server_url: str, name: str) -> Iterator[str]:
    """A fresh PostgreSQL database, dropped at the end whatever happens (its sessions are ended first)."""
    admin_url = _with_path(server_url, "postgres")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_path(server_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        log(f"dropped database {name}")


@contextlib.contextmanager
def own_redis_db(server_url: str, candidates: list[int], holder: str) -> Iterator[str]:
    """Claim one Redis database among `candidates` (atomically: unclaimed, and empty or a fuzz run's), flush it
    at the start and at the end, and give the claim back."""
    for db in candidates:
        url = _with_path(server_url, str(db))
        client = redis.Redis.from_url(url)
        if client.eval(_CLAIM, 2, REDIS_CLAIM_KEY, REDIS_MARKER_KEY, holder, str(REDIS_CLAIM_TTL)) == 1:
            break
        client.close()
    else:
        raise SystemExit(f"no free Redis database among {candidates} on {server_url} (FUZZ_REDIS_DBS)")
    try:
        yield url
    finally:
        client.eval(_RELEASE, 2, REDIS_CLAIM_KEY, REDIS_MARKER_KEY, holder)
        client.close()
        log(f"flushed and released Redis db {db}")


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[Any]]:
    """A server process in a session of its own, stopped at the end through its process group id (TERM, then
    KILL after 20 s), so that gunicorn's workers and Celery's pool go with it."""
    with log_path.open("w") as handle:
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def last_line(output: str) -> str:
    return output.strip().splitlines()[-1].strip()


def wait_http(url: str, proc: subprocess.Popen[Any], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode} before {url} answered")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as answer:
            if answer.status == 200:
                return
        time.sleep(0.3)
    raise SystemExit(f"{url} did not answer 200 within {timeout} s")


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


@contextlib.contextmanager
def server(report_dir: Path) -> Iterator[Server]:
    """Database, Redis, migrations, demo data, two keys, gunicorn and a worker; all undone at the end."""
    pid = os.getpid()
    work = Path(tempfile.mkdtemp(prefix="rebound-fuzz-"))
    redis_dbs = [int(db) for db in os.environ.get("FUZZ_REDIS_DBS", "7,6,5,4").split(",")]
    try:
        with (
            own_database(
                os.environ.get("FUZZ_DATABASE_URL", "postgres://postgres@127.0.0.1:5432"),
                f"rebound_fuzz_{pid}",
            ) as database_url,
            own_redis_db(
                os.environ.get("FUZZ_REDIS_URL", "redis://127.0.0.1:6379"),
                redis_dbs,
                f"fuzz-{socket.gethostname()}-{pid}",
            ) as redis_url,
        ):
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_SETTINGS", "PYTEST"))}
            env.update(
                REBOUND_MODE="production",
                DJANGO_SETTINGS_MODULE="config.settings",
                SECRET_KEY=secrets.token_urlsafe(48),
                DATABASE_URL=database_url,
                REDIS_URL=redis_url,
                ALLOWED_HOSTS="127.0.0.1,localhost",
                DATA_DIR=str(work / "data"),
                GUNICORN_BIND=f"127.0.0.1:{port}",
                GUNICORN_WORKERS=os.environ.get("FUZZ_GUNICORN_WORKERS", "2"),
                GUNICORN_ACCESSLOG=str(work / "access.log"),
                # Errors only: every 4xx would be a warning line (thousands); a 500 is logged with its traceback.
                LOG_LEVEL="ERROR",
                **SHORT_WAITS,
            )
            log(f"database {database_url}, redis {redis_url}, work folder {work}")
            manage(env, "migrate", "--noinput", "-v", "0")
            manage(env, "seed_demo", "--admin-password", secrets.token_urlsafe(16))
            keys = {
                "agent": last_line(manage(env, "create_agent", "fuzz-agent")),
                "operator": last_line(manage(env, "create_user_key", "operator", "--name", "fuzz")),
            }
            base_url = f"http://127.0.0.1:{port}"
            gunicorn = [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "config.wsgi"]
            worker = [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-l",
                "WARNING",
                "--concurrency",
                "1",
            ]
            try:
                with (
                    process(gunicorn, env, work / "gunicorn.log") as web,
                    process(worker, env, work / "worker.log"),
                ):
                    wait_http(f"{base_url}/healthz", web)
                    log(f"gunicorn on {base_url} (production mode) and a Celery worker are up")
                    yield Server(base_url, keys, work / "access.log", env, work)
            finally:
                for name in ("gunicorn.log", "worker.log"):
                    with contextlib.suppress(OSError):
                        shutil.copy(work / name, report_dir / name)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def schemathesis(role: str, target: Server, options: argparse.Namespace, report_dir: Path) -> Run:
    args = [
        sys.executable,
        __file__,
        "schemathesis",
        "run",
        f"{target.base_url}/api/schema/?format=json",
        "--url",
        target.base_url,
        "--header",
        f"Authorization: Bearer {target.keys[role]}",
        "--checks",
        CHECKS,
        "--phases",
        options.phases,
        "--max-examples",
        str(options.max_examples),
        "--workers",
        str(options.workers),
        "--request-timeout",
        str(REQUEST_TIMEOUT_S),
        # Hypothesis would keep what it found in ./.hypothesis: nothing goes into the repository.
        "--generation-database",
        "none",
        "--report",
        "junit",
        "--report-dir",
        str(report_dir / role),
        "--no-color",
    ]
    for path in EXCLUDED_PATHS:
        args += ["--exclude-path", path]
    if options.seed is not None:
        args += ["--seed", str(options.seed)]
    if options.continue_on_failure:
        args.append("--continue-on-failure")
    if options.operations:
        args += ["--include-path-regex", options.operations]
    log(f"schemathesis as the {role}: at most {options.max_examples} examples per operation and phase")
    before = count_lines(target.access_log)
    started = time.monotonic()
    summary: list[str] = []
    with (report_dir / f"{role}.log").open("w") as out:
        # In the temporary folder: hypothesis keeps its state in ./.hypothesis, which goes with the folder.
        proc = subprocess.Popen(
            args, cwd=target.work, env=target.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            if summary or _SUMMARY.search(line):
                summary.append(line)
            if summary or not options.quiet:
                sys.stdout.write(line)
                sys.stdout.flush()
        code = proc.wait()
    seconds = time.monotonic() - started
    time.sleep(1)  # gunicorn writes an access-log line after each answer: let the last ones land
    generated = next((int(m.group(1)) for line in summary if (m := _GENERATED.match(line))), 0)
    return Run(role, code, count_lines(target.access_log) - before, generated, seconds)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--max-examples",
        type=int,
        default=int(os.environ.get("FUZZ_MAX_EXAMPLES", "25")),
        help="test cases per operation in the fuzzing phase (FUZZ_MAX_EXAMPLES, default 25)",
    )
    parser.add_argument("--workers", type=int, default=int(os.environ.get("FUZZ_WORKERS", "4")))
    parser.add_argument("--phases", default=os.environ.get("FUZZ_PHASES", PHASES))
    parser.add_argument("--seed", type=int, default=None, help="repeat a run (schemathesis prints its seed)")
    parser.add_argument("--as", dest="roles", default="agent,operator", help="agent, operator or both")
    parser.add_argument("--operations", default=None, help="only the paths matching this regular expression")
    parser.add_argument("--continue-on-failure", action="store_true", help="every failure, not each first")
    parser.add_argument("--quiet", action="store_true", help="print no progress: failures and summary only")
    parser.add_argument(
        "--serve", action="store_true", help="start the server, print its keys, wait for Ctrl-C"
    )
    return parser.parse_args()


def new_report_dir() -> Path:
    """var/fuzz/<time>/ for this run; only the newest KEEP_REPORTS runs' folders are kept."""
    reports = ROOT / "var" / "fuzz"
    report_dir = reports / time.strftime("%Y%m%d-%H%M%S")
    report_dir.mkdir(parents=True, exist_ok=True)
    for old in sorted(p for p in reports.iterdir() if p.is_dir())[:-KEEP_REPORTS]:
        shutil.rmtree(old, ignore_errors=True)
    return report_dir


def main() -> int:
    options = parse_args()
    started = time.monotonic()
    report_dir = new_report_dir()
    # A TERM (a CI timeout) unwinds like Ctrl-C: every `finally` stops, drops and flushes what it started.
    signal.signal(signal.SIGTERM, _interrupt)
    runs: list[Run] = []
    try:
        with server(report_dir) as target:
            if options.serve:
                log(f"serving on {target.base_url}; Ctrl-C stops it and drops everything")
                for role, key in target.keys.items():
                    log(f"  {role}: -H 'Authorization: Bearer {key}'")
                while True:
                    time.sleep(3600)
            runs = [schemathesis(role, target, options, report_dir) for role in options.roles.split(",")]
    except KeyboardInterrupt:
        log("interrupted; cleaned up")
        return 0 if options.serve else 130
    log(f"excluded: {', '.join(EXCLUDED_PATHS) or 'nothing'} (docs/fuzzing.md)")
    for run in runs:
        verdict = "passed" if run.exit_code == 0 else f"FAILED (schemathesis exit {run.exit_code})"
        log(
            f"as the {run.role}: {run.generated} test cases, {run.requests} requests in {run.seconds:.0f} s: {verdict}"
        )
    log(f"reports and logs in {report_dir.relative_to(ROOT)}; {time.monotonic() - started:.0f} s in all")
    return 0 if runs and all(run.exit_code == 0 for run in runs) else 1


def run_schemathesis(args: list[str]) -> int:
    """schemathesis' own command line, in this process, with `ast.parse` made one-at-a-time.

    In Python 3.11 the AST constructor's recursion counter belongs to the interpreter, not to the call: two
    threads building a tree at once (hypothesis parses a lambda's source file to describe a filter, in every
    schemathesis worker thread) can upset it, and the parse fails with "SystemError: AST constructor recursion
    depth mismatch", which schemathesis reports as an error of the run (CPython gh-106905; 3.12 keeps the counter
    per call). The lock costs nothing: hypothesis parses each source file once and caches the result."""
    original = ast.parse
    lock = threading.Lock()

    def parse(*parse_args: Any, **kwargs: Any) -> Any:
        with lock:
            return original(*parse_args, **kwargs)

    ast.parse = parse  # type: ignore[assignment]
    sys.argv = ["schemathesis", *args]
    return int(cli.schemathesis() or 0)


if __name__ == "__main__":
    if sys.argv[1:2] == ["schemathesis"]:
        sys.exit(run_schemathesis(sys.argv[2:]))
    sys.exit(main())

"""A production-configured Rebound for benchmarks: its own PostgreSQL database, migrated, behind gunicorn.

Everything here is shared by the benchmarks: each one builds a `Stack`, loads its targets and stops it.
The server runs with REBOUND_MODE=production and config/gunicorn.conf.py, exactly as it is deployed, so that
the figures describe the real configuration rather than a test settings module.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# Other people share this PostgreSQL and Redis: the benchmarks touch only this database and Redis db 13.
DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_DB_NAME = "rebound_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"


@dataclass
class Stack:
    """Where the benchmark's server lives: its database, environment, scratch folder and port."""

    pg_admin_url: str
    db_name: str
    redis_url: str
    workdir: Path
    workers: int
    port: int = 0
    env: dict[str, str] = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        admin = conninfo_to_dict(self.pg_admin_url)
        admin["dbname"] = self.db_name
        return _postgres_url(admin)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _postgres_url(parts: Mapping[str, object]) -> str:
    user = parts.get("user") or "postgres"
    password = f":{parts['password']}" if parts.get("password") else ""
    host = parts.get("host") or "127.0.0.1"
    port = parts.get("port") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{parts['dbname']}"


def recreate_database(stack: Stack) -> None:
    """Drop and create the benchmark database, so every run starts from the same empty tables.

    The name must start with rebound_bench: this function drops it, and must never drop anyone else's.
    """
    if not stack.db_name.startswith(DEFAULT_DB_NAME):
        raise SystemExit(
            f"refusing to drop {stack.db_name!r}: benchmark databases start with {DEFAULT_DB_NAME}"
        )
    with psycopg.connect(stack.pg_admin_url, autocommit=True) as conn:
        name = sql.Identifier(stack.db_name)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))


def drop_database(stack: Stack) -> None:
    """Drop the benchmark database at the end of a run (WITH FORCE: a server process may still hold a
    connection). This process's own Django connections, if it opened any, are closed first."""
    if "django.db" in sys.modules:
        from django.db import connections

        connections.close_all()
    with psycopg.connect(stack.pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(stack.db_name)))


def server_env(stack: Stack) -> dict[str, str]:
    """The production environment config/env.py validates, pointed at the benchmark's own services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUNICORN_", "REBOUND_", "DJANGO_"))}
    multiproc = stack.workdir / "prometheus"
    multiproc.mkdir(exist_ok=True)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "REBOUND_MODE": "production",
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(48)[:50],
            "DATABASE_URL": stack.database_url,
            "REDIS_URL": stack.redis_url,
            "CELERY_BROKER_URL": stack.redis_url,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOG_LEVEL": "WARNING",
            "DATA_DIR": str(stack.workdir / "data"),
            # Several gunicorn workers need the shared metrics folder in production, so the benchmark has it.
            "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
            "GUNICORN_WORKERS": str(stack.workers),
            "GUNICORN_THREADS": "1",
            "GUNICORN_MAX_REQUESTS": "0",
            "GUNICORN_ACCESSLOG": "",
        }
    )
    return env


def manage(stack: Stack, *args: str) -> str:
    """Run a management command in the benchmark's environment; its stdout, or exit with its stderr."""
    done = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=stack.env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def create_agent_key(stack: Stack, name: str) -> str:
    # create_agent prints the plaintext key as its last line (it is stored only as a hash).
    return manage(stack, "create_agent", name).strip().splitlines()[-1].strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def gunicorn(stack: Stack) -> Iterator[subprocess.Popen[bytes]]:
    """Start gunicorn with config/gunicorn.conf.py, wait for /healthz, and always stop it afterwards."""
    stack.port = free_port()
    env = {**stack.env, "GUNICORN_BIND": f"127.0.0.1:{stack.port}"}
    log = (stack.workdir / "gunicorn.log").open("wb")
    # Its own session, so that stopping it reaches the master and every worker it forked, and nothing else.
    process = subprocess.Popen(
        [PYTHON, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "config.wsgi"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_ready(stack, process)
        yield process
    finally:
        _stop(process)
        log.close()


def _wait_ready(stack: Stack, process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited with {process.returncode}:\n{tail(stack)}")
        try:
            with urllib.request.urlopen(stack.base_url + "/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"gunicorn did not answer /healthz within {timeout_s:.0f} s:\n{tail(stack)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM lets the master stop its workers gracefully; SIGKILL to the group if it does not in time."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def tail(stack: Stack, lines: int = 40) -> str:
    path = stack.workdir / "gunicorn.log"
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def postgres_version(stack: Stack) -> str:
    with psycopg.connect(stack.pg_admin_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]).split(" ")[0] if row else "?"


def post_json(port: int, key: str, path: str, body: bytes, timeout_s: float = 60) -> tuple[int, bytes]:
    """One authenticated JSON POST on a fresh connection: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        headers = {
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        conn.request("POST", path, body=body, headers=headers)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


@contextlib.contextmanager
def scratch_stack(
    *, prefix: str, pg_admin_url: str, db_name: str, workers: int, keep_workdir: bool
) -> Iterator[Stack]:
    """A stack with its own scratch folder, removed afterwards unless asked to keep it."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield Stack(
            pg_admin_url=pg_admin_url,
            db_name=db_name,
            redis_url=DEFAULT_REDIS_URL,
            workdir=workdir,
            workers=workers,
        )
    finally:
        if keep_workdir:
            print(f"scratch folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


# --- what every benchmark that runs its own stack shares -------------------------------------------------


def add_stack_options(parser: argparse.ArgumentParser, db_name: str = DEFAULT_DB_NAME) -> None:
    """--write-docs, --pg, --db (dropped and created) and --keep-workdir."""
    parser.add_argument("--write-docs", action="store_true", help="rewrite the section in docs/benchmarks.md")
    parser.add_argument("--pg", default=DEFAULT_PG_ADMIN_URL, help="PostgreSQL admin URL")
    parser.add_argument("--db", default=db_name, help="benchmark database (dropped and created)")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the scratch folder (gunicorn log)")


def check_db_name(parser: argparse.ArgumentParser, db: str, prefix: str) -> None:
    if not db.startswith(prefix):
        parser.error(f"the database's name must start with {prefix}: it is dropped and created")


def other_benchmarks(modules: tuple[str, ...] = ()) -> list[int]:
    """Other benchmark processes running now (`-m bench.<module>` for one of `modules`; any benchmark when none
    are named). They share Redis db 13 (the breaker state, the buffered intake's stream, the API key cache)
    and the cores, so two at once spoil each other."""
    ancestors, pid = set(), os.getpid()
    while pid > 1:  # this process and whatever started it (a `timeout` wrapper names the module too)
        ancestors.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    patterns = [f"-m\x00bench.{module}".encode() for module in modules] or [b"-m\x00bench."]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in ancestors:
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if any(pattern in command for pattern in patterns):
            found.append(int(entry.name))
    return found


def wait_for_other_benchmarks(modules: tuple[str, ...] = (), timeout_s: float = 1800.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (others := other_benchmarks(modules)) and time.monotonic() < deadline:
        print(f"waiting for other benchmark processes {others} to finish: they share Redis db 13", flush=True)
        time.sleep(10)
    if others:
        raise SystemExit(f"other benchmark processes {others} are still running; not starting")


# --- a quiet PostgreSQL before a timed run ----------------------------------------------------------------

QUIET_TIMEOUT_S = 60.0
# Autovacuum and autoanalyze workers (of any database: they share the cores) and any VACUUM in progress.
_BUSY = """
SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker')
     + (SELECT count(*) FROM pg_stat_progress_vacuum)
"""


def wait_for_quiet_postgres(
    pg_admin_url: str, timeout_s: float = QUIET_TIMEOUT_S, interval_s: float = 0.5
) -> tuple[float, bool]:
    """Wait until no autovacuum/autoanalyze worker or VACUUM runs, at most timeout_s: a vacuum of the table the
    last target filled takes a core from the next timed run. Returns (seconds waited, quiet at the end); says
    so when it waited at all."""
    started = time.monotonic()
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        while True:
            row = conn.execute(_BUSY).fetchone()
            busy = int(row[0]) if row else 0
            waited = time.monotonic() - started
            if not busy or waited >= timeout_s:
                break
            time.sleep(interval_s)
    if waited >= interval_s:
        state = "quiet" if not busy else f"still {busy} vacuum worker(s) running, going on"
        print(f"  waited {waited:.1f} s for PostgreSQL's autovacuum ({state})", flush=True)
    return waited, not busy


# --- a Redis of the benchmark's own, persisting as production's does ----------------------------------------


@contextlib.contextmanager
def own_redis(stack: Stack, appendonly: bool = True) -> Iterator[str]:
    """Start a redis-server of the benchmark's own on a free port, with AOF (`appendfsync everysec`) as
    docker-compose runs it, point the stack at it (db 13) and stop it afterwards. The intake buffers only in a
    Redis that persists writes: on a shared Redis without AOF it would write every report in the request."""
    folder = stack.workdir / "redis"
    folder.mkdir(exist_ok=True)
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder)]
    command += ["--appendonly", "yes" if appendonly else "no", "--appendfsync", "everysec"]
    log = (stack.workdir / "redis.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    previous, stack.redis_url = stack.redis_url, f"redis://127.0.0.1:{port}/13"
    try:
        _wait_for_redis(port, process)
        yield stack.redis_url
    finally:
        stack.redis_url = previous
        _stop(process)
        log.close()


def _wait_for_redis(port: int, process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"redis-server exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                return
        time.sleep(0.1)
    raise SystemExit(f"redis-server did not answer on port {port} within {timeout_s:.0f} s")


CREATE_SERVICES = """
from recovery.models import Service
for name in {names!r}:
    Service.objects.get_or_create(name=name)
"""


def create_services(stack: Stack, names: list[str]) -> None:
    """Register services with the default settings, before any client starts (through `manage.py shell`)."""
    manage(stack, "shell", "-c", CREATE_SERVICES.format(names=names))

"""Servers the test suite starts and owns, so that a test may restart or kill them.

The machine's PostgreSQL and Redis are shared by every run (and by CI); a fault test must never restart them.
These start a private redis-server or PostgreSQL cluster on a free port in the test's own folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import redis

from tests.support.processes import free_port


class OwnRedis:
    """A redis-server of this test's own: `restart()` loses what it did not persist, as a real restart does."""

    def __init__(self, folder: Path, appendonly: bool = False, appendfsync: str = "everysec") -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
            "--save", "", "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync, "--logfile", str(self.folder / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ready()

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        self.process.wait(timeout=20)
        self.process = None

    def restart(self, down_seconds: float = 0.0, kill: bool = True) -> None:
        """Stop (SIGKILL by default: nothing flushed on the way out) and start again on the same port."""
        self.stop(kill=kill)
        time.sleep(down_seconds)
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def _wait_ready(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with self.client() as client:
                    client.ping()
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise TimeoutError(
            f"redis-server on port {self.port} did not start (see {self.folder / 'redis.log'})"
        )


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / name).exists():
            return str(folder / name)
    raise FileNotFoundError(name)


class OwnPostgres:
    """A PostgreSQL cluster of this test's own (initdb in the test's folder, trust auth, user postgres).

    PostgreSQL refuses to run as root, so when the tests run as root the cluster belongs to the `postgres`
    OS user (the folder is handed to it), and its commands run through `runuser`.
    """

    def __init__(self, folder: Path | None = None) -> None:
        # A folder of its own under /tmp, whatever the test passes: pytest resets its own base folder to 0700
        # when another session starts, and the postgres user would lose its way to the cluster.
        del folder
        self.folder = Path(tempfile.mkdtemp(prefix="rebound-pg-"))
        self.data = self.folder / "pgdata"
        self.port = free_port()
        self._as_root = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def database_url(self, name: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def _run(self, args: list[str]) -> None:
        if self._as_root:
            args = ["runuser", "-u", "postgres", "--", *args]
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    def init(self) -> None:
        if self._as_root:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run([_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.folder}'\n"
                "fsync = off\nmax_connections = 100\n"
            )

    def start(self) -> None:
        log = self.folder / "postgres.log"
        self._run([_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(log), "-w", "-t", "60", "start"])

    def stop(self, mode: str = "fast") -> None:
        self._run([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"])

    def remove(self) -> None:
        """Delete the cluster's folder (stop it first)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def create_database(self, name: str) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

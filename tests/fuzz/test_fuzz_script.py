"""`make fuzz` (scripts/fuzz.py) itself: it fuzzes against a production-mode server it starts, reports what it
sent, and leaves nothing behind: no database, no Redis claim, no process, nothing in the repository."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import psycopg
import pytest
import redis
from django.conf import settings

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]
CLAIM = "rebound:fuzz-run:claim"  # scripts/fuzz.py's claim of a Redis database


def _server(url: str, path: str) -> str:
    return urlunparse(urlparse(url)._replace(path=path))


def _fuzz(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_SETTINGS", "PYTEST"))}
    env.update(
        FUZZ_DATABASE_URL=_server(settings.TEST_DATABASE_URL, ""),
        FUZZ_REDIS_URL=_server(settings.TEST_REDIS_URL, ""),
    )
    return subprocess.run(
        [sys.executable, "scripts/fuzz.py", "--quiet", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_it_fuzzes_as_an_agent_and_leaves_nothing_behind() -> None:
    before = set(os.listdir(ROOT))

    done = _fuzz("--as", "agent", "--operations", "^/api/v1/me$", "--max-examples", "5")

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"as the agent: \d+ test cases, \d+ requests in \d+ s: passed", done.stdout)
    pid = re.search(r"rebound_fuzz_(\d+)", done.stdout).group(1)  # type: ignore[union-attr]
    with psycopg.connect(_server(settings.TEST_DATABASE_URL, "/postgres"), autocommit=True) as conn:
        left = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [f"rebound_fuzz_{pid}"]
        ).fetchall()
    assert left == []
    holders = [
        redis.Redis.from_url(_server(settings.TEST_REDIS_URL, f"/{db}")).get(CLAIM) for db in (7, 6, 5, 4)
    ]
    assert f"fuzz-{socket.gethostname()}-{pid}".encode() not in holders
    port = int(re.search(r"gunicorn on http://127.0.0.1:(\d+)", done.stdout).group(1))  # type: ignore[union-attr]
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    assert set(os.listdir(ROOT)) - before <= {"var"}

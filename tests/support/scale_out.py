"""What the scale-out test (tests/ops/test_scale_out.py) runs: a local outside world that keeps what it was sent
by path and Idempotency-Key, and several web processes, workers and beats of a production-mode Rebound on the
test database and the test Redis."""

from __future__ import annotations

import contextlib
import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.processes import PYTHON, free_port, process_env, start, stop, wait_for, wait_http


class World:
    """The outside services: `/retry/...` answers 503 to the first request of each Idempotency-Key and 201 to
    the next ones; anything else (health checks, notification hooks, healing webhooks `/heal/<n>`) answers 200.
    Counts every request, and the Idempotency-Keys of the healing webhooks' calls (a run's id)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_path: Counter[str] = Counter()
        self.by_key: Counter[str] = Counter()
        self.heal_keys: Counter[str] = Counter()
        self.hook_bodies: list[dict[str, Any]] = []
        world = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                key = self.headers.get("Idempotency-Key", "")
                with world.lock:
                    world.by_path[self.path] += 1
                    if self.path.startswith("/retry/"):
                        world.by_key[key] += 1
                        first = world.by_key[key] == 1
                    else:
                        first = False
                    if self.path.startswith("/heal/"):
                        world.heal_keys[key] += 1
                    if self.path.startswith("/hook"):
                        with contextlib.suppress(ValueError):
                            world.hook_bodies.append(json.loads(body))
                status, payload = (503, b'{"error": "down"}') if first else (200, b'{"ok": true}')
                if self.path.startswith("/retry/") and not first:
                    status = 201
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_HEAD = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def url(self, path: str) -> str:
        return f"http://{self.host}{path}"


@contextmanager
def running_world() -> Iterator[World]:
    world = World()
    world.thread.start()
    try:
        yield world
    finally:
        world.server.shutdown()
        world.server.server_close()


@dataclass
class Cluster:
    urls: list[str]
    logs: dict[str, Path]
    processes: dict[str, Any] = field(default_factory=dict)

    def log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")

    def tail(self, *names: str) -> str:
        return "\n".join(f"--- {n}\n{self.log(n)[-2000:]}" for n in names or tuple(self.logs))

    def stop(self, *names: str) -> None:
        for name in names:
            process = self.processes.pop(name, None)
            if process is not None:
                stop(process)


@contextmanager
def cluster(
    tmp_path: Path, outbound_host: str, *, webs: int = 3, workers: int = 2, beats: int = 2
) -> Iterator[Cluster]:
    """`webs` gunicorn processes (one worker of 8 threads each, own port), `workers` Celery workers (solo pool)
    and `beats` beat processes, production mode on the test database and Redis; each stopped at the end."""
    env = process_env(
        tmp_path,
        GUNICORN_WORKERS="1",
        GUNICORN_THREADS="8",
        INTAKE_REQUIRE_DURABLE_REDIS="false",  # the machine's Redis keeps nothing on disk
        OUTBOUND_ALLOWED_HOSTS=outbound_host,
    )
    ports = [free_port() for _ in range(webs)]
    made = Cluster(urls=[f"http://127.0.0.1:{p}" for p in ports], logs={})

    def launch(name: str, args: list[str], **extra: str) -> None:
        made.logs[name] = tmp_path / f"{name}.log"
        made.processes[name] = start(args, {**env, **extra}, made.logs[name])

    try:
        for i, port in enumerate(ports):
            gunicorn = [PYTHON, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "config.wsgi"]
            launch(f"web{i}", gunicorn, GUNICORN_BIND=f"127.0.0.1:{port}")
        for i in range(workers):
            celery = [PYTHON, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "-l", "INFO"]
            launch(f"worker{i}", [*celery, "-n", f"scale{i}@%h"])
        for i in range(beats):
            beat = [PYTHON, "-m", "celery", "-A", "config", "beat", "-l", "INFO", "--pidfile="]
            launch(f"beat{i}", [*beat, "-s", str(tmp_path / f"beat{i}-schedule")])
        for url in made.urls:
            wait_http(f"{url}/healthz", timeout=60)
        for i in range(workers):
            ready = wait_for(lambda i=i: " ready." in made.log(f"worker{i}"), timeout=60)
            assert ready, made.tail(f"worker{i}")
        yield made
    finally:
        made.stop(*list(made.processes))

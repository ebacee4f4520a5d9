"""A real HTTP server on 127.0.0.1, in a thread: the target of outbound calls in tests (nothing is mocked).

Script its answers with `script(...)`: each request takes the next one (then a default 200). It keeps what it
received, so tests can assert on headers (Idempotency-Key, Host) and bodies.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: Any = field(default_factory=lambda: {"ok": True})  # dict/list: JSON; str/bytes: as is
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # before the headers: a slow server


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up (a timeout, a body over the limit) is what those tests do on purpose.
        pass


class Target:
    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        target = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with target.lock:
                    target.seen.append(Seen(self.command, self.path, dict(self.headers.items()), body))
                    answer = target.answers.pop(0) if target.answers else Answer()
                if answer.delay_s:
                    time.sleep(answer.delay_s)
                if isinstance(answer.body, bytes):
                    payload, kind = answer.body, "application/octet-stream"
                elif isinstance(answer.body, str):
                    payload, kind = answer.body.encode(), "text/plain; charset=utf-8"
                else:
                    payload, kind = json.dumps(answer.body).encode(), "application/json"
                self.send_response(answer.status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    # The client may have stopped reading (a body over the limit, a timeout).
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}{path}"

    def script(self, *answers: Answer) -> None:
        with self.lock:
            self.answers.extend(answers)


@contextmanager
def running_target() -> Iterator[Target]:
    target = Target()
    target.thread.start()
    try:
        yield target
    finally:
        target.server.shutdown()
        target.server.server_close()

"""What the saga tests share: the HTTP service compensations undo things in (a real server on 127.0.0.1),
opening a transaction, recording an HTTP step, and driving a rollback here as the chain of tasks would.
The `target` fixture that starts the server is in tests/conftest.py."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from django.utils import timezone

from core.audit.services import Actor
from recovery.sagas import services as saga_services
from recovery.sagas.models import Transaction
from tests.support import factories


class Target:
    """The service a compensation undoes things in: a real HTTP server on 127.0.0.1.

    It applies each Idempotency-Key's side effect once (as an idempotent API does) and also counts every raw
    receipt, so that a test can tell "sent once" from "sent twice, applied once". It can fail a key's first
    receipts with a status, and hold a key's first receipt until released (the request is then in flight).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.raw: Counter[str] = Counter()
        self.effects: list[str] = []  # keys, in the order their side effect happened
        self.failures: dict[str, tuple[int, int]] = {}  # key -> (how many receipts fail, with which status)
        self.held: dict[str, tuple[threading.Event, threading.Event]] = {}  # key -> (arrived, release)
        self.requests: list[dict[str, Any]] = []
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                target.handle(self)

            do_PUT = do_DELETE = do_POST

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str = "/undo") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def fail(self, key: str, times: int, status: int = 503) -> None:
        self.failures[key] = (times, status)

    def hold(self, key: str) -> threading.Event:
        arrived = threading.Event()
        self.held[key] = (arrived, threading.Event())
        return arrived

    def release(self, key: str) -> None:
        self.held[key][1].set()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        key = request.headers.get("Idempotency-Key", "")
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        with self.lock:
            self.raw[key] += 1
            receipt = self.raw[key]
            self.requests.append({"key": key, "path": request.path, "body": body.decode(), **request.headers})
        if key in self.held and receipt == 1:
            arrived, release = self.held[key]
            arrived.set()
            release.wait(120)
        times, status = self.failures.get(key, (0, 200))
        if receipt <= times:
            self.answer(request, status, {"error": "try again"})
            return
        with self.lock:
            if key not in self.effects:
                self.effects.append(key)
        self.answer(request, 200, {"undone": key})

    @staticmethod
    def answer(request: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        try:
            request.send_response(status)
            request.send_header("Content-Type", "application/json")
            request.send_header("Content-Length", str(len(data)))
            request.end_headers()
            request.wfile.write(data)
        except OSError:
            pass  # the caller is gone (its worker was killed): the side effect happened all the same

    def close(self) -> None:
        for _, release in self.held.values():
            release.set()
        self.server.shutdown()
        self.server.server_close()


def open_txn(agent: Any = None, **fields: Any) -> Transaction:
    agent = agent or factories.AgentFactory()
    deadline = timezone.now() + timedelta(hours=1)
    return saga_services.open_transaction(
        actor=Actor(agent=agent), name=fields.pop("name", "order"), task_id=None, deadline_at=deadline
    )


def http_step(
    txn: Transaction, target: Target, key: str, *, policy: str | None = None, **request: Any
) -> Any:
    compensation = saga_services.validate_compensation(
        {"kind": "http", "request": {"method": "POST", "url": target.url(f"/undo/{key}"), **request}}
    )
    step, _ = saga_services.record_step(
        transaction_id=txn.pk,
        name=f"step {key}",
        idempotency_key=key,
        compensation=compensation,
        policy_name=policy,
    )
    return step


def drive(txn: Transaction, *, max_runs: int = 30) -> list[saga_services.Next]:
    """Run the rollback here as the chain of tasks would, following each hand-off at once."""
    fence = Transaction.objects.get(pk=txn.pk).fence
    handed: list[saga_services.Next] = []
    for _ in range(max_runs):
        following = saga_services.run_rollback(txn.pk, fence)
        if following is None:
            txn.refresh_from_db()
            return handed
        handed.append(following)
        # As the countdown would; the tests' policies wait at most a second or two.
        assert following.countdown <= 2.5, following
        time.sleep(following.countdown)
        fence = following.fence
    raise AssertionError(f"the rollback did not end in {max_runs} runs: {handed}")

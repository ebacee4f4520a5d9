"""The fault-injecting loopback server: one process, every service of the scenario behind it.

    python -m drill.loopback --config <json file>     (scenario, seed, t0, stop_at; prints its port first)

`GET|POST /<fleet>/<service>/<operation>` answers as drill/faults.py says for the call named by the headers
`X-Drill-Task`, `X-Drill-Step` and `X-Drill-Attempt`: 200 with a small JSON body, 503, 429 with Retry-After,
401, late (slow), or no answer at all (down hard: the socket is closed with SO_LINGER 0, so the client sees a
connection reset). Every call is logged in memory as a CallRecord; `GET /_drill/calls` serves the log. It binds
127.0.0.1 only and stops by itself at `stop_at` (epoch seconds), or on SIGTERM. Imports no Django."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from drill import faults
from drill.records import FLEETS, CallRecord
from drill.scenario import Scenario, parse

HOST = "127.0.0.1"


class Drill:
    """The server's state: the scenario, the clock, the holds and the call log (guarded by one lock)."""

    def __init__(self, scenario: Scenario, seed: int, t0: float) -> None:
        self.scenario = scenario
        self.seed = seed
        self.t0 = t0
        self.lock = threading.Lock()
        self.calls: list[CallRecord] = []
        self.holds: dict[tuple[str, str, str], float] = {}  # (fleet, service, task) -> held until (since t0)

    def decide(self, fleet: str, service: str, task: str, step: int, attempt: int) -> faults.Answer | None:
        spec = self.scenario.service(service)
        if spec is None:
            return None
        t_s = time.time() - self.t0
        key = (fleet, service, task)
        with self.lock:
            held = self.holds.get(key)
            answer = faults.answer(
                spec, self.seed, task_id=task, step=step, attempt=attempt, t_s=t_s, held_until_s=held
            )
            if answer.hold_until_s is not None:
                self.holds[key] = answer.hold_until_s
            # The record carries the moment the call came, the same clock for both fleets.
            self.calls.append(
                CallRecord(
                    fleet=fleet,  # type: ignore[arg-type]  # checked by the handler
                    service=service,
                    t_s=round(t_s, 4),
                    ok=answer.ok,
                    status=answer.status,
                    down=answer.down,
                )
            )
        return answer

    def log(self) -> list[dict[str, Any]]:
        with self.lock:
            return [asdict(c) for c in self.calls]


def handler_for(drill: Drill) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one call a connection: a cut never takes another call with it
        server_version = "drill-loopback/1"

        def do_GET(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(min(length, 1 << 20))
            self._handle()

        def _handle(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/_drill/calls":
                return self._json(200, {"calls": drill.log()})
            if path == "/_drill/health":
                return self._json(200, {"status": "ok", "t_s": time.time() - drill.t0})
            parts = path.strip("/").split("/")
            if len(parts) != 3 or parts[0] not in FLEETS:
                return self._json(404, {"detail": "not /<fleet>/<service>/<operation>"})
            fleet, service, operation = parts
            try:
                step = int(self.headers.get("X-Drill-Step") or 0)
                attempt = int(self.headers.get("X-Drill-Attempt") or 1)
            except ValueError:
                return self._json(400, {"detail": "X-Drill-Step and X-Drill-Attempt are whole numbers"})
            task = self.headers.get("X-Drill-Task") or "-"
            answer = drill.decide(fleet, service, task, step, attempt)
            if answer is None:
                return self._json(404, {"detail": f"no service {service!r} in this drill"})
            if answer.status is None:
                return self._cut()
            if answer.delay_s:
                time.sleep(answer.delay_s)
            headers = {}
            if answer.retry_after_s is not None:
                headers["Retry-After"] = f"{answer.retry_after_s:g}"
            body = {"service": service, "operation": operation, "task": task, "step": step, "why": answer.why}
            self._json(answer.status, body, headers)

        def _json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _cut(self) -> None:
            """Close the connection with a reset and no answer: what a dead host's port does."""
            self.close_connection = True
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            except OSError:
                pass

        def finish(self) -> None:
            with contextlib.suppress(OSError, ValueError):  # the socket was cut on purpose
                super().finish()

        def log_message(self, format: str, *args: Any) -> None:  # the base class's name
            pass  # the call log is the record; stderr stays quiet

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-answer is not the drill's concern


def serve(config: dict[str, Any], port: int = 0) -> None:
    scenario = parse(config["scenario"])
    drill = Drill(scenario, int(config["seed"]), float(config["t0"]))
    server = Server((HOST, port), handler_for(drill))
    stop_at = float(config["stop_at"])

    def stop_later() -> None:
        time.sleep(max(0.0, stop_at - time.time()))
        server.shutdown()

    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    threading.Thread(target=stop_later, name="deadline", daemon=True).start()
    print(server.server_address[1], flush=True)  # the runner reads the port from this first line
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drill.loopback", description=__doc__)
    parser.add_argument("--config", required=True, type=Path, help="JSON: scenario, seed, t0, stop_at")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    args = parser.parse_args(argv)
    serve(json.loads(args.config.read_text(encoding="utf-8")), args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The health-check benchmark's loopback target, and its baseline: a plain loop of requests at a fixed rate.

    python -m bench.health_target serve
    python -m bench.health_target loop URL --rate 100 --duration 30 --threads 32

`serve` answers every GET with a small 200 over HTTP/1.1 keep-alive (as the checks' pooled httpx client
expects), counts the requests per path, and prints its port on its first line; `GET /__hits` answers the
counts as JSON, so the benchmark can tell how many probes each check made (a second delivery of a run that
probed again shows there, even when the unique constraint drops its result row).

`loop` is the baseline: no Rebound, no broker, no database. One thread keeps the schedule (request k is due
at start + k / rate) and hands each due request to a pool of `--threads` threads, like a worker's pool; a
request's lateness is the moment its thread starts it minus its due time, the same measure as a health check's
`started_at - due_at`. It prints one JSON object: the lateness of every request in ms, the failures, and its
own CPU seconds.

Both run as processes of their own, so that neither shares a GIL with the benchmark or with the other, and
their CPU is read apart.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

HITS_PATH = "/__hits"
BODY = b"ok\n"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # a burst of new connections must not be refused

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up (a worker stopped mid-probe) is not the target's problem.
        pass


def serve() -> None:
    hits: dict[str, int] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the checks' client keeps its connections
        # The handler writes the headers and the body in two sends: without TCP_NODELAY, Nagle's algorithm holds
        # the body until the client's delayed ACK of the headers, about 40 ms per request on a kept-alive
        # connection. A real server (nginx, gunicorn) answers in one write; so must this one.
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            if self.path == HITS_PATH:
                with lock:
                    payload = json.dumps(hits).encode()
            else:
                with lock:
                    hits[self.path] = hits.get(self.path, 0) + 1
                payload = BODY
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"port {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()


def loop(url: str, rate: float, duration_s: float, threads: int, timeout_s: float) -> dict[str, Any]:
    total = int(rate * duration_s)
    lateness_ms: list[float] = []
    failures: list[str] = []
    failed = [0]
    lock = threading.Lock()
    client = httpx.Client(trust_env=False, timeout=timeout_s)

    def fire(due: float) -> None:
        late = time.monotonic() - due
        try:
            answer = client.get(url)
            ok, why = answer.status_code == 200, f"HTTP {answer.status_code}"
        except httpx.HTTPError as error:
            ok, why = False, f"{type(error).__name__}: {error}"
        with lock:
            lateness_ms.append(late * 1000)
            if not ok:
                failed[0] += 1
                if len(failures) < 20:
                    failures.append(why)

    client.get(url)  # a connection ready, as the worker's pooled client has one after its first probe
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic() + 0.1
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for k in range(total):
            due = start + k / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            pool.submit(fire, due)
    after = resource.getrusage(resource.RUSAGE_SELF)
    client.close()
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "requests": total,
        "lateness_ms": lateness_ms,
        "failures": failures,
        "failed": failed[0],
        "cpu_s": cpu_s,
        "elapsed_s": time.monotonic() - start,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.health_target", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="the loopback target")
    looping = commands.add_parser("loop", help="the baseline: requests at a fixed rate, no Rebound")
    looping.add_argument("url")
    looping.add_argument("--rate", type=float, default=100.0, help="requests per second")
    looping.add_argument("--duration", type=float, default=30.0, help="seconds")
    looping.add_argument("--threads", type=int, default=32, help="the pool that makes the requests")
    looping.add_argument("--timeout", type=float, default=2.0, help="each request's timeout, s")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve()
        return 0
    if not (0 < args.rate <= 10_000 and 0 < args.duration <= 3600 and 0 < args.threads <= 256):
        parser.error("rate, duration or threads out of range")
    print(json.dumps(loop(args.url, args.rate, args.duration, args.threads, args.timeout)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One SDK client of the propagation benchmark, in a process of its own, as an agent would run it.

    python -m bench.sdk_client --url URL --key KEY --index N --prefix bench-prop-

It connects (the snapshot, then the long-poll), prints `READY <index>`, and for every breaker whose name starts
with the prefix that its view sees open prints `FLIP <index> <service> <time.time()> <source> <event id>`: the
moment its view flipped, on this machine's clock (the server's is the same one). It runs until its stdin closes.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from rebound_client import Change, Client


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sdk_client")
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--prefix", default="bench-prop-")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    lock = threading.Lock()

    def on_change(change: Change) -> None:
        if change.new_state == "open" and change.service.startswith(args.prefix):
            line = (
                f"FLIP {args.index} {change.service} {time.time():.6f} {change.source} {change.event_id or 0}"
            )
            with lock:
                print(line, flush=True)

    client = Client(args.url, args.key, on_change=on_change)
    while not client.connected:
        time.sleep(0.1)
    print(f"READY {args.index}", flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    client.close(timeout_s=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

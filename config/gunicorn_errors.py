"""gunicorn's own error answers in the API's JSON envelope.

gunicorn refuses some requests before Django sees them (a request line over `limit_request_line`, a bad header,
an unsupported transfer coding) and answers them with an HTML page of its own. API clients are promised JSON
with the same envelope as every other error, so the function gunicorn writes those answers with is replaced:
`gunicorn.workers.base.Worker.handle_error` looks `util.write_error` up at call time, so every worker uses ours.
"""

from __future__ import annotations

import json
import socket

from gunicorn import util

_CODES = {
    400: "bad_request",
    403: "forbidden",
    431: "headers_too_large",
    500: "server_error",
    501: "not_implemented",
}


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    detail = mesg or reason
    body = json.dumps(
        {
            "detail": detail,
            "code": _CODES.get(status_int, "bad_request"),
            "errors": [{"field": "request", "message": detail}] if status_int < 500 else [],
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin1")
    util.write_nonblock(sock, head + body)


def install() -> None:
    util.write_error = write_json_error

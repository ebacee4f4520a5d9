"""`Idempotency-Key` on a POST: a client that sends its request again (its connection was reset before the
answer came) is counted once and answered with the first answer.

One line in a view (recovery.errors.idempotency.idempotent gives the database store):

    return with_idempotency(request, "errors", lambda: self._record(request), database=DATABASE_STORE)

- No header: the view runs as before (one dictionary look-up on the hot path).
- A key seen for the first time is claimed for the request while it runs, then holds the answer (2xx answers
  only) for IDEMPOTENCY_KEY_TTL_SECONDS. A 4xx or 5xx, or an exception, frees the key: nothing was recorded,
  so the client may send the same key again.
- The same key again with the same request: the first answer, with `Idempotent-Replayed: true`.
- The same key with another request (method, path and JSON body compared): 422 naming the header.
- The same key while the first request is still running: 409, with Retry-After.
- Keys are per caller: an agent's keys (whichever of its API keys sends them), a user's keys; one caller's key
  never answers another's request.

Where: Redis when it is configured, so that keys work while the database is down (the buffered intake rides
that out); the database otherwise (the embedded mode). When Redis cannot be reached, the database is used, so
that the intake's fallback to writing in the request still honours keys; a repeat that arrives after Redis is
back does not see a key stored there meanwhile (docs/intake.md says so). When neither can be reached: 503.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from django.conf import settings
from drf_spectacular.utils import OpenApiParameter
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from core.api.errors import DomainError, InvalidInput, ServiceUnavailable
from core.infra import redisconn
from core.infra.conf import rebound

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
_META = "HTTP_IDEMPOTENCY_KEY"
_VALID = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII, as in the IETF draft's examples and Stripe's keys
# How long a key stays claimed by a request still running: longer than any request may take (gunicorn kills a
# worker after 30 s), so that a live request is never taken over; a request whose worker died frees its key
# after this.
LEASE_SECONDS = 60
RUNNING, DONE = "running", "done"

PARAMETER = OpenApiParameter(
    HEADER,
    str,
    OpenApiParameter.HEADER,
    required=False,
    pattern=r"^[!-~]{1,255}$",
    description=(
        "Optional, 1 to 255 visible ASCII characters, unique per request (a UUID). A repeat with the same key "
        "and the same body within IDEMPOTENCY_KEY_TTL_SECONDS (a day unless configured) is counted once and "
        "answered with the first answer, with the header `Idempotent-Replayed: true`; the same key with another "
        "body is 422, and while the first request runs 409. Keys are per agent (or user)."
    ),
)


def replayed_header(*statuses: int) -> OpenApiParameter:
    """The answer header a replayed answer carries, for a view's `parameters` (its success statuses)."""
    return OpenApiParameter(
        REPLAYED,
        str,
        OpenApiParameter.HEADER,
        enum=["true"],
        response=list(statuses),
        description="`true` when this is the first answer to an earlier request with the same Idempotency-Key.",
    )


# The statuses a keyed request adds to a view's answers (core.api.schemas.answers takes these tuples).
CONFLICT_IN_FLIGHT = (
    409,
    "The `Idempotency-Key` is in use by a request still running: retry after Retry-After.",
)
REUSED_KEY = (422, "The `Idempotency-Key` was used with another request: a new request needs a new key.")


@dataclass(frozen=True)
class Stored:
    """What a store holds under a key: a request still running, or the answer it gave."""

    state: str
    fingerprint: str
    status: int = 0
    body: Any = None


class Store(Protocol):
    def claim(self, key: str, fingerprint: str, token: str) -> Stored | None:
        """Take the key for this request (None), or say what holds it. Raises if the store is unreachable."""

    def finish(self, key: str, token: str, fingerprint: str, status: int, body: Any) -> None:
        """Keep this request's answer under its key for IDEMPOTENCY_KEY_TTL_SECONDS, if the key is still this
        request's (its token)."""

    def release(self, key: str, token: str) -> None:
        """Free the key, if it is still this request's: nothing was recorded."""


class KeyReused(DomainError):
    status_code = 422
    code = "idempotency_key_reused"


def with_idempotency(
    request: Request, scope: str, run: Callable[[], Response], *, database: Store
) -> Response:
    """`run()`'s answer, once per Idempotency-Key (see the module's docstring). `scope` names the operation
    (`errors`, `outcomes`): the same key on two operations is two keys."""
    given = request.META.get(_META)
    if given is None:
        return run()
    if not _VALID.fullmatch(given):
        raise InvalidInput(
            "An Idempotency-Key is 1 to 255 visible ASCII characters (a UUID, say).", field=HEADER
        )
    fingerprint = _fingerprint(
        request
    )  # reads the body: a body that cannot be parsed is a 400 before any claim
    key = f"{scope}:{_caller(request)}:{hashlib.sha256(given.encode()).hexdigest()}"
    token = uuid.uuid4().hex
    store, found = _claim(key, fingerprint, token, database)
    if found is not None:
        return _repeat(found, fingerprint)
    try:
        response = run()
    except BaseException:
        _quietly(store.release, key, token)
        raise
    if 200 <= response.status_code < 300:
        _quietly(store.finish, key, token, fingerprint, response.status_code, response.data)
    else:
        _quietly(store.release, key, token)
    return response


def _claim(key: str, fingerprint: str, token: str, database: Store) -> tuple[Store, Stored | None]:
    if settings.REDIS_URL:
        try:
            return REDIS_STORE, REDIS_STORE.claim(key, fingerprint, token)
        except redis.RedisError as error:
            log.warning("idempotency keys: Redis unreachable, using the database: %s", error)
    try:
        return database, database.claim(key, fingerprint, token)
    except Exception as error:  # any failure of the store: the key cannot be honoured now
        log.warning("idempotency keys: no store can be reached: %s", error)
        raise ServiceUnavailable(
            "Idempotency keys cannot be checked now; send the request again shortly, with the same key.",
            retry_after_s=1,
        ) from error


def _repeat(found: Stored, fingerprint: str) -> Response:
    if found.fingerprint != fingerprint:
        raise KeyReused(
            "This Idempotency-Key was used with another request; a new request needs a new key.", field=HEADER
        )
    if found.state != DONE:
        body = {
            "detail": "A request with this Idempotency-Key is still running; send it again shortly.",
            "code": "idempotency_key_in_flight",
            "errors": [{"field": HEADER, "message": "in use by a request still running"}],
        }
        return Response(body, status=409, headers={"Retry-After": "1"})
    return Response(found.body, status=found.status, headers={REPLAYED: "true"})


def _quietly(step: Callable[..., None], *args: Any) -> None:
    # The request's work is done (or failed) either way: a store that fails now costs a repeat its replay, and
    # a claim left behind lapses after LEASE_SECONDS.
    try:
        step(*args)
    except Exception as error:
        log.warning("idempotency keys: could not %s a key: %s", step.__name__, error)


def _caller(request: Request) -> str:
    """Whose key it is: the agent (whichever of its API keys it sends), else the user."""
    user = request.user
    agent = getattr(user, "agent", None)
    if getattr(user, "is_agent", False) and agent is not None:
        return f"agent-{agent.pk}"
    return f"user-{getattr(user, 'pk', None)}"


def _fingerprint(request: Request) -> str:
    """The request as the key stands for it: method, path and query, and the body's JSON, canonical (so that a
    repeat serialised with other spacing or key order is still the same request)."""
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    text = f"{request.method} {request.get_full_path()}\n{body}"
    return hashlib.sha256(text.encode()).hexdigest()


def as_json(body: Any) -> Any:
    """An answer's data as the JSON it was sent as (DRF's encoder: datetimes, decimals, UUIDs), to keep."""
    return json.loads(json.dumps(body, cls=JSONEncoder))


def ttl_seconds() -> int:
    return int(rebound("IDEMPOTENCY_KEY_TTL_SECONDS"))


# --- Redis -----------------------------------------------------------------------------------------------------

_PREFIX = "rebound:idempotency:"
# The value: the claiming request's token, a line of JSON (state, fingerprint, status), then the answer's JSON,
# compressed (a batch's answer is large and kept for a day).
# KEYS: the key. ARGV: the token, then the new value and its TTL in seconds (finish) or nothing (release).
_IF_MINE = """
local value = redis.call('GET', KEYS[1])
if not value or string.sub(value, 1, 32) ~= ARGV[1] then return 0 end
if ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
else
  redis.call('DEL', KEYS[1])
end
return 1
"""


def _pack(token: str, state: str, fingerprint: str, status: int = 0, body: Any = None) -> bytes:
    head = json.dumps({"s": state, "f": fingerprint, "c": status}).encode()
    tail = zlib.compress(json.dumps(body, cls=JSONEncoder).encode(), 1) if state == DONE else b""
    return token.encode() + b"\n" + head + b"\n" + tail


def _unpack(value: bytes) -> Stored:
    _, head, tail = value.split(b"\n", 2)
    meta = json.loads(head)
    body = json.loads(zlib.decompress(tail)) if meta["s"] == DONE else None
    return Stored(meta["s"], meta["f"], int(meta["c"]), body)


class RedisStore:
    def claim(self, key: str, fingerprint: str, token: str) -> Stored | None:
        client = redisconn.client()
        for _ in range(3):
            if client.set(_PREFIX + key, _pack(token, RUNNING, fingerprint), nx=True, ex=LEASE_SECONDS):
                return None
            value: Any = client.get(_PREFIX + key)
            if value is not None:
                return _unpack(value)
            # It lapsed between the two calls: claim it again.
        raise redis.RedisError("the key kept changing hands")

    def finish(self, key: str, token: str, fingerprint: str, status: int, body: Any) -> None:
        value = _pack(token, DONE, fingerprint, status, body)
        args: list[Any] = [token, value, ttl_seconds()]
        redisconn.client().eval(_IF_MINE, 1, _PREFIX + key, *args)

    def release(self, key: str, token: str) -> None:
        redisconn.client().eval(_IF_MINE, 1, _PREFIX + key, token)


REDIS_STORE = RedisStore()

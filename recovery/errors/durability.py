"""Does the Redis that holds the intake's buffer keep what it is given?

The buffered intake answers 201 once a report is in Redis; "accepted" must mean kept, so the buffer is only as
good as Redis's persistence. With AOF on (`appendonly yes`), Redis writes each command to its append-only file
before it answers: a killed Redis loses nothing, and a crashed machine at most the last fsync interval (a
second with `appendfsync everysec`, docs/intake.md). Without it, a restart loses every report not yet drained.

So each process asks Redis (`CONFIG GET appendonly`; where CONFIG is disabled, as on managed Redis, `INFO
persistence`'s `aof_enabled`) at most every CHECK_SECONDS, and when Redis does not persist and
INTAKE_REQUIRE_DURABLE_REDIS is on (the default), the intake writes reports to the database in the request
instead of buffering them, and says so with a WARNING once per process (and again if it changes). `/readyz`
shows the same through `recovery.errors.intake.readiness()`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from django.conf import settings

from core.infra import redisconn
from core.infra.conf import rebound
from recovery.errors import metrics

log = logging.getLogger(__name__)
CHECK_SECONDS = (
    30.0  # how long a process trusts its last answer: CONFIG SET appendonly takes effect within it
)


@dataclass(frozen=True)
class Persistence:
    """What Redis said of its persistence: `durable` is None when it could not be asked (unreachable)."""

    durable: bool | None
    source: str  # "config", "info" or "unreachable"
    appendfsync: str = ""  # "everysec", "always" or "no"; "" when INFO was all Redis would answer
    error: str = ""
    checked_at: float = field(default=0.0, compare=False)

    def as_detail(self) -> dict[str, Any]:
        detail: dict[str, Any] = {"redis_persists_writes": self.durable, "checked_with": self.source}
        if self.appendfsync:
            detail["appendfsync"] = self.appendfsync
        if self.error:
            detail["error"] = self.error
        return detail


_lock = threading.Lock()
_state: dict[str, Any] = {"last": None, "told": None}


def ask(client: redis.Redis) -> Persistence:
    """Ask Redis whether it persists writes (AOF), now."""
    now = time.monotonic()
    try:
        try:
            appendonly = _config(client, "appendonly")
            if appendonly:
                return Persistence(
                    appendonly == "yes", "config", _config(client, "appendfsync"), checked_at=now
                )
        except redis.ResponseError:
            pass
        # CONFIG disabled, renamed or filtered (managed Redis, a proxy): INFO still tells whether AOF is on.
        info: Any = client.info("persistence")
        return Persistence(str(info.get("aof_enabled")) == "1", "info", checked_at=now)
    except redis.RedisError as error:
        return Persistence(None, "unreachable", error=str(error)[:200], checked_at=now)


def _config(client: redis.Redis, name: str) -> str:
    reply: Any = client.config_get(name)
    value = reply.get(name, reply.get(name.encode(), ""))
    return value.decode() if isinstance(value, bytes) else str(value)


def current() -> Persistence:
    """This process's latest answer, asked again once it is CHECK_SECONDS old."""
    last: Persistence | None = _state["last"]
    if last is not None and time.monotonic() - last.checked_at < CHECK_SECONDS:
        return last
    with _lock:
        last = _state["last"]
        if last is None or time.monotonic() - last.checked_at >= CHECK_SECONDS:
            last = refresh()
    return last


def refresh() -> Persistence:
    """Ask Redis now, and keep the answer for CHECK_SECONDS."""
    if settings.REDIS_URL:
        found = ask(redisconn.client())
    else:  # INTAKE_MODE=buffered without a Redis: nothing to buffer in
        found = Persistence(None, "unreachable", error="REDIS_URL is not set", checked_at=time.monotonic())
    _state["last"] = found
    _tell(found)
    return found


def buffer_allowed() -> bool:
    """May the intake answer from the buffer? Only when Redis persists writes, or when the operator said the
    durability is not required (INTAKE_REQUIRE_DURABLE_REDIS=false). Redis unreachable: no (and the buffer
    could not take the report anyway)."""
    if not rebound("INTAKE_REQUIRE_DURABLE_REDIS"):
        return True
    return current().durable is True


def _tell(found: Persistence) -> None:
    """One WARNING per process when the buffer is not durable, and one again whenever that changes."""
    if found.durable is not None:
        metrics.intake_redis_persists_writes.set(1 if found.durable else 0)
    verdict = (found.durable, bool(rebound("INTAKE_REQUIRE_DURABLE_REDIS")))
    if verdict == _state["told"] or found.durable is None:
        return
    _state["told"] = verdict
    durable, required = verdict
    if durable:
        log.info("intake buffer: Redis persists writes (AOF on, appendfsync %s)", found.appendfsync or "?")
    elif required:
        log.warning(
            "intake buffer: Redis does not persist writes (AOF is off): error reports are written to the "
            "database in the request instead of being buffered, so that an accepted report is never lost "
            "to a Redis restart. Turn AOF on (appendonly yes, appendfsync everysec) to buffer again."
        )
    else:
        log.warning(
            "intake buffer: Redis does not persist writes (AOF is off) and INTAKE_REQUIRE_DURABLE_REDIS is "
            "false: reports accepted in the last moments before a Redis restart will be lost."
        )


def forget() -> None:
    """Drop this process's answer (tests, a new deployment): the next report asks Redis again."""
    _state["last"] = None
    _state["told"] = None

"""Fixtures of the health-check tests: the loopback HTTP target allowed by the outbound guard, breakers kept in
the database, and the runs the services send to Celery, caught (checks: tests/support/health_checks.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import pytest

from healing.checks import services
from recovery.breakers import store as breaker_store
from recovery.breakers.store import DatabaseStore
from tests.support.health_checks import allow
from tests.support.http_target import Target, running_target


@pytest.fixture
def target() -> Iterator[Target]:
    """The loopback HTTP target, allowed by the outbound guard for the whole test."""
    with running_target() as server, allow(server.host, "127.0.0.1"):
        yield server


@pytest.fixture(autouse=True)
def database_store() -> Iterator[None]:
    # Breakers that checks drive keep their state in the database here (the Redis store has its own tests).
    breaker_store.use_store(DatabaseStore())
    yield
    breaker_store.use_store(None)


@dataclass(frozen=True)
class Sent:
    check_id: int
    due_at: datetime
    source: str
    timeout_s: float
    expires: datetime | None
    eta: datetime | None = None


class Sends(list[Sent]):
    """The runs sent to Celery, in order (from any thread)."""

    lock = threading.Lock()

    def for_check(self, check_id: int) -> list[Sent]:
        return [s for s in self if s.check_id == check_id]


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> Sends:
    caught = Sends()

    def send_run(
        check_id: int,
        due_at: datetime,
        source: str,
        timeout_s: float,
        expires: datetime | None = None,
        eta: datetime | None = None,
    ) -> bool:
        with caught.lock:
            caught.append(Sent(check_id, due_at, source, timeout_s, expires, eta))
        return True

    monkeypatch.setattr(services, "send_run", send_run)
    return caught

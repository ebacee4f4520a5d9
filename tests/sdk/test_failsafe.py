"""The SDK's fail-safe: while Rebound is unreachable a local breaker with the fleet's last known settings
decides and outcomes wait in a bounded buffer (the oldest dropped first); when Rebound returns, the view is
loaded again and the buffer is sent. The server here is a real gunicorn, stopped and started on one port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rebound_client import CircuitOpenError, Client, RetriesExhaustedError
from recovery.errors.models import ErrorEvent
from tests.support.sdk_server import (
    Flaky,
    SdkServer,
    agent_key,
    breaker,
    eventually,
    http_error,
    service,
    transitions,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SdkServer]:
    made = SdkServer(tmp_path)
    yield made
    made.stop()


@pytest.fixture
def made() -> Iterator[list[Client]]:
    clients: list[Client] = []
    yield clients
    for client in clients:
        client.close(timeout_s=1)


def _client(server: SdkServer, made: list[Client], key: str, **options: Any) -> Client:
    # No timed flushes: outcomes go when asked (flush()) or when Rebound comes back, so that what the buffer
    # holds at each step is exact.
    client = Client(server.url, key, max_backoff_s=0.5, timeout_s=2, flush_interval_s=3600, **options)
    made.append(client)
    return client


def test_while_rebound_is_away_a_local_breaker_decides_and_outcomes_wait(
    server: SdkServer, made: list[Client]
) -> None:
    service("sdk-away", consecutive_failures=3, wait_duration_s=300)
    key = agent_key()
    server.start()
    client = _client(server, made, key)
    assert client.connected
    with client.guard("sdk-away", operation="fetch"):
        pass
    assert client.flush()
    assert client.stats()["sent"] == 1

    server.stop()
    eventually(lambda: not client.connected, "the client noticed Rebound is gone")
    for _ in range(3):
        with pytest.raises(RuntimeError), client.guard("sdk-away", operation="fetch"):
            raise RuntimeError("connection refused")
    # Three consecutive failures: the fleet's setting, applied by the local breaker.
    with pytest.raises(CircuitOpenError) as refused, client.guard("sdk-away", operation="fetch"):
        pass
    assert refused.value.reason.startswith("local fail-safe breaker")
    assert refused.value.retry_after_s is not None and refused.value.retry_after_s > 250
    assert client.state("sdk-away") == "open"
    assert client.stats()["buffered"] == 3
    assert ErrorEvent.objects.filter(service="sdk-away").count() == 0

    server.start()
    eventually(lambda: client.connected and client.stats()["buffered"] == 0, "reconnected and flushed")
    events = ErrorEvent.objects.filter(service="sdk-away")
    assert [(e.operation, e.message) for e in events] == [("fetch", "connection refused")] * 3
    # The fleet's breaker counted them too, once they arrived: the server tripped, and the view shows it.
    eventually(lambda: client.state("sdk-away") == "open", "the server's trip seen")
    assert transitions("sdk-away") == [("closed", "open")]
    assert breaker(server.url, key, "sdk-away")["state"] == "open"
    assert client.stats()["dropped"] == 0


def test_the_buffer_keeps_the_newest_outcomes_and_counts_those_it_dropped(
    server: SdkServer, made: list[Client]
) -> None:
    key = agent_key()
    client = _client(server, made, key, buffer_size=5)  # the server is not running yet
    assert not client.connected
    for n in range(8):
        # 404s: the caller's own mistakes do not count toward the breaker, so none is refused, and each is an
        # error row once it arrives, named by its operation.
        with pytest.raises(Exception, match="not found"), client.guard("sdk-buffer", operation=f"op-{n}"):
            raise http_error(404, message="not found")
    assert client.stats()["buffered"] == 5
    assert client.stats()["dropped"] == 3

    server.start()
    eventually(lambda: client.connected and client.stats()["buffered"] == 0, "reconnected and flushed")
    operations = sorted(ErrorEvent.objects.filter(service="sdk-buffer").values_list("operation", flat=True))
    assert operations == ["op-3", "op-4", "op-5", "op-6", "op-7"]
    assert client.stats()["sent"] == 5


def test_without_the_planner_with_retry_backs_off_locally(server: SdkServer, made: list[Client]) -> None:
    client = _client(server, made, agent_key(), test_mode=True)  # nothing listens on the port
    flaky = Flaky(ConnectionError("reset"), ConnectionError("reset"), value="done")

    @client.with_retry("sdk-offline", operation="sync", max_attempts=3, base_delay_s=1.0)
    def sync() -> str:
        return str(flaky())

    assert sync() == "done"
    assert flaky.calls == 3
    first, second = client.recorded_delays
    assert 0.5 <= first <= 1.0 and 1.0 <= second <= 2.0

    always = Flaky(*(ConnectionError("reset") for _ in range(5)))
    with pytest.raises(RetriesExhaustedError) as exhausted:
        client.call("sdk-offline", always, max_attempts=2)
    assert exhausted.value.attempts == 2
    assert exhausted.value.plan is None
    assert isinstance(exhausted.value.__cause__, ConnectionError)

"""The synchronous SDK against a real production gunicorn, PostgreSQL and Redis: the guard decides from the live
view of the fleet's breakers, outcomes reach the server in background batches, trips and overrides made
elsewhere are seen and refused locally, half-open calls use the server's trial permits."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from rebound_client import Change, CircuitOpenError, Client
from recovery.breakers.models import BreakerTransition
from recovery.errors.models import ErrorEvent
from tests.support.sdk_server import (
    Recording,
    SdkServer,
    agent_key,
    breaker,
    eventually,
    http_error,
    operator_key,
    override,
    service,
    transitions,
)
from tests.support.sdk_server import clients as clients
from tests.support.sdk_server import server as server

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]


def test_it_serves_a_snapshot_with_the_id_of_the_last_transition(agent_client: APIClient) -> None:
    service("snap-svc")
    for _ in range(3):
        answer = agent_client.post(
            "/api/v1/outcomes", {"service": "snap-svc", "success": False}, format="json"
        )
        assert answer.status_code == 200, answer.content
    snapshot = agent_client.get("/api/v1/breakers/snapshot").json()
    last = BreakerTransition.objects.latest("id")
    assert snapshot["last_event_id"] == last.pk
    assert snapshot["server_time"]
    [view] = [b for b in snapshot["breakers"] if b["service"] == "snap-svc"]
    assert view["state"] == "open"
    assert view["open_until"]
    assert view["settings"]["consecutive_failures"] == 3
    assert APIClient().get("/api/v1/breakers/snapshot").status_code == 401


def _guard_seven_calls(server: SdkServer, clients: Callable[..., Client]) -> tuple[str, Recording, Client]:
    """Five guarded calls, one decorated call and one failing with a 503, until the server counted all seven."""
    service("sdk-record", consecutive_failures=0, minimum_calls=100, window_size=100)
    key = agent_key()
    transport = Recording()
    client = clients(key, transport=transport)
    assert client.connected
    for _ in range(5):
        with client.guard("sdk-record", operation="search"):
            pass

    @client.with_circuit_breaker("sdk-record", "search")
    def search(query: str) -> str:
        return query.upper()

    assert search("rebound") == "REBOUND"
    with pytest.raises(Exception, match="upstream down"), client.guard("sdk-record", operation="search"):
        raise http_error(503, message="upstream down")

    eventually(lambda: breaker(server.url, key, "sdk-record")["window"]["calls"] == 7, "7 outcomes counted")
    return key, transport, client


@pytest.mark.slow
def test_it_guards_calls_locally_and_reports_their_outcomes(
    server: SdkServer, clients: Callable[..., Client]
) -> None:
    key, _, _ = _guard_seven_calls(server, clients)
    view = breaker(server.url, key, "sdk-record")
    assert view["state"] == "closed"
    assert view["window"]["failures"] == 1


@pytest.mark.slow
def test_it_reports_a_guarded_failure_as_a_classified_error(
    server: SdkServer, clients: Callable[..., Client]
) -> None:
    _guard_seven_calls(server, clients)
    event = ErrorEvent.objects.get(service="sdk-record")
    assert (event.operation, event.status_code, event.type_name) == ("search", 503, "httpx.HTTPStatusError")
    assert event.message == "upstream down"
    assert event.error_class == "external_service"


@pytest.mark.slow
def test_it_decides_locally_and_sends_outcomes_in_batches(
    server: SdkServer, clients: Callable[..., Client]
) -> None:
    _, transport, client = _guard_seven_calls(server, clients)
    # Every decision was local: no permit was asked for, and the outcomes went in batches.
    assert transport.count("POST", "/permit") == 0
    assert 1 <= transport.count("POST", "/api/v1/outcomes") <= 3
    eventually(lambda: client.stats()["sent"] == 7, "the client counted them sent")
    assert client.stats()["dropped"] == 0


@pytest.mark.slow
def test_a_trip_by_one_client_is_seen_by_another_which_refuses_locally(
    server: SdkServer, clients: Callable[..., Client]
) -> None:
    service("sdk-trip", wait_duration_s=300)
    seen: list[Change] = []
    tripping = clients(agent_key())
    transport = Recording()
    watching = clients(agent_key(), transport=transport, on_change=seen.append)
    assert watching.state("sdk-trip") == "closed"
    for _ in range(3):
        with pytest.raises(RuntimeError), tripping.guard("sdk-trip", operation="run"):
            raise RuntimeError("connection reset by peer")

    eventually(lambda: watching.state("sdk-trip") == "open", "the other client's view flipped")
    assert transitions("sdk-trip") == [("closed", "open")]
    flipped = [c for c in seen if c.service == "sdk-trip" and c.new_state == "open"]
    assert flipped[0].source == "event"
    assert flipped[0].event_id == BreakerTransition.objects.get(service__name="sdk-trip").pk
    requests_before = len(transport.requests)
    ran = []
    with pytest.raises(CircuitOpenError) as refused, watching.guard("sdk-trip", operation="run"):
        ran.append(1)
    assert ran == []
    assert refused.value.service == "sdk-trip"
    assert refused.value.state == "open"
    assert refused.value.retry_after_s is not None and 0 < refused.value.retry_after_s <= 300
    assert transport.count("POST", "/permit") == 0
    # A refused call is not an outcome: nothing was queued for it.
    assert watching.stats()["buffered"] == 0
    assert all(path != "/api/v1/breakers/sdk-trip/permit" for _, path in transport.requests[requests_before:])


@pytest.mark.slow
def test_an_operator_forcing_a_breaker_open_is_respected_then_released(
    server: SdkServer, clients: Callable[..., Client]
) -> None:
    service("sdk-forced")
    client = clients(agent_key())
    operator = operator_key()
    override(server.url, operator, "sdk-forced", "forced_open")
    eventually(lambda: client.state("sdk-forced") == "forced_open", "the override seen")
    with pytest.raises(CircuitOpenError) as refused, client.guard("sdk-forced"):
        pass
    assert refused.value.state == "forced_open"
    assert refused.value.retry_after_s is None  # no end was set

    override(server.url, operator, "sdk-forced", "auto")
    eventually(lambda: client.state("sdk-forced") == "closed", "back to automatic")
    with client.guard("sdk-forced"):
        pass
    assert transitions("sdk-forced") == [("closed", "forced_open"), ("forced_open", "closed")]


@pytest.mark.slow
def test_half_open_calls_use_the_servers_trial_permits(
    server: SdkServer, clients: Callable[..., Client]
) -> None:
    service("sdk-half", wait_duration_s=1, consecutive_failures=2, half_open_max_calls=1, success_threshold=1)
    key = agent_key()
    transport = Recording()
    client = clients(key, transport=transport)
    for _ in range(2):
        with pytest.raises(RuntimeError), client.guard("sdk-half"):
            raise RuntimeError("timed out")
    eventually(lambda: client.state("sdk-half") == "half_open", "the wait over, in the client's view")
    # The client converts the server's times to its own clock, to within a few milliseconds: wait for the
    # server's own word too, so that the trial is not refused for being a hair early.
    eventually(lambda: breaker(server.url, key, "sdk-half")["state"] == "half_open", "the wait over")

    with client.guard("sdk-half") as trial:
        # The fleet allows one trial at a time: a second caller is refused by the server, not let through.
        with pytest.raises(CircuitOpenError) as refused, client.guard("sdk-half"):
            pass
        assert refused.value.state == "half_open"
    assert trial.permit_id  # the trial's permit id went back with its outcome
    assert transport.count("POST", "/api/v1/breakers/sdk-half/permit") == 2
    eventually(lambda: client.state("sdk-half") == "closed", "the trial's success closed it")
    assert transitions("sdk-half") == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert breaker(server.url, key, "sdk-half")["window"]["trial_permits_in_use"] == 0

"""errors_stored: sent once error events are committed, from both write paths, with what was inserted."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import transaction
from django.test import override_settings

from recovery.errors import intake
from recovery.errors import services as error_services
from recovery.errors.classification import ErrorReport
from recovery.errors.models import ErrorEvent, ErrorPattern
from recovery.errors.signals import Sighting, errors_stored
from recovery.errors.tasks import drain_error_intake
from tests.support.factories import rebound_settings

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
BUFFERED = rebound_settings(INTAKE_MODE="buffered")
TIMEOUT = {
    "service": "search",
    "operation": "query",
    "type": "TimeoutError",
    "message": "timed out after 3 s",
}
DENIED = {"service": "search", "operation": "query", "status_code": 403, "message": "forbidden"}


class Heard:
    """What the receiver was sent, and how many events were in the database when it was."""

    def __init__(self) -> None:
        self.calls: list[list[Sighting]] = []
        self.events_seen: list[int] = []

    def __call__(self, sender: object, *, sightings: list[Sighting], **_: Any) -> None:
        self.calls.append(sightings)
        self.events_seen.append(ErrorEvent.objects.count())


@pytest.fixture
def heard() -> Iterator[Heard]:
    receiver = Heard()
    errors_stored.connect(receiver, dispatch_uid="test-errors-stored", weak=False)
    yield receiver
    errors_stored.disconnect(dispatch_uid="test-errors-stored")


def by_fingerprint(sightings: list[Sighting]) -> dict[str, Sighting]:
    return {s.fingerprint: s for s in sightings}


@pytest.mark.django_db
def test_it_sends_one_sighting_per_pattern_once_the_request_commits(
    agent_client: Any, heard: Heard, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = agent_client.post("/api/v1/errors", [TIMEOUT, TIMEOUT, DENIED, TIMEOUT], format="json")
        assert response.status_code == 201
        assert heard.calls == []  # not before the commit
    assert len(heard.calls) == 1
    sightings = by_fingerprint(heard.calls[0])
    timeout = ErrorPattern.objects.get(error_class="transient")
    denied = ErrorPattern.objects.get(error_class="authentication")
    assert sightings[timeout.fingerprint] == Sighting(
        pattern_id=timeout.pk,
        fingerprint=timeout.fingerprint,
        service="search",
        operation="query",
        error_class="transient",
        severity="medium",
        kind="connection_timeout",
        count=3,
        message="timed out after 3 s",
        total=3,
    )
    assert (sightings[denied.fingerprint].count, sightings[denied.fingerprint].kind) == (
        1,
        "permission_denied",
    )


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_it_sends_at_once_with_the_events_committed(heard: Heard) -> None:
    error_services.record_errors([ErrorReport(service="search", type_name="TimeoutError")] * 2, agent=None)
    assert [len(call) for call in heard.calls] == [1]
    assert heard.calls[0][0].count == 2
    assert heard.events_seen == [2]


@pytest.mark.django_db
def test_a_rolled_back_write_sends_nothing(heard: Heard, django_capture_on_commit_callbacks: Any) -> None:
    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        error_services.record_errors([ErrorReport(service="search", type_name="TimeoutError")], agent=None)
        raise RuntimeError("the caller failed after the write")
    assert heard.calls == []


@override_settings(REBOUND=BUFFERED)
@pytest.mark.django_db(transaction=True)
def test_buffered_it_sends_nothing_in_the_request_and_the_counts_inserted_from_the_drain(
    agent_client: Any, heard: Heard
) -> None:
    agent_client.post("/api/v1/errors", [TIMEOUT, TIMEOUT], format="json")
    agent_client.post("/api/v1/errors", [TIMEOUT, DENIED], format="json")
    assert heard.calls == []
    assert drain_error_intake() == 4  # the task the worker runs
    assert len(heard.calls) == 1
    sightings = by_fingerprint(heard.calls[0])
    timeout = ErrorPattern.objects.get(error_class="transient")
    assert sightings[timeout.fingerprint].pattern_id == timeout.pk
    assert sightings[timeout.fingerprint].count == 3
    assert sorted(s.count for s in sightings.values()) == [1, 3]
    assert sightings[timeout.fingerprint].total == 3
    assert heard.events_seen == [4]


@override_settings(REBOUND=BUFFERED)
@pytest.mark.django_db(transaction=True)
def test_a_redelivered_batch_inserts_nothing_and_sends_nothing(heard: Heard) -> None:
    error_services.record_errors([ErrorReport(service="search", type_name="TimeoutError")] * 2, agent=None)
    client = redis.Redis.from_url(settings.TEST_REDIS_URL)
    intake._ensure_group(client)
    entries: Any = client.xreadgroup(intake.GROUP, "dead-worker", {intake.STREAM: ">"}, count=10)
    batch = entries[0][1]
    # A worker wrote the batch and died before acknowledging it (nor sending): the next one writes it again.
    with transaction.atomic():
        assert intake._write(intake.parse_entries(batch)) == 2
    assert intake.write_entries(client, batch) == 0
    assert heard.calls == []

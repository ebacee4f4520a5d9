"""The long-poll's fan-out (recovery/breakers/waits.py): one subscription per process reads the table once per
announcement and wakes every waiting poll, which answers without a query of its own; the table stays the truth
for a cursor behind, a lost message and a foreign one."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.infra import redisconn
from recovery.breakers import services as breaker_services
from recovery.breakers import waits
from recovery.breakers.models import BreakerTransition, Service

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

FAIL_503 = {"service": "svc", "success": False, "error": {"status_code": 503}}


@pytest.fixture
def fan() -> Iterator[waits.Fanout]:
    """This process's subscription, confirmed by Redis before the test goes on."""
    from django.conf import settings

    if not settings.REDIS_URL:
        pytest.skip("needs Redis")
    found = waits.fanout()
    assert found is not None
    deadline = time.monotonic() + 10
    while not found.mark().live:
        assert time.monotonic() < deadline, "the subscription was not confirmed within 10 s"
        time.sleep(0.02)
    yield found
    waits.forget()


class Poll:
    """A long-poll in a thread of its own, as gunicorn runs it, counting the queries that thread makes."""

    def __init__(self, after: int, wait_s: float) -> None:
        self.answer: dict[str, Any] | None = None
        self.queries = -1
        self.connection: Any = None
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(after, wait_s), daemon=True)
        self.thread.start()
        self.started.wait(5)

    def _run(self, after: int, wait_s: float) -> None:
        self.connection = connections["default"]
        try:
            with CaptureQueriesContext(self.connection) as captured:
                self.started.set()
                self.answer = waits.events(after, wait_s)
            self.queries = len(captured.captured_queries)
        finally:
            self.connection.close()

    def result(self, timeout: float = 10) -> dict[str, Any]:
        self.thread.join(timeout)
        assert self.answer is not None, "the long-poll did not answer"
        return self.answer


@pytest.fixture
def trip(agent_client: Any) -> Callable[..., BreakerTransition]:
    """Trip a breaker through the API, committed and announced as in production; its transition."""

    def tripped(name: str = "svc") -> BreakerTransition:
        Service.objects.get_or_create(
            name=name, defaults={"minimum_calls": 4, "window_size": 10, "consecutive_failures": 0}
        )
        answer = agent_client.post("/api/v1/outcomes", [{**FAIL_503, "service": name}] * 4, format="json")
        assert answer.status_code == 200, answer.json()
        return BreakerTransition.objects.filter(service__name=name).latest("id")

    return tripped


def written(service: Service) -> BreakerTransition:
    """A transition row committed without being announced (as if its publish had failed)."""
    return BreakerTransition.objects.create(
        service=service, from_state="closed", to_state="open", reason="x", created_at=timezone.now()
    )


def eventually(check: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.02)


def test_it_answers_a_woken_poll_without_a_query_of_its_own(fan: waits.Fanout, trip: Any) -> None:
    after = fan.mark().newest or 0
    poll = Poll(after, wait_s=10)
    time.sleep(0.2)  # the poll is waiting
    row = trip()
    answer = poll.result()
    assert [e["id"] for e in answer["events"]] == [row.pk]
    assert answer["events"][0]["to_state"] == "open" and answer["events"][0]["service"] == "svc"
    assert answer["last_id"] == row.pk
    assert poll.queries == 0  # the subscriber read the table once for every waiter of the process


def test_it_answers_exactly_what_the_table_holds(fan: waits.Fanout, trip: Any) -> None:
    after = fan.mark().newest or 0
    poll = Poll(after, wait_s=10)
    time.sleep(0.2)
    trip()
    woken = poll.result()
    assert woken == waits.events(after, 0)  # the table's answer, read afterwards


def test_it_reads_the_table_for_a_cursor_behind_what_the_process_heard(trip: Any) -> None:
    before = written(Service.objects.create(name="before"))  # committed before this process subscribed
    fan = waits.fanout()
    assert fan is not None
    eventually(lambda: fan.mark().live)
    later = trip()
    eventually(lambda: (fan.mark().newest or 0) >= later.pk)
    poll = Poll(before.pk - 1, wait_s=10)
    answer = poll.result()
    assert [e["id"] for e in answer["events"]] == [before.pk, later.pk]
    assert poll.queries > 0


def test_it_answers_a_cursor_within_what_the_process_read_without_a_query(
    fan: waits.Fanout, trip: Any
) -> None:
    first, second = trip("svc"), trip("other")
    eventually(lambda: (fan.mark().newest or 0) >= second.pk)
    poll = Poll(first.pk - 1, wait_s=10)
    answer = poll.result()
    assert [e["id"] for e in answer["events"]] == [first.pk, second.pk]
    assert poll.queries == 0


def test_it_finds_a_transition_whose_message_was_lost_by_the_end_of_the_wait(fan: waits.Fanout) -> None:
    after = fan.mark().newest or 0
    service = Service.objects.create(name="quiet")
    # Written and committed, never announced: as if the publish had failed.
    row = written(service)
    # Found by the read at the end of the wait (or earlier, if another announcement has the subscriber read).
    answer = waits.events(after, 0.5)
    assert [e["id"] for e in answer["events"]] == [row.pk]


def test_it_never_answers_with_a_foreign_message(fan: waits.Fanout) -> None:
    after = fan.mark().newest or 0
    poll = Poll(after, wait_s=1.0)
    time.sleep(0.2)
    # Another Rebound on the same Redis server (pub/sub channels are not per database) announces its own id.
    foreign = {"id": after + 1, "service": "not-ours", "from_state": "closed", "to_state": "open"}
    redisconn.client().publish(breaker_services.CHANNEL, json.dumps(foreign))
    assert poll.result()["events"] == []
    assert not BreakerTransition.objects.filter(pk=after + 1).exists()


def test_it_gives_the_database_connection_back_while_it_waits(fan: waits.Fanout) -> None:
    poll = Poll(0, wait_s=1.5)  # reads the table first (a cursor behind), then waits
    eventually(lambda: poll.connection is not None)
    time.sleep(0.5)
    assert poll.connection.connection is None
    poll.result()


def test_it_reads_the_table_again_after_the_subscription_is_taken_anew(fan: waits.Fanout) -> None:
    after = fan.mark().newest or 0
    poll = Poll(after, wait_s=10)
    time.sleep(0.2)
    service = Service.objects.create(name="while-away")
    row = written(service)
    fan._set_live(None)  # the subscription lost: what was published meanwhile was not heard
    answer = poll.result()
    assert [e["id"] for e in answer["events"]] == [row.pk]


def test_it_waits_on_the_table_without_redis(settings: Any) -> None:
    settings.REDIS_URL = ""
    assert waits.fanout() is None
    service = Service.objects.create(name="embedded")

    def write() -> None:
        try:
            written(service)
        finally:
            connection.close()

    timer = threading.Timer(0.3, write)
    timer.start()
    answer = waits.events(0, 5)
    timer.join()
    assert [e["service"] for e in answer["events"]] == ["embedded"]

"""Issue 17: the drain writes batches with COPY and counts patterns in one statement. What it must keep: several
drains at once write every entry once, a batch partly written before is completed without a double, a deleted
agent's reports are kept, and the answers' counts move from pending to written."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection, transaction
from django.test import override_settings

from recovery.errors import intake
from recovery.errors import services as error_services
from recovery.errors.classification import ErrorReport
from recovery.errors.models import ErrorEvent, ErrorPattern
from tests.support.factories import AgentFactory, rebound_settings

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]
BUFFERED = rebound_settings(INTAKE_MODE="buffered")
REPORTS = [ErrorReport(service=f"svc-{i % 5}", status_code=503, context={"n": i}) for i in range(20)]


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.TEST_REDIS_URL)


def _take(consumer: str, count: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
    client = _client()
    intake._ensure_group(client)
    entries: Any = client.xreadgroup(intake.GROUP, consumer, {intake.STREAM: ">"}, count=count)
    return entries[0][1]


@override_settings(REBOUND=BUFFERED)
def test_it_writes_every_entry_once_with_several_drains_at_once() -> None:
    for _ in range(40):
        error_services.record_errors(REPORTS, agent=None)
    written: list[int] = []
    failures: list[BaseException] = []
    barrier = threading.Barrier(3)

    def drain() -> None:
        try:
            barrier.wait()
            written.append(intake.drain(budget_s=60))
        except BaseException as error:  # asserted on below
            failures.append(error)
        finally:
            connection.close()

    original = intake.BATCH_ENTRIES
    intake.BATCH_ENTRIES = 3  # many small batches, so that the drains interleave
    try:
        threads = [threading.Thread(target=drain) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        intake.BATCH_ENTRIES = original
    assert failures == []
    assert sum(written) == 800
    assert ErrorEvent.objects.count() == 800
    assert sorted(ErrorPattern.objects.values_list("total_count", flat=True)) == [160] * 5
    assert _client().hlen(intake.PENDING) == 0
    assert _client().xlen(intake.STREAM) == 0


@override_settings(REBOUND=BUFFERED)
def test_it_completes_a_batch_partly_written_before_without_a_double() -> None:
    for _ in range(3):
        error_services.record_errors(REPORTS, agent=None)
    entries = _take("dead-worker", 3)
    # A writer wrote the first entry and died before acknowledging it; the batch comes back whole.
    with transaction.atomic():
        assert intake._write(intake.parse_entries(entries[:1])) == 20
    assert intake.write_entries(_client(), entries) == 40
    assert ErrorEvent.objects.count() == 60
    assert sum(ErrorPattern.objects.values_list("total_count", flat=True)) == 60
    assert _client().hlen(intake.PENDING) == 0


@override_settings(REBOUND=BUFFERED)
def test_it_keeps_the_reports_of_a_deleted_agent_beside_the_others_in_a_batch() -> None:
    gone, kept = AgentFactory(), AgentFactory()
    error_services.record_errors(REPORTS[:5], agent=gone)
    error_services.record_errors(REPORTS[5:10], agent=kept)
    gone.delete()
    assert intake.drain() == 10
    assert ErrorEvent.objects.filter(agent=None).count() == 5
    assert ErrorEvent.objects.filter(agent=kept).count() == 5
    assert _client().xlen(intake.DEAD) == 0


@override_settings(REBOUND=BUFFERED)
def test_it_answers_the_written_totals_once_the_drain_counted_them() -> None:
    error_services.record_errors(REPORTS, agent=None)
    assert intake.drain() == 20
    pattern = ErrorPattern.objects.get(service="svc-0")
    assert pattern.total_count == 4
    later = error_services.record_errors([REPORTS[0]], agent=None)[0]
    assert (later.pattern_id, later.pattern_total) == (pattern.pk, 5)


@override_settings(REBOUND=BUFFERED)
def test_it_stores_each_event_as_reported() -> None:
    agent = AgentFactory()
    report = ErrorReport(
        service="svc",
        operation="op",
        type_name="RateLimitError",
        message="slow down\ttab\nline \\ back",
        status_code=429,
        retry_after_s=2.5,
        context={"nested": {"a": [1, 2.5, None, True]}, "text": 'quote " here'},
    )
    error_services.record_errors([report], agent=agent)
    assert intake.drain() == 1
    event = ErrorEvent.objects.get()
    assert (event.agent_id, event.service, event.operation, event.type_name) == (
        agent.pk,
        "svc",
        "op",
        "RateLimitError",
    )
    assert event.message == "slow down\ttab\nline \\ back"
    assert (event.status_code, event.retry_after_s) == (429, 2.5)
    assert event.context == {"nested": {"a": [1, 2.5, None, True]}, "text": 'quote " here'}
    assert event.intake_key is not None and event.intake_key.endswith(":0")

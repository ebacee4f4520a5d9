"""The buffered intake against the real Redis and PostgreSQL, drained by a real Celery worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.test import override_settings

from recovery.errors import intake
from recovery.errors import services as error_services
from recovery.errors.classification import ErrorReport
from recovery.errors.models import ErrorEvent, ErrorPattern
from tests.support.factories import rebound_settings
from tests.support.processes import PYTHON, process_env, start, stop, wait_for

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]
BUFFERED = rebound_settings(INTAKE_MODE="buffered")
TIMEOUT = ErrorReport(service="svc", type_name="TimeoutError", message="timed out after 3 s")


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.TEST_REDIS_URL)


@override_settings(REBOUND=BUFFERED)
def test_it_answers_from_the_buffer_without_writing_in_the_request() -> None:
    first = error_services.record_errors([TIMEOUT, TIMEOUT], agent=None)
    assert [(r.pattern_id, r.pattern_total) for r in first] == [(None, 2), (None, 2)]
    assert first[0].classified.verdict.error_class == "transient"
    assert ErrorEvent.objects.count() == 0
    assert _client().xlen(intake.STREAM) == 1


@override_settings(REBOUND=BUFFERED)
def test_the_drain_writes_everything_once_and_keeps_counting() -> None:
    error_services.record_errors([TIMEOUT, TIMEOUT], agent=None)
    error_services.record_errors([TIMEOUT, ErrorReport(service="svc", status_code=503)], agent=None)
    assert intake.drain() == 4
    pattern = ErrorPattern.objects.get(error_class="transient")
    assert pattern.total_count == 3
    assert ErrorEvent.objects.filter(pattern=pattern).count() == 3
    assert ErrorEvent.objects.exclude(intake_key=None).count() == 4
    assert _client().xlen(intake.STREAM) == 0
    later = error_services.record_errors([TIMEOUT], agent=None)[0]
    assert (later.pattern_id, later.pattern_total) == (pattern.pk, 4)


@override_settings(REBOUND=BUFFERED)
def test_a_redelivered_batch_is_written_once() -> None:
    error_services.record_errors([TIMEOUT, TIMEOUT], agent=None)
    client = _client()
    intake._ensure_group(client)
    entries: Any = client.xreadgroup(intake.GROUP, "dead-worker", {intake.STREAM: ">"}, count=10)
    batch = entries[0][1]
    # A worker wrote the batch and died before acknowledging it: the next worker writes it again.
    from django.db import transaction

    with transaction.atomic():
        assert intake._write(intake.parse_entries(batch)) == 2
    assert intake.write_entries(client, batch) == 0
    assert ErrorPattern.objects.get().total_count == 2
    assert ErrorEvent.objects.count() == 2


@pytest.mark.slow
@override_settings(REBOUND=BUFFERED)
def test_it_writes_in_the_request_when_redis_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.infra import redisconn

    dead = redisconn.Scripts(redis.Redis(port=1, socket_connect_timeout=0.2))
    monkeypatch.setattr(redisconn, "scripts", lambda: dead)
    recorded = error_services.record_errors([TIMEOUT], agent=None)[0]
    assert recorded.pattern_id == ErrorPattern.objects.get().pk
    assert ErrorEvent.objects.count() == 1


@pytest.mark.slow
def test_a_real_worker_drains_reports_posted_to_the_api(tmp_path: Path, agent_client: Any) -> None:
    env = process_env(tmp_path, INTAKE_MODE="buffered")
    worker = start(
        [PYTHON, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "-l", "INFO"],
        env,
        tmp_path / "worker.log",
    )
    try:
        with override_settings(REBOUND=BUFFERED):
            for _ in range(3):
                response = agent_client.post(
                    "/api/v1/errors", [{"service": "svc", "status_code": 503}] * 5, format="json"
                )
                assert response.status_code == 201
            assert response.json()["results"][0]["pattern"]["total_count"] >= 15
        assert wait_for(lambda: ErrorEvent.objects.count() == 15, timeout=30), (
            tmp_path / "worker.log"
        ).read_text()[-3000:]
        assert ErrorPattern.objects.get().total_count == 15
    finally:
        stop(worker)


@override_settings(REBOUND=BUFFERED)
def test_reports_of_an_agent_deleted_meanwhile_are_kept_without_it() -> None:
    from tests.support.factories import AgentFactory

    agent = AgentFactory()
    error_services.record_errors([TIMEOUT], agent=agent)
    agent.delete()
    assert intake.drain() == 1
    assert ErrorEvent.objects.get().agent is None


@override_settings(REBOUND=BUFFERED)
def test_an_entry_that_cannot_be_written_is_set_aside_and_the_rest_goes_on() -> None:
    error_services.record_errors([TIMEOUT], agent=None)
    _client().xadd(intake.STREAM, {"v": b"{not json"})
    error_services.record_errors([TIMEOUT], agent=None)
    assert intake.drain() == 2
    assert ErrorPattern.objects.get().total_count == 2
    dead = _client().xrange(intake.DEAD)
    assert len(dead) == 1 and dead[0][1][b"v"] == b"{not json"
    assert _client().xlen(intake.STREAM) == 0


@override_settings(REBOUND=BUFFERED)
def test_a_trip_explains_itself_with_errors_still_queued() -> None:
    from core.audit.services import Actor
    from recovery.breakers import services as breaker_services
    from recovery.breakers import store as breaker_store
    from recovery.breakers.models import BreakerTransition, Service
    from recovery.breakers.store import RedisStore

    breaker_store.use_store(RedisStore(_client()))
    Service.objects.create(name="svc", minimum_calls=3, consecutive_failures=0)
    failure = breaker_services.OutcomeReport(
        "svc", "", False, None, ErrorReport(service="svc", status_code=503), ""
    )
    answers = breaker_services.record_outcomes([failure] * 3, actor=Actor())
    assert answers[-1]["state"] == "open"
    assert ErrorEvent.objects.count() == 0  # still queued
    window = BreakerTransition.objects.get().window
    assert window["patterns"] == [
        {
            "pattern": None,
            "error_class": "external_service",
            "type_name": "",
            "message_template": "",
            "count": 3,
        }
    ]
    breaker_store.use_store(None)

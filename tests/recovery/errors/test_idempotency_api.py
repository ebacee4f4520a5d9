"""Issue 11, item 27: `POST /api/v1/errors` with an `Idempotency-Key`: a client that retries after a connection
reset is counted once, in each intake (buffered with Redis, synchronous without it)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.test import override_settings

from recovery.errors import intake
from recovery.errors import services as error_services
from recovery.errors.models import ErrorEvent, ErrorPattern, IdempotencyRecord
from tests.support.factories import rebound_settings

ERROR = {"service": "svc", "type": "TimeoutError", "message": "timed out"}
BATCH = {"errors": [ERROR, {"service": "svc", "status_code": 503}], "successes": 3}


def _post(client: Any, body: Any, key: str | None = "retry-me") -> Any:
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post("/api/v1/errors", body, format="json", **headers)


@pytest.mark.django_db
def test_a_retried_report_is_counted_once_in_the_embedded_mode(agent_client: Any) -> None:
    with override_settings(REDIS_URL=""):
        first = _post(agent_client, ERROR)
        again = _post(agent_client, ERROR)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert ErrorPattern.objects.get().total_count == 1
    assert ErrorEvent.objects.count() == 1
    assert IdempotencyRecord.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
@override_settings(REBOUND=rebound_settings(INTAKE_MODE="buffered"))
def test_a_retried_batch_is_counted_once_in_the_buffered_intake(agent_client: Any) -> None:
    first = _post(agent_client, BATCH)
    again = _post(agent_client, BATCH)
    assert again.json() == first.json() and again["Idempotent-Replayed"] == "true"
    assert redis.Redis.from_url(settings.TEST_REDIS_URL).xlen(intake.STREAM) == 1
    assert IdempotencyRecord.objects.count() == 0  # kept in Redis: works while the database is down
    assert intake.drain() == 2
    assert sum(ErrorPattern.objects.values_list("total_count", flat=True)) == 2


@pytest.mark.django_db
def test_a_key_reused_for_another_report_is_422_naming_the_header(agent_client: Any) -> None:
    _post(agent_client, ERROR)
    response = _post(agent_client, {**ERROR, "message": "something else"})
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "Idempotency-Key", "message": response.json()["errors"][0]["message"]}
    ]
    assert ErrorEvent.objects.count() == 1


@pytest.mark.django_db
def test_without_a_key_every_post_counts(agent_client: Any) -> None:
    _post(agent_client, ERROR, key=None)
    _post(agent_client, ERROR, key=None)
    assert ErrorPattern.objects.get().total_count == 2


@pytest.mark.django_db
def test_a_refused_report_frees_its_key(agent_client: Any) -> None:
    assert _post(agent_client, {"service": "svc", "status_code": 99}).status_code == 400
    assert _post(agent_client, {"service": "svc", "status_code": 99}).status_code == 400
    assert _post(agent_client, ERROR, key="another").status_code == 201


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_retry_while_the_first_is_still_running_is_409(
    agent_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = error_services.record_errors
    started = threading.Event()

    def slow(*args: Any, **kwargs: Any) -> Any:
        started.set()
        time.sleep(0.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(error_services, "record_errors", slow)
    answers: list[int] = []

    def first() -> None:
        try:
            answers.append(_post(agent_client, ERROR).status_code)
        finally:
            connection.close()

    thread = threading.Thread(target=first)
    thread.start()
    assert started.wait(5)
    retry = _post(agent_client, ERROR)
    thread.join(10)
    assert retry.status_code == 409
    assert retry["Retry-After"] == "1"
    assert retry.json()["code"] == "idempotency_key_in_flight"
    assert answers == [201]
    assert ErrorEvent.objects.count() == 1

"""Issue 11, item 27: `POST /api/v1/outcomes` with an `Idempotency-Key`: a client that retries after a lost
connection is counted once into its breaker's window."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from recovery.breakers.models import BreakerTransition
from recovery.errors.models import ErrorEvent, IdempotencyRecord

FAILURE = {"service": "svc", "success": False, "duration_ms": 12, "error": {"status_code": 503}}


def _post(client: Any, body: Any, key: str | None) -> Any:
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post("/api/v1/outcomes", body, format="json", **headers)


@pytest.mark.django_db
def test_it_counts_a_retried_outcome_once(agent_client: Any) -> None:
    with override_settings(REDIS_URL=""):
        first = _post(agent_client, FAILURE, "outcome-1")
        again = _post(agent_client, FAILURE, "outcome-1")
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert ErrorEvent.objects.count() == 1
    assert IdempotencyRecord.objects.count() == 1


@pytest.mark.django_db
def test_it_counts_outcomes_without_a_key_every_time(agent_client: Any) -> None:
    with override_settings(REDIS_URL=""):
        _post(agent_client, FAILURE, None)
        again = _post(agent_client, FAILURE, None)
    assert again.status_code == 200 and "Idempotent-Replayed" not in again
    assert ErrorEvent.objects.count() == 2
    assert IdempotencyRecord.objects.count() == 0


@pytest.mark.django_db
def test_it_trips_a_breaker_once_for_five_failures_each_sent_twice(agent_client: Any) -> None:
    with override_settings(REDIS_URL=""):
        for n in range(4):
            _post(agent_client, FAILURE, f"k-{n}")
            _post(agent_client, FAILURE, f"k-{n}")
    # Four distinct failures under the default threshold of five: a count of eight would have opened it.
    assert not BreakerTransition.objects.filter(service__name="svc", to_state="open").exists()


@pytest.mark.django_db
def test_it_refuses_a_key_reused_for_another_outcome_with_422(agent_client: Any) -> None:
    with override_settings(REDIS_URL=""):
        _post(agent_client, FAILURE, "outcome-2")
        response = _post(agent_client, {**FAILURE, "duration_ms": 13}, "outcome-2")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "Idempotency-Key"

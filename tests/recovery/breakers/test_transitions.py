"""Issue 11, items 6 and 14: a breaker's state and its history never disagree. A transition whose row cannot be
written (the database refuses it, or is down) stays pending in the store and is written later, once; what an
agent's error said can never make the row fail; and the window a transition records is the one it tripped on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import DatabaseError

from core.audit.services import Actor
from recovery.breakers import logic
from recovery.breakers import services as breaker_services
from recovery.breakers import store as breaker_store
from recovery.breakers import tasks as breaker_tasks
from recovery.breakers.models import BreakerTransition, Service
from recovery.breakers.store import BreakerStore, DatabaseStore, RedisStore

pytestmark = pytest.mark.django_db

FAIL_503 = {"service": "svc", "success": False, "error": {"status_code": 503}}


@pytest.fixture(params=["database", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: Any) -> Iterator[BreakerStore]:
    chosen: BreakerStore = (
        DatabaseStore()
        if request.param == "database"
        else RedisStore(redis.Redis.from_url(settings.TEST_REDIS_URL))
    )
    breaker_store.use_store(chosen)
    yield chosen


def small_breaker(**settings: Any) -> Service:
    values = {
        "minimum_calls": 4,
        "window_size": 10,
        "consecutive_failures": 0,
        "wait_duration_s": 30,
        **settings,
    }
    return Service.objects.create(name="svc", **values)


@pytest.fixture
def database_refuses_once(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The next bulk insert of transition rows fails as an unreachable database would."""
    calls: list[int] = []
    manager_class = type(BreakerTransition.objects)
    real = manager_class.bulk_create

    def bulk_create(manager: Any, objs: Any, *args: Any, **kwargs: Any) -> Any:
        if manager.model is BreakerTransition and not calls:
            calls.append(1)
            raise DatabaseError("forced: the database cannot be reached")
        return real(manager, objs, *args, **kwargs)

    monkeypatch.setattr(manager_class, "bulk_create", bulk_create)
    return calls


def test_a_trip_whose_row_cannot_be_written_is_answered_and_kept_pending(
    store: BreakerStore, agent_client: Any, database_refuses_once: list[int]
) -> None:
    service = small_breaker()
    response = agent_client.post("/api/v1/outcomes", [FAIL_503] * 4, format="json")
    assert response.status_code == 200, response.content[:300]
    last = response.json()["results"][-1]
    assert (last["state"], last["transition"]) == ("open", None)
    assert database_refuses_once == [1]
    assert not BreakerTransition.objects.exists()
    [pending] = store.pending(service)
    assert (pending["from"], pending["to"], pending["calls"], pending["failures"]) == ("closed", "open", 4, 4)


def test_beat_writes_a_pending_transition_once_the_database_is_back(
    store: BreakerStore,
    agent_client: Any,
    database_refuses_once: list[int],
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    service = small_breaker()
    agent_client.post("/api/v1/outcomes", [FAIL_503] * 4, format="json")
    monkeypatch.setattr(breaker_services, "PENDING_GRACE_MS", 0)
    with django_capture_on_commit_callbacks(execute=True):
        breaker_tasks.expire_breaker_overrides()
    row = BreakerTransition.objects.get()
    assert (row.from_state, row.to_state, row.reason) == (
        "closed",
        "open",
        "failure rate 100% over the last 4 calls (threshold 50%)",
    )
    assert (row.window["calls"], row.window["failures"], row.actor) == (4, 4, "automatic")
    assert row.window["open_until"] == agent_client.get("/api/v1/breakers/svc").json()["open_until"].replace(
        "Z", "+00:00"
    )
    assert store.pending(service) == []
    with django_capture_on_commit_callbacks(execute=True):
        breaker_tasks.expire_breaker_overrides()
    assert BreakerTransition.objects.count() == 1  # written once


def test_the_next_call_writes_a_pending_transition(
    store: BreakerStore,
    agent_client: Any,
    database_refuses_once: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    small_breaker()
    agent_client.post("/api/v1/outcomes", [FAIL_503] * 4, format="json")
    monkeypatch.setattr(breaker_services, "PENDING_GRACE_MS", 0)
    permit = agent_client.post("/api/v1/breakers/svc/permit").json()
    assert (permit["state"], permit["allowed"]) == ("open", False)
    assert list(BreakerTransition.objects.values_list("from_state", "to_state")) == [("closed", "open")]
    assert agent_client.get("/api/v1/breakers/svc").json()["why"]["to_state"] == "open"


def test_a_pending_transition_already_written_is_not_written_again(
    store: BreakerStore, django_capture_on_commit_callbacks: Any
) -> None:
    service = small_breaker()
    cfg = breaker_services.registry.config_of(service)
    results = store.record_many([(service, cfg, logic.Outcome(failure=True))] * 4)
    breaker_services._write_transitions_many([(service, results[3])], Actor())  # its ack is lost
    assert len(store.pending(service)) == 1
    with django_capture_on_commit_callbacks(execute=True):
        breaker_services.flush_pending([service], grace_ms=0)
    assert BreakerTransition.objects.count() == 1
    assert store.pending(service) == []


def test_what_an_error_said_never_makes_the_row_fail(store: BreakerStore) -> None:
    # A NUL or a lone surrogate in a pattern of the window: PostgreSQL refuses both in JSON.
    service = small_breaker()
    cfg = breaker_services.registry.config_of(service)
    results = store.record_many([(service, cfg, logic.Outcome(failure=True))] * 4)
    queued = {
        "svc": [
            {
                "fingerprint": "f",
                "pattern": None,
                "error_class": "external_service",
                "type_name": "Bad\x00Type\ud800",
                "message_template": "boom\x00",
                "count": 4,
            }
        ]
    }
    breaker_services._write_transitions_many([(service, results[3])], Actor(), queued)
    row = BreakerTransition.objects.get()
    assert row.to_state == "open"
    assert row.window["patterns"][0]["type_name"] == "Bad\ufffdType?"
    assert row.window["patterns"][0]["message_template"] == "boom\ufffd"


# --- item 14 --------------------------------------------------------------------------------------------


def test_a_trip_on_consecutive_failures_records_how_many(store: BreakerStore, agent_client: Any) -> None:
    small_breaker(consecutive_failures=5, minimum_calls=100)
    results = agent_client.post("/api/v1/outcomes", [FAIL_503] * 5, format="json").json()["results"]
    transition = results[-1]["transition"]
    assert transition["reason"] == "5 consecutive failures (threshold 5)"
    assert (transition["window"]["consecutive"], transition["window"]["calls"]) == (5, 5)
    row = BreakerTransition.objects.get()
    assert (row.window["consecutive"], row.window["failures"]) == (5, 5)

"""Issue 11, items 22 and 26 with real processes and a real restart.

26: a Redis restart without persistence loses every breaker's state. The store never takes a missing state for a
closed breaker: it rebuilds it from the breaker's last transition (open with its open-until, half-open, an
override) before it answers, so the state agrees again with what agents were told; a change from there on (the
wait is over) is a transition as any other.

22: two gunicorn processes, each with its own cache of the services (BREAKER_CONFIG_CACHE_SECONDS, raised here
so that a cached copy would certainly still be used): an override made through one is in force at the very next
permit through the other.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.utils import timezone

from recovery.breakers import store as breaker_store
from recovery.breakers.models import BreakerTransition, Service
from recovery.breakers.store import RedisStore
from tests.support import factories
from tests.support.processes import PYTHON, free_port, process_env, start, stop, wait_http
from tests.support.servers import OwnRedis

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

FAIL_503 = {"service": "svc", "success": False, "error": {"status_code": 503}}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path / "redis", appendonly=False)
    server.start()
    breaker_store.use_store(RedisStore(server.client()))
    yield server
    breaker_store.use_store(None)
    server.stop(kill=True)


def small_breaker(**settings: Any) -> Service:
    values = {
        "minimum_calls": 4,
        "window_size": 10,
        "consecutive_failures": 0,
        "wait_duration_s": 600,
        "max_wait_s": 600,
    }
    return Service.objects.create(name="svc", **{**values, **settings})


def moment(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.mark.django_db
def test_an_open_breaker_is_open_again_after_a_redis_restart(own_redis: OwnRedis, agent_client: Any) -> None:
    small_breaker()
    agent_client.post("/api/v1/outcomes", [FAIL_503] * 4, format="json")
    before = agent_client.get("/api/v1/breakers/svc").json()
    assert before["state"] == "open"

    own_redis.restart()
    assert own_redis.client().dbsize() == 0  # everything is gone

    permit = agent_client.post("/api/v1/breakers/svc/permit").json()
    assert (permit["allowed"], permit["state"]) == (False, "open")
    assert 590 < permit["retry_after_s"] <= 600
    after = agent_client.get("/api/v1/breakers/svc").json()
    assert (after["state"], after["why"]["to_state"]) == ("open", "open")
    assert abs(moment(after["open_until"]) - moment(before["open_until"])) < timedelta(milliseconds=2)
    assert list(BreakerTransition.objects.values_list("to_state", flat=True)) == ["open"]  # nothing changed


@pytest.mark.django_db
def test_a_breaker_whose_wait_ended_during_the_restart_half_opens_with_a_transition(
    own_redis: OwnRedis, agent_client: Any
) -> None:
    small_breaker(wait_duration_s=0.5, max_wait_s=1)
    agent_client.post("/api/v1/outcomes", [FAIL_503] * 4, format="json")
    own_redis.restart(down_seconds=0.6)
    permit = agent_client.post("/api/v1/breakers/svc/permit").json()
    assert (permit["allowed"], permit["state"]) == (True, "half_open")
    rows = list(BreakerTransition.objects.order_by("id").values_list("from_state", "to_state", "reason"))
    assert rows == [
        ("closed", "open", "failure rate 100% over the last 4 calls (threshold 50%)"),
        ("open", "half_open", "the wait is over: trial calls allowed"),
    ]


@pytest.mark.django_db
def test_a_snapshot_after_a_restart_shows_the_breaker_open(own_redis: OwnRedis, agent_client: Any) -> None:
    small_breaker()
    agent_client.post("/api/v1/outcomes", [FAIL_503] * 4, format="json")
    own_redis.restart()
    snapshot = agent_client.get("/api/v1/breakers/snapshot").json()
    assert [(b["service"], b["state"]) for b in snapshot["breakers"]] == [("svc", "open")]


@pytest.mark.django_db
def test_an_override_survives_a_redis_restart(
    own_redis: OwnRedis, agent_client: Any, operator_client: Any
) -> None:
    small_breaker()
    operator_client.post(
        "/api/v1/breakers/svc/override",
        {
            "mode": "forced_open",
            "reason": "incident",
            "expires_at": (timezone.now() + timedelta(hours=1)).isoformat(),
        },
        format="json",
    )
    own_redis.restart()
    permit = agent_client.post("/api/v1/breakers/svc/permit").json()
    assert (permit["allowed"], permit["state"]) == (False, "forced_open")


@pytest.mark.django_db
def test_outcomes_after_a_restart_count_into_the_rebuilt_state(
    own_redis: OwnRedis, agent_client: Any
) -> None:
    small_breaker()
    agent_client.post("/api/v1/outcomes", [FAIL_503] * 4, format="json")
    own_redis.restart()
    results = agent_client.post("/api/v1/outcomes", [FAIL_503] * 4, format="json").json()["results"]
    assert [r["state"] for r in results] == ["open"] * 4  # stragglers: no second trip from a closed state
    assert BreakerTransition.objects.count() == 1


# --- item 22, across processes -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_override_through_one_process_refuses_the_next_permit_through_another(tmp_path: Path) -> None:
    Service.objects.create(name="svc")
    _, agent_key = factories.agent_key()
    operator_key = factories.user_key(factories.operator())
    ports = [free_port(), free_port()]
    webs = []
    try:
        for n, port in enumerate(ports):
            env = process_env(
                tmp_path / f"web{n}",
                GUNICORN_BIND=f"127.0.0.1:{port}",
                GUNICORN_WORKERS="1",
                GUNICORN_THREADS="1",
                BREAKER_CONFIG_CACHE_SECONDS="30",
                LOG_LEVEL="WARNING",
            )
            command = [PYTHON, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "config.wsgi"]
            webs.append(start(command, env, tmp_path / f"web{n}.log"))
        for port in ports:
            wait_http(f"http://127.0.0.1:{port}/healthz")
        one, other = (f"http://127.0.0.1:{port}/api/v1" for port in ports)
        agent = {"Authorization": f"Bearer {agent_key}"}
        first = httpx.post(f"{other}/breakers/svc/permit", headers=agent).json()
        assert first["allowed"] is True  # the other process now holds the service for 30 s
        response = httpx.post(
            f"{one}/breakers/svc/override",
            json={"mode": "forced_open", "reason": "incident"},
            headers={"Authorization": f"Bearer {operator_key}"},
        )
        assert response.status_code == 200, response.text
        permit = httpx.post(f"{other}/breakers/svc/permit", headers=agent).json()
        assert (permit["allowed"], permit["state"]) == (False, "forced_open")
    finally:
        for web in webs:
            stop(web)

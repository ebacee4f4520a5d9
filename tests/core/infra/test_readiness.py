"""/readyz checks what the process needs: the database, Redis whenever one is configured, and whatever the
higher floors register (issue 11, item 16)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import OperationalError
from django.test import override_settings
from rest_framework.test import APIClient

from core.infra import probes
from tests.support.processes import free_port
from tests.support.servers import OwnRedis

pytestmark = pytest.mark.django_db


@pytest.fixture
def extra_check() -> Iterator[str]:
    yield "intake-durability"
    probes.unregister_readiness_check("intake-durability")


def _ready() -> Any:
    return APIClient().get("/readyz")


def test_it_is_ready_when_the_database_and_redis_answer() -> None:
    response = _ready()
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert (body["checks"]["database"], body["checks"]["redis"]) == ("ok", "ok")


def test_it_is_not_ready_when_the_configured_redis_does_not_answer() -> None:
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
        response = _ready()
    assert response.status_code == 503
    body = response.json()
    assert (body["status"], body["code"], body["checks"]["database"]) == ("unavailable", "unavailable", "ok")
    assert [e["field"] for e in body["errors"]] == ["redis"]
    assert "ConnectionError" in body["checks"]["redis"]
    assert response["Retry-After"]


def test_it_needs_no_redis_where_none_is_configured() -> None:
    with override_settings(REDIS_URL=""):
        body = _ready().json()
    assert body["status"] == "ok"
    assert (body["checks"]["database"], body["checks"]["redis"]) == ("ok", "ok")


def test_a_higher_floor_can_add_a_check(extra_check: str) -> None:
    def not_durable() -> None:
        raise RuntimeError("the intake's Redis keeps nothing on disk (appendonly no)")

    probes.register_readiness_check(extra_check, not_durable)
    response = _ready()
    assert response.status_code == 503
    assert response.json()["errors"] == [
        {
            "field": extra_check,
            "message": "RuntimeError: the intake's Redis keeps nothing on disk (appendonly no)",
        }
    ]
    probes.register_readiness_check(extra_check, lambda: None)
    assert _ready().status_code == 200


def test_a_check_can_say_more_than_ok(extra_check: str) -> None:
    probes.register_readiness_check(extra_check, lambda: (True, {"intake": "buffered", "aof": "everysec"}))
    response = _ready()
    assert response.status_code == 200
    assert response.json()["checks"][extra_check] == {"status": "ok", "intake": "buffered", "aof": "everysec"}
    probes.register_readiness_check(extra_check, lambda: (False, {"why": "Redis keeps nothing on disk"}))
    refused = _ready()
    assert refused.status_code == 503
    assert refused.json()["errors"] == [{"field": extra_check, "message": "Redis keeps nothing on disk"}]
    assert refused.json()["checks"][extra_check] == {"status": "failed", "why": "Redis keeps nothing on disk"}


def test_it_says_when_the_database_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    def gone() -> None:
        raise OperationalError("connection refused")

    monkeypatch.setitem(probes._checks, "database", gone)
    response = _ready()
    assert response.status_code == 503
    assert response.json()["errors"] == [
        {"field": "database", "message": "OperationalError: connection refused"}
    ]


@pytest.mark.slow
@pytest.mark.redis
def test_it_turns_unready_when_its_redis_stops_and_ready_when_it_is_back(tmp_path: Path) -> None:
    server = OwnRedis(tmp_path / "redis")
    server.start()
    try:
        with override_settings(REDIS_URL=server.url):
            assert _ready().status_code == 200
            server.stop()
            down = _ready()
            assert down.status_code == 503
            assert [e["field"] for e in down.json()["errors"]] == ["redis"]
            server.start()
            assert _ready().status_code == 200
    finally:
        server.stop()

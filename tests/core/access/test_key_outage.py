"""While the database cannot be reached, keys verified before keep working from their last good copy for
API_KEY_STALE_GRACE_SECONDS; otherwise the answer is a JSON 503 with Retry-After, never a 500 (issue 11,
item 24). The outage here is every query refused in this process; test_key_outage_processes.py has a real one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import OperationalError, connection
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from core.access import services as access
from core.access.models import ApiKey
from core.audit.services import Actor
from recovery.errors.models import ErrorEvent
from tests.support import factories
from tests.support.factories import rebound_settings

pytestmark = pytest.mark.django_db
SHORT = rebound_settings(API_KEY_CACHE_SECONDS=0.1, API_KEY_STALE_GRACE_SECONDS=30)


@contextmanager
def database_down() -> Iterator[None]:
    """Every query of this process fails as it does when PostgreSQL is gone."""

    def refuse(*args: Any) -> None:
        raise OperationalError('connection to server at "127.0.0.1", port 5432 failed: Connection refused')

    with connection.execute_wrapper(refuse):
        yield


def _client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def _unavailable(response: Any) -> None:
    assert response.status_code == 503, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "unavailable"
    assert int(response["Retry-After"]) > 0


@override_settings(REBOUND=SHORT)
def test_a_known_key_keeps_working_past_its_cache_while_the_database_is_down() -> None:
    _, key = factories.agent_key()
    client = _client(key)
    assert client.get("/api/v1/me").status_code == 200
    time.sleep(0.15)  # the cached copy has expired: a look-up is due
    with database_down():
        response = client.get("/api/v1/me")
        assert response.status_code == 200, response.content
        assert response.json()["kind"] == "agent"
        time.sleep(0.15)
        assert client.get("/api/v1/me").status_code == 200


@override_settings(REBOUND=rebound_settings(API_KEY_CACHE_SECONDS=0.1, API_KEY_STALE_GRACE_SECONDS=0.2))
def test_a_known_key_gets_503_once_its_grace_is_over() -> None:
    _, key = factories.agent_key()
    client = _client(key)
    assert client.get("/api/v1/me").status_code == 200
    time.sleep(0.35)
    with database_down():
        _unavailable(client.get("/api/v1/me"))


@override_settings(REBOUND=SHORT)
def test_a_key_never_verified_here_gets_503_not_500() -> None:
    _, key = factories.agent_key()
    with database_down():
        _unavailable(_client(key).get("/api/v1/me"))
        _unavailable(_client("rb_deadbeef_unknown-but-well-formed").get("/api/v1/me"))


@override_settings(REBOUND=SHORT)
def test_a_key_revoked_here_stays_refused_while_the_database_is_down() -> None:
    agent, key = factories.agent_key()
    client = _client(key)
    assert client.get("/api/v1/me").status_code == 200
    api_key = ApiKey.objects.get(agent=agent)
    assert access.revoke_key(api_key=api_key, actor=Actor(source="cli"), reason="leaked")
    with database_down():
        assert client.get("/api/v1/me").status_code == 401
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None


@override_settings(REBOUND=SHORT)
def test_a_key_revoked_elsewhere_stays_refused_once_the_database_said_so() -> None:
    agent, key = factories.agent_key()
    client = _client(key)
    assert client.get("/api/v1/me").status_code == 200
    ApiKey.objects.filter(agent=agent).update(revoked_at=timezone.now())  # another process revoked it
    time.sleep(0.15)
    assert client.get("/api/v1/me").status_code == 401
    with database_down():
        assert client.get("/api/v1/me").status_code == 401


@pytest.mark.slow
@override_settings(REBOUND=SHORT)
def test_a_key_is_verified_against_the_database_again_once_it_is_back() -> None:
    agent, key = factories.agent_key()
    client = _client(key)
    assert client.get("/api/v1/me").status_code == 200
    time.sleep(0.15)
    with database_down():
        assert client.get("/api/v1/me").status_code == 200
    ApiKey.objects.filter(agent=agent).update(revoked_at=timezone.now())
    time.sleep(1.1)  # the outage's re-check interval
    assert client.get("/api/v1/me").status_code == 401


@override_settings(REBOUND=SHORT)
def test_a_synchronous_report_during_the_outage_is_a_json_503() -> None:
    _, key = factories.agent_key()
    client = _client(key)
    assert client.get("/api/v1/me").status_code == 200
    with database_down():
        _unavailable(client.post("/api/v1/errors", {"service": "svc", "message": "x"}, format="json"))
    assert not ErrorEvent.objects.exists()


def test_a_session_during_the_outage_is_a_json_503(operator_user: Any) -> None:
    client = APIClient()
    client.force_login(operator_user)
    with database_down():
        _unavailable(client.get("/api/v1/me"))

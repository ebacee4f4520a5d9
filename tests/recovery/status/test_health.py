"""GET /api/v1/status shows each service's health from a registered source (healing's health checks register
theirs when the app is ready: recovery never imports healing)."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from healing.checks import selectors as check_selectors
from healing.checks import services as check_services
from healing.checks.probes import Outcome
from recovery.status import selectors as status_selectors
from tests.support.health_checks import make_check

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def checks_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only this source, whatever healing/apps.py registered: restored after the test.
    monkeypatch.setattr(status_selectors, "_health_sources", [])
    status_selectors.register_health_source(check_selectors.service_health)
    status_selectors.register_health_source(check_selectors.service_health)  # idempotent


def record(check: Any, ok: bool) -> None:
    check_services.record(check.pk, Outcome(ok, error="" if ok else "down"), source="manual")


def test_it_shows_each_services_worst_check(agent_client: APIClient) -> None:
    api = make_check("openai-api", service="openai", rise=1, fall=1)
    models = make_check("openai-models", service="openai", rise=1)
    billing = make_check("stripe-api", service="stripe", rise=1)
    make_check("off", service="mail", enabled=False)
    record(api, False)
    record(models, True)
    record(billing, True)

    health = agent_client.get("/api/v1/status").json()["health"]

    assert list(health) == ["openai", "stripe"]  # no enabled check, no entry
    assert health["openai"]["state"] == "unhealthy"
    assert [(c["name"], c["state"]) for c in health["openai"]["checks"]] == [
        ("openai-api", "unhealthy"),
        ("openai-models", "healthy"),
    ]
    assert health["openai"]["checks"][0]["last_result_at"] is not None
    assert health["stripe"] == {
        "state": "healthy",
        "checks": [
            {
                "name": "stripe-api",
                "state": "healthy",
                "last_result_at": health["stripe"]["checks"][0]["last_result_at"],
            }
        ],
    }


def test_a_check_without_a_verdict_leaves_its_service_unknown(agent_client: APIClient) -> None:
    done = make_check("a", service="svc", rise=1)
    make_check("b", service="svc")
    record(done, True)
    health = agent_client.get("/api/v1/status").json()["health"]["svc"]
    assert health["state"] == "unknown"
    assert [c["last_result_at"] is None for c in health["checks"]] == [False, True]


def test_without_a_source_there_is_no_health(
    agent_client: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(status_selectors, "_health_sources", [])
    make_check("a", service="svc")
    assert agent_client.get("/api/v1/status").json()["health"] == {}

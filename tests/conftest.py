from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.test import Client, override_settings
from rest_framework.test import APIClient

from core.infra import caches
from tests.support import factories, run_redis, seeds, static_files
from tests.support.admin_helpers import login
from tests.support.saga_fixtures import Target

static_files.install()  # WhiteNoise scans the static files once per run, not once per test client

SKIP_REASONS: dict[str, str] = {}
if not settings.POSTGRES_AVAILABLE:
    SKIP_REASONS["postgres"] = f"PostgreSQL not reachable at {settings.TEST_DATABASE_URL} (ran on SQLite)"
if not settings.REDIS_AVAILABLE:
    SKIP_REASONS["redis"] = f"Redis not reachable at {settings.TEST_REDIS_URL}"


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    for item in items:
        for marker, reason in SKIP_REASONS.items():
            if item.get_closest_marker(marker):
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> None:
    """The test database as pytest-django creates it, and a note of the rows its migrations seed: each
    transactional test ends by emptying what it wrote and putting those rows back (tests/support/seeds.py),
    instead of a flush of every table and serialized_rollback."""
    with django_db_blocker.unblock():
        seeds.take_snapshot()
    seeds.install()


def pytest_unconfigure(config: Any) -> None:
    # Give this run's Redis database back (config/settings/test.py claimed it), whatever the outcome.
    if settings.REDIS_AVAILABLE:
        run_redis.release()


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    # In CI a skipped test is a failure: a green run must mean the whole suite ran on the real servers.
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if settings.REQUIRE_SERVICES and skipped and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    if skipped:
        why = "; ".join(SKIP_REASONS.values()) or "see -rs"
        terminalreporter.write_line(f"SKIPPED {len(skipped)} tests because {why}.")
        if settings.REQUIRE_SERVICES:
            terminalreporter.write_line("REBOUND_REQUIRE_SERVICES is set: skipped tests fail this run.")


def _forget_everything() -> None:
    caches.reset_all()


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    # Each test starts with cold caches and an empty breaker store, as a new deployment would.
    _forget_everything()
    if settings.REDIS_AVAILABLE:
        run_redis.flush()
    yield
    _forget_everything()


@pytest.fixture
def agent_client(db: Any) -> APIClient:
    agent, key = factories.agent_key()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    client.agent = agent  # type: ignore[attr-defined]
    return client


@pytest.fixture
def operator_user(db: Any) -> Any:
    return factories.operator()


@pytest.fixture
def operator_client(operator_user: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {factories.user_key(operator_user)}")
    client.user = operator_user  # type: ignore[attr-defined]
    return client


@pytest.fixture
def viewer_client(db: Any) -> APIClient:
    user = factories.viewer()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {factories.user_key(user)}")
    client.user = user  # type: ignore[attr-defined]
    return client


@pytest.fixture
def target() -> Iterator[Target]:
    """The HTTP service saga compensations undo things in (tests/support/saga_fixtures.py), which outbound requests
    may reach. Test files with an HTTP target of their own define their own `target`, which wins."""
    server = Target()
    with override_settings(REBOUND=factories.rebound_settings(OUTBOUND_ALLOWED_HOSTS=["127.0.0.1"])):
        yield server
    server.close()


# --- the admin, as a browser drives it (tests/support/admin_helpers.py) -------------------------------------------


@pytest.fixture
def operator() -> Client:
    """A Django test client logged in to the admin as an operator."""
    return login(factories.operator())


@pytest.fixture
def viewer() -> Client:
    """A Django test client logged in to the admin as a viewer."""
    return login(factories.viewer())

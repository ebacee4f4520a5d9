"""Fixtures of the healing actions' tests: a real loopback HTTP target that webhooks may call (allowlisted), a
webhook action on it, and the executions the services enqueue, recorded instead of sent. Helpers live in
tests/support/healing_runs.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib import import_module
from typing import Any

import pytest
from django.apps import apps
from django.test import override_settings

from healing.actions import services
from healing.actions.models import HealingAction
from tests.support import factories
from tests.support.healing_runs import make_webhook
from tests.support.http_target import Target, running_target


@pytest.fixture(autouse=True)
def builtin_actions() -> None:
    """The built-in actions as migration healing/0005 creates them. A transactional test (threads, workers)
    ends by emptying the tables, and tests/support/seeds.py does not put these rows back (yet): each test here
    makes sure they exist, whatever ran before it."""
    import_module("healing.migrations.0005_builtin_healing_actions").create(apps, None)


@pytest.fixture
def target() -> Iterator[Target]:
    """The HTTP service webhooks call: real, on 127.0.0.1, and the only allowlisted host."""
    with (
        running_target() as server,
        override_settings(REBOUND=factories.rebound_settings(OUTBOUND_ALLOWED_HOSTS=[server.host])),
    ):
        yield server


@pytest.fixture
def webhook(db: Any, target: Target) -> Callable[..., HealingAction]:
    """make_webhook(target, ...) with this test's target."""
    return lambda name="restart-pods", **fields: make_webhook(target, name, **fields)


@pytest.fixture
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The run ids whose execution the services sent (recorded, not sent to the broker)."""
    sent: list[int] = []
    monkeypatch.setattr(services, "enqueue_execution", lambda run_id, timeout_s: sent.append(run_id))
    return sent

"""tasks_went_stale: the sweep that marks quiet running tasks stale says which ones it marked, once committed;
a task it marked already, a live one or a finished one is not in it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from core.audit.services import Actor
from recovery.checkpoints import services, signals
from recovery.checkpoints.models import Task
from tests.support import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def heard() -> Iterator[list[list[int]]]:
    calls: list[list[int]] = []

    def receiver(sender: object, *, task_ids: list[int], **_: Any) -> None:
        calls.append(sorted(task_ids))

    signals.tasks_went_stale.connect(receiver, dispatch_uid="test-stale-heard")
    yield calls
    signals.tasks_went_stale.disconnect(dispatch_uid="test-stale-heard")


def later() -> Any:
    return timezone.now() + timedelta(seconds=float(settings.REBOUND["TASK_STALE_SECONDS"]) + 5)


def test_it_announces_the_tasks_it_marked_stale_once(
    heard: list[list[int]], django_capture_on_commit_callbacks: Any
) -> None:
    agent = factories.AgentFactory()
    quiet, _ = services.create_task(agent=agent, task_id="crawl-1")
    alive, _ = services.create_task(agent=agent, task_id="crawl-2")
    ended, _ = services.create_task(agent=agent, task_id="crawl-3")
    services.complete(task=ended, status=Task.Status.SUCCEEDED, actor=Actor(agent=agent))
    now = later()

    with django_capture_on_commit_callbacks(execute=True):
        Task.objects.filter(pk=alive.pk).update(last_heartbeat_at=now)
        assert services.mark_stale(now=now) == 1
        assert services.mark_stale(now=now + timedelta(seconds=1)) == 0  # marked already: not again

    assert heard == [[quiet.pk]]


def test_it_announces_nothing_before_the_commit(
    heard: list[list[int]], django_capture_on_commit_callbacks: Any
) -> None:
    services.create_task(agent=factories.AgentFactory(), task_id="crawl-1")
    with django_capture_on_commit_callbacks(execute=False) as pending:
        assert services.mark_stale(now=later()) == 1
    assert heard == []
    for callback in pending:
        callback()
    assert len(heard) == 1


def test_it_announces_each_batch(heard: list[list[int]], django_capture_on_commit_callbacks: Any) -> None:
    agent = factories.AgentFactory()
    tasks = [services.create_task(agent=agent, task_id=f"crawl-{n}")[0] for n in range(3)]
    with django_capture_on_commit_callbacks(execute=True):
        assert services.mark_stale(now=later(), batch_size=2) == 3
    assert sorted(pk for batch in heard for pk in batch) == sorted(t.pk for t in tasks)
    assert [len(batch) for batch in heard] == [2, 1]

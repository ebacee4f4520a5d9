"""Retention, rule by rule and in bounded batches, and stale marking, on the real PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.access.models import Agent
from core.audit.services import Actor
from recovery.checkpoints import selectors as checkpoint_selectors
from recovery.checkpoints import services as checkpoint_services
from recovery.checkpoints import tasks as checkpoint_tasks
from recovery.checkpoints.models import Checkpoint, Task
from tests.support import factories

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db]
NOW = timezone.now()


def task_with(
    count: int,
    *,
    status: str = "running",
    finished_days_ago: float | None = None,
    age_days: float = 0,
    agent: Agent | None = None,
    task_id: str = "job",
) -> Task:
    """A task with `count` checkpoints created `age_days` ago (the last one newest), ended as `status`."""
    agent = agent or factories.AgentFactory()
    for n in range(count):
        checkpoint_services.save_checkpoint(agent=agent, task_id=task_id, state={"n": n + 1})
    task = Task.objects.get(agent=agent, task_id=task_id)
    created = NOW - timedelta(days=age_days)
    Checkpoint.objects.filter(task=task).update(created_at=created)
    if status != "running":
        finished = NOW - timedelta(days=finished_days_ago or 0)
        Task.objects.filter(pk=task.pk).update(status=status, finished_at=finished)
    task.refresh_from_db()
    return task


def seqs(task: Task) -> list[int]:
    return sorted(Checkpoint.objects.filter(task=task).values_list("seq", flat=True))


def settings_with(**changes: Any) -> Any:
    return override_settings(REBOUND=factories.rebound_settings(**changes))


def test_it_keeps_the_last_n_of_a_succeeded_task() -> None:
    one = task_with(5, status="succeeded", task_id="one")
    with settings_with(CHECKPOINT_KEEP_AFTER_SUCCESS=2):
        two = task_with(4, status="succeeded", task_id="two")
        deleted = checkpoint_services.enforce_retention(now=NOW)

    assert seqs(one) == [4, 5]
    assert seqs(two) == [3, 4]
    assert deleted == {"succeeded": 5, "failed": 0, "max_age": 0}


def test_it_keeps_the_newest_after_success_by_default_and_none_when_told() -> None:
    kept = task_with(3, status="succeeded", task_id="kept")
    checkpoint_services.enforce_retention(now=NOW)
    assert seqs(kept) == [3]

    with settings_with(CHECKPOINT_KEEP_AFTER_SUCCESS=0):
        checkpoint_services.enforce_retention(now=NOW)

    assert seqs(kept) == []
    kept.refresh_from_db()
    assert (kept.status, kept.last_seq) == ("succeeded", 3)  # the task and its history stay


@pytest.mark.parametrize("status", ["failed", "abandoned"])
def test_a_failed_task_keeps_everything_for_the_set_days_then_the_success_rule(status: str) -> None:
    recent = task_with(4, status=status, finished_days_ago=6, task_id="recent")
    old = task_with(4, status=status, finished_days_ago=8, task_id="old")

    deleted = checkpoint_services.enforce_retention(now=NOW)

    assert seqs(recent) == [1, 2, 3, 4]
    assert seqs(old) == [4]
    assert deleted == {"succeeded": 0, "failed": 3, "max_age": 0}


def test_it_leaves_running_tasks_alone_within_the_maximum_age() -> None:
    running = task_with(5, age_days=29)

    assert checkpoint_services.enforce_retention(now=NOW) == {"succeeded": 0, "failed": 0, "max_age": 0}
    assert seqs(running) == [1, 2, 3, 4, 5]


def test_past_the_maximum_age_everything_goes_but_a_running_tasks_newest() -> None:
    running = task_with(4, age_days=31, task_id="running")
    failed = task_with(3, status="failed", finished_days_ago=1, age_days=31, task_id="failed")
    succeeded = task_with(2, status="succeeded", age_days=31, task_id="succeeded")
    young = task_with(2, age_days=1, task_id="young")

    deleted = checkpoint_services.enforce_retention(now=NOW)

    assert seqs(running) == [4]  # where it resumes
    assert seqs(failed) == []  # the maximum age wins over the failed tasks' grace
    assert seqs(succeeded) == []
    assert seqs(young) == [1, 2]
    assert deleted == {"succeeded": 1, "failed": 0, "max_age": 3 + 3 + 1}


def test_it_deletes_in_batches_without_loading_the_states() -> None:
    task = task_with(7, status="succeeded")

    with CaptureQueriesContext(connection) as queries:
        deleted = checkpoint_services.enforce_retention(now=NOW, batch_size=2)

    assert deleted["succeeded"] == 6
    assert seqs(task) == [7]
    sql = [q["sql"] for q in queries.captured_queries]
    assert len([s for s in sql if s.startswith('DELETE FROM "recovery_checkpoint"')]) == 3
    assert not [s for s in sql if '"recovery_checkpoint"."data"' in s]


def test_it_stops_when_its_time_budget_is_spent() -> None:
    task = task_with(3, status="succeeded")

    deleted = checkpoint_services.enforce_retention(now=NOW, budget_s=0)

    assert deleted == {"succeeded": 0, "failed": 0, "max_age": 0}
    assert seqs(task) == [1, 2, 3]


def test_a_fork_outlives_the_checkpoint_it_came_from() -> None:
    source = task_with(3, status="succeeded")
    child = checkpoint_services.fork(task=source, seq=1, new_task_id="child", actor=Actor(agent=source.agent))

    checkpoint_services.enforce_retention(now=NOW)

    child.refresh_from_db()
    assert child.forked_from is None
    assert child.metadata == {
        "forked_from": {"task_id": "job", "seq": 1}
    }  # the lineage is still written down
    assert seqs(child) == [1]
    assert seqs(source) == [3]


def test_the_beat_task_runs_retention_once_at_a_time() -> None:
    task = task_with(3, status="succeeded")
    cache.set(checkpoint_tasks.RETENTION_LOCK, "another-run", 60)

    assert checkpoint_tasks.enforce_checkpoint_retention() == {}
    assert seqs(task) == [1, 2, 3]

    cache.delete(checkpoint_tasks.RETENTION_LOCK)
    assert checkpoint_tasks.enforce_checkpoint_retention()["succeeded"] == 2
    assert seqs(task) == [3]
    assert cache.get(checkpoint_tasks.RETENTION_LOCK) is None


# --- stale tasks -------------------------------------------------------------------------------------------


def quiet_task(task_id: str, minutes: float, **fields: Any) -> Task:
    long_ago: datetime = NOW - timedelta(minutes=minutes)
    return factories.task(task_id=task_id, started_at=long_ago, **fields)


def test_it_marks_running_tasks_that_went_quiet_as_stale() -> None:
    quiet = quiet_task("quiet", 20)
    beating = quiet_task("beating", 60, last_heartbeat_at=NOW - timedelta(minutes=2))
    saving = quiet_task("saving", 60, last_checkpoint_at=NOW - timedelta(minutes=5))
    old_signs = quiet_task(
        "old-signs",
        60,
        last_heartbeat_at=NOW - timedelta(minutes=16),
        last_checkpoint_at=NOW - timedelta(minutes=30),
    )
    done = quiet_task("done", 60, status="succeeded", finished_at=NOW - timedelta(minutes=50))
    already = quiet_task("already", 60, stale_at=NOW - timedelta(minutes=40))

    marked = checkpoint_services.mark_stale(now=NOW)

    assert marked == 2
    for task in (quiet, beating, saving, old_signs, done, already):
        task.refresh_from_db()
    assert quiet.stale_at == NOW
    assert old_signs.stale_at == NOW
    assert beating.stale_at is None
    assert saving.stale_at is None
    assert done.stale_at is None
    assert already.stale_at == NOW - timedelta(minutes=40)  # marked once, when it went quiet
    # The longest quiet first; equal marks in the order the tasks were created.
    assert list(checkpoint_selectors.stale_tasks()) == [already, quiet, old_signs]


def test_stale_marking_follows_the_setting_and_goes_in_batches() -> None:
    tasks = [quiet_task(f"t{n}", 3) for n in range(5)]

    with settings_with(TASK_STALE_SECONDS=120):
        assert checkpoint_services.mark_stale(now=NOW, batch_size=2) == 5
    with settings_with(TASK_STALE_SECONDS=600):
        assert checkpoint_services.mark_stale(now=NOW) == 0

    assert all(t.stale_at == NOW for t in Task.objects.filter(pk__in=[t.pk for t in tasks]))


def test_the_beat_task_marks_stale_tasks() -> None:
    quiet = quiet_task("quiet", 20)

    assert checkpoint_tasks.mark_stale_tasks() == 1

    quiet.refresh_from_db()
    assert quiet.stale_at is not None

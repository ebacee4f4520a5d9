"""Writers racing on one task, in real threads against the real PostgreSQL: with expected_seq exactly one wins
and the others get a conflict; without it every writer gets its own consecutive number. Never an overwrite."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from recovery.checkpoints import codec as checkpoint_codec
from recovery.checkpoints import services as checkpoint_services
from recovery.checkpoints.codec import decode
from recovery.checkpoints.models import Checkpoint, Task
from recovery.checkpoints.services import SeqConflict
from tests.support import factories

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True, params=["one statement", "portable"])
def insert_path(request: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of saving: PostgreSQL's single statement, and the ORM's transaction (SQLite's, run here on
    PostgreSQL so that it too faces real concurrency)."""
    if request.param == "portable":
        monkeypatch.setattr(checkpoint_services, "_insert_postgres", checkpoint_services._insert_portable)
    return str(request.param)


def race(threads: int, work: Callable[[int], Any]) -> tuple[list[Any], list[BaseException]]:
    """Run work(n) in `threads` threads released together; each thread's result or exception."""
    results: list[Any] = [None] * threads
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def run(n: int) -> None:
        try:
            barrier.wait()
            results[n] = work(n)
        except BaseException as error:  # asserted on by the caller
            errors.append(error)
        finally:
            connection.close()

    pool = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=60)
    return results, errors


def state_of(n: int) -> dict[str, Any]:
    return {"writer": n, "notes": [f"writer {n} line {i}" for i in range(200)]}


def test_two_writers_with_the_same_expected_seq_one_wins_one_gets_409() -> None:
    agent = factories.AgentFactory()
    checkpoint_services.save_checkpoint(agent=agent, task_id="job", state={"start": True})

    results, errors = race(
        2,
        lambda n: checkpoint_services.save_checkpoint(
            agent=agent, task_id="job", state=state_of(n), expected_seq=1
        ),
    )

    winners = [n for n, r in enumerate(results) if r is not None]
    assert len(winners) == 1
    assert len(errors) == 1
    assert isinstance(errors[0], SeqConflict)
    assert "expected_seq is 1 but the latest checkpoint is 2" in errors[0].message
    task = Task.objects.get()
    assert task.last_seq == 2
    stored = Checkpoint.objects.get(task=task, seq=2)
    # The row at seq 2 is the winner's, whole: its state, hash and size, never a mix or the loser's.
    assert json.loads(decode(stored)) == state_of(winners[0])
    assert stored.sha256 == results[winners[0]].sha256
    assert Checkpoint.objects.count() == 2


def test_two_writers_without_expected_seq_both_land_one_after_the_other() -> None:
    agent = factories.AgentFactory()

    results, errors = race(
        2, lambda n: checkpoint_services.save_checkpoint(agent=agent, task_id="job", state=state_of(n))
    )

    assert errors == []
    assert sorted(r.seq for r in results) == [1, 2]
    task = Task.objects.get()  # both threads asked for a task that did not exist yet: one was created
    assert task.last_seq == 2
    for n, saved in enumerate(results):
        stored = Checkpoint.objects.get(task=task, seq=saved.seq)
        assert json.loads(decode(stored)) == state_of(n)
        assert stored.sha256 == hashlib.sha256(checkpoint_codec.canonical_json(state_of(n))).hexdigest()


def test_many_writers_without_expected_seq_get_consecutive_numbers() -> None:
    agent = factories.AgentFactory()
    factories.task(agent, "job")

    def write(n: int) -> list[int]:
        return [
            checkpoint_services.save_checkpoint(agent=agent, task_id="job", state=state_of(n)).seq
            for _ in range(5)
        ]

    results, errors = race(8, write)

    assert errors == []
    seqs = sorted(seq for per_thread in results for seq in per_thread)
    assert seqs == list(range(1, 41))
    assert Task.objects.get().last_seq == 40
    assert sorted(Checkpoint.objects.values_list("seq", flat=True)) == list(range(1, 41))


def test_many_writers_with_expected_seq_never_overwrite() -> None:
    agent = factories.AgentFactory()
    factories.task(agent, "job")

    def write(n: int) -> int:
        """Read the latest, write after it, on conflict read again: as an agent's SDK would."""
        landed = 0
        for _ in range(40):
            latest = Task.objects.get(agent=agent, task_id="job").last_seq
            try:
                checkpoint_services.save_checkpoint(
                    agent=agent, task_id="job", state=state_of(n), expected_seq=latest
                )
                landed += 1
                if landed == 3:
                    return landed
            except SeqConflict:
                continue
        return landed

    results, errors = race(6, write)

    assert errors == []
    total = sum(results)
    assert Task.objects.get().last_seq == total
    assert sorted(Checkpoint.objects.values_list("seq", flat=True)) == list(range(1, total + 1))

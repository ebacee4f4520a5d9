"""The admin of tasks and checkpoints: the task page with its checkpoints, a checkpoint's readable state with
its integrity, the diff of two checkpoints, and marking tasks abandoned with a reason (audited)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from core.audit.models import AuditEvent
from recovery.checkpoints import services as checkpoint_services
from recovery.checkpoints.models import Checkpoint, Task
from tests.support import factories
from tests.support.admin_helpers import confirmed, run_action, url

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


@pytest.fixture
def task() -> Task:
    agent = factories.AgentFactory(name="mail-agent")
    for state in (
        {"cursor": {"page": 1}, "summary": "first draft", "done": ["fetch"]},
        {"cursor": {"page": 2}, "summary": "second draft", "done": ["fetch", "classify"]},
    ):
        checkpoint_services.save_checkpoint(
            agent=agent, task_id="inbox", state=state, step="summarise", progress=50
        )
    return Task.objects.get()


def test_the_task_page_lists_its_checkpoints_without_their_states(viewer: Client, task: Task) -> None:
    with CaptureQueriesContext(connection) as queries:
        response = viewer.get(url("recovery_task_change", task.pk))

    assert response.status_code == 200
    page = response.content.decode()
    assert "Checkpoints (the newest 50, metadata only)" in page
    assert "summarise" in page
    assert "diff with previous" in page
    assert "Diff two checkpoints of this task" in page
    assert "Mark abandoned" not in page  # a viewer reads, never acts
    assert not [q for q in queries.captured_queries if '"recovery_checkpoint"."data"' in q["sql"]]


def test_the_task_list_renders_with_the_stale_filter(viewer: Client, task: Task) -> None:
    Task.objects.update(stale_at=task.started_at)

    response = viewer.get(url("recovery_task_changelist") + "?stale=yes")

    assert response.status_code == 200
    assert "inbox" in response.content.decode()


def test_a_checkpoint_page_shows_the_state_readably_and_its_integrity(viewer: Client, task: Task) -> None:
    checkpoint = Checkpoint.objects.get(task=task, seq=2)

    response = viewer.get(url("recovery_checkpoint_change", checkpoint.pk))

    assert response.status_code == 200
    page = response.content.decode()
    assert "intact" in page
    assert checkpoint.sha256 in page
    assert "&quot;summary&quot;: &quot;second draft&quot;" in page  # pretty JSON, indented, escaped
    assert "Diff with checkpoint 1" in page


def test_a_corrupt_checkpoint_page_says_so_and_hides_the_state(viewer: Client, task: Task) -> None:
    Checkpoint.objects.filter(task=task, seq=2).update(sha256="0" * 64)
    checkpoint = Checkpoint.objects.get(task=task, seq=2)

    page = viewer.get(url("recovery_checkpoint_change", checkpoint.pk)).content.decode()

    assert "CORRUPT" in page
    assert "Not shown: the stored state failed its check." in page
    assert "second draft" not in page


def test_the_checkpoint_list_renders(viewer: Client, task: Task) -> None:
    response = viewer.get(url("recovery_checkpoint_changelist"))

    assert response.status_code == 200
    assert "inbox" in response.content.decode()


def test_the_diff_shows_what_changed_between_two_checkpoints(viewer: Client, task: Task) -> None:
    response = viewer.get(url("recovery_task_diff", task.pk) + "?a=1&b=2")

    assert response.status_code == 200
    page = response.content.decode()
    assert '<span class="removed">-  &quot;summary&quot;: &quot;first draft&quot;</span>' in page
    assert '<span class="added">+  &quot;summary&quot;: &quot;second draft&quot;</span>' in page
    assert '<span class="added">+    &quot;classify&quot;</span>' in page
    assert '<span class="context">' in page


def test_the_diff_page_proposes_the_newest_two_and_refuses_unknown_seqs(viewer: Client, task: Task) -> None:
    blank = viewer.get(url("recovery_task_diff", task.pk))
    unknown = viewer.get(url("recovery_task_diff", task.pk) + "?a=1&b=9")
    same = viewer.get(url("recovery_task_diff", task.pk) + "?a=2&b=2")

    assert blank.status_code == 200
    assert '<option value="2" selected>' in blank.content.decode()
    assert 'id="diff"' not in blank.content.decode()
    assert "Select a valid choice" in unknown.content.decode()
    assert 'id="no-difference"' in same.content.decode()


def test_the_diff_does_not_show_a_corrupt_side(viewer: Client, task: Task) -> None:
    Checkpoint.objects.filter(task=task, seq=1).update(size_bytes=1)

    page = viewer.get(url("recovery_task_diff", task.pk) + "?a=1&b=2").content.decode()

    assert "CORRUPT" in page
    assert "No diff" in page


def abandon(client: Client, task: Task, **extra: str) -> Any:
    return run_action(client, "recovery_task_changelist", "mark_abandoned", [task.pk], **extra)


def test_it_asks_for_a_reason_before_marking_a_task_abandoned(operator: Client, task: Task) -> None:
    asked = abandon(operator, task)
    nothing = abandon(operator, task, **confirmed(""))
    task.refresh_from_db()
    assert task.status == "running"
    assert asked.status_code == 200
    assert "reason" in asked.content.decode()
    assert nothing.status_code == 200


def test_it_marks_a_task_abandoned_with_an_operators_reason(operator: Client, task: Task) -> None:
    done = abandon(operator, task, **confirmed("the customer cancelled"))

    assert done.status_code == 302
    task.refresh_from_db()
    assert task.status == "abandoned"
    assert task.finished_at is not None
    assert task.metadata == {"completion_reason": "the customer cancelled"}


def test_it_audits_marking_a_task_abandoned(operator: Client, task: Task) -> None:
    abandon(operator, task, **confirmed("the customer cancelled"))
    event = AuditEvent.objects.get(action="task.complete")
    assert (event.reason, event.source, event.target_id) == ("the customer cancelled", "admin", str(task.pk))
    assert event.actor_user == operator.user  # type: ignore[attr-defined]
    assert event.after == {"status": "abandoned"}


def test_abandoning_a_finished_task_changes_nothing(operator: Client, task: Task) -> None:
    Task.objects.update(status="succeeded")

    abandon(operator, task, **confirmed("tidy up"))

    task.refresh_from_db()
    assert task.status == "succeeded"
    assert not AuditEvent.objects.filter(action="task.complete").exists()


def test_the_task_page_offers_the_abandon_button_to_operators(operator: Client, task: Task) -> None:
    page = operator.get(url("recovery_task_change", task.pk)).content.decode()

    assert 'value="mark_abandoned"' in page


def test_the_task_page_costs_the_same_queries_for_few_or_many_checkpoints(viewer: Client, task: Task) -> None:
    with CaptureQueriesContext(connection) as few:
        viewer.get(url("recovery_task_change", task.pk))
    for n in range(10):
        checkpoint_services.save_checkpoint(agent=task.agent, task_id="inbox", state={"n": n})
    with CaptureQueriesContext(connection) as many:
        response = viewer.get(url("recovery_task_change", task.pk))

    assert response.status_code == 200
    assert len(many.captured_queries) == len(few.captured_queries)

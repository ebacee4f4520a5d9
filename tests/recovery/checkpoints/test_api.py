"""The task and checkpoint API on the real PostgreSQL: sequence, integrity on every read, limits, bad input,
agent scoping (another agent's task is a 404), forks, heartbeats and completion."""

from __future__ import annotations

import hashlib
import zlib
from typing import Any

import orjson
import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from core.audit.models import AuditEvent
from recovery.checkpoints.models import Checkpoint, Task
from tests.support import factories

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

STATE = {
    "messages": [{"role": "user", "content": "Résumé du café 東京"}],
    "cursor": {"page": 3, "b": [1, 2.5]},
}


def canonical(state: Any) -> bytes:
    """The documented canonical form: orjson's, keys sorted (docs/checkpoints.md, "Integrity")."""
    return orjson.dumps(state, option=orjson.OPT_SORT_KEYS)


def save(client: APIClient, task_id: str = "job-1", **body: Any) -> Any:
    body.setdefault("state", STATE)
    return client.post(f"/api/v1/tasks/{task_id}/checkpoints", body, format="json")


def corrupt(task: Task, seq: int, how: str = "data") -> None:
    """Damage a stored checkpoint behind the application's back, as a disk or a bad restore would."""
    statement = {
        # One bit of the compressed stream, in its middle.
        "data": "UPDATE recovery_checkpoint SET data = set_byte(data, length(data) / 2, "
        "get_byte(data, length(data) / 2) # 1) WHERE task_id = %s AND seq = %s",
        "sha256": "UPDATE recovery_checkpoint SET sha256 = repeat('0', 64) WHERE task_id = %s AND seq = %s",
    }[how]
    with connection.cursor() as cursor:
        cursor.execute(statement, [task.pk, seq])


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


# --- saving ------------------------------------------------------------------------------------------------


def _save_first(agent_client: APIClient) -> Any:
    return save(
        agent_client,
        progress=40,
        step="summarise",
        completed_steps=["fetch", "classify"],
        metadata={"model": "gpt-4o"},
    )


def test_it_answers_201_with_the_first_checkpoints_seq_hash_and_size(agent_client: APIClient) -> None:
    response = _save_first(agent_client)

    assert response.status_code == 201, response.json()
    raw = canonical(STATE)
    answer = response.json()
    assert answer["task_id"] == "job-1"
    assert answer["seq"] == 1
    assert answer["sha256"] == hashlib.sha256(raw).hexdigest()
    assert answer["size_bytes"] == len(raw)


def test_it_creates_the_task_on_its_first_checkpoint(agent_client: APIClient) -> None:
    _save_first(agent_client)
    task = Task.objects.get(agent=agent_client.agent, task_id="job-1")  # type: ignore[attr-defined]
    assert task.status == "running"
    assert task.last_seq == 1
    assert task.last_checkpoint_at is not None
    assert task.stale_at is None


def test_it_stores_the_checkpoint_compressed_with_its_hash_and_sizes(agent_client: APIClient) -> None:
    _save_first(agent_client)
    raw = canonical(STATE)
    stored = Checkpoint.objects.get(task__task_id="job-1")
    assert stored.seq == 1
    assert stored.encoding == "zlib"
    assert zlib.decompress(bytes(stored.data)) == raw
    assert stored.sha256 == hashlib.sha256(raw).hexdigest()
    assert stored.size_bytes == len(raw)
    assert stored.stored_bytes == len(bytes(stored.data))


def test_it_stores_the_checkpoints_progress_step_and_metadata(agent_client: APIClient) -> None:
    _save_first(agent_client)
    task = Task.objects.get(agent=agent_client.agent, task_id="job-1")  # type: ignore[attr-defined]
    stored = Checkpoint.objects.get(task=task)
    assert (stored.progress, stored.step) == (40, "summarise")
    assert stored.completed_steps == ["fetch", "classify"]
    assert stored.metadata == {"model": "gpt-4o"}
    assert stored.created_at == task.last_checkpoint_at


def test_it_counts_written_checkpoints_and_their_bytes(agent_client: APIClient) -> None:
    written, observed = metric("checkpoints_written_total"), metric("checkpoint_bytes_count")
    _save_first(agent_client)
    assert metric("checkpoints_written_total") == written + 1
    assert metric("checkpoint_bytes_count") == observed + 1


def test_it_numbers_checkpoints_one_by_one(agent_client: APIClient) -> None:
    seqs = [save(agent_client, state={"n": n}).json()["seq"] for n in range(3)]
    seqs.append(save(agent_client, state={"n": 3}, expected_seq=3).json()["seq"])

    assert seqs == [1, 2, 3, 4]
    task = Task.objects.get()
    assert task.last_seq == 4
    assert list(Checkpoint.objects.order_by("seq").values_list("seq", flat=True)) == [1, 2, 3, 4]


def test_it_refuses_a_writer_whose_expected_seq_is_not_the_latest(agent_client: APIClient) -> None:
    save(agent_client)
    save(agent_client)

    response = save(agent_client, state={"mine": True}, expected_seq=1)

    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "seq_conflict"
    assert "expected_seq is 1" in body["detail"]
    assert "latest checkpoint is 2" in body["detail"]
    assert body["errors"][0]["field"] == "expected_seq"
    task = Task.objects.get()
    assert task.last_seq == 2
    assert Checkpoint.objects.count() == 2


def test_it_creates_nothing_when_a_first_checkpoint_is_refused_for_its_expected_seq(
    agent_client: APIClient,
) -> None:
    # docs/checkpoints.md's own example: a first save that expects seq 6.
    response = save(agent_client, task_id="inbox-42", expected_seq=6)

    assert response.status_code == 409, response.json()
    assert response.json()["code"] == "seq_conflict"
    assert response.json()["errors"][0]["field"] == "expected_seq"
    assert "expected_seq is 6" in response.json()["detail"]
    assert not Task.objects.filter(task_id="inbox-42").exists()
    assert Checkpoint.objects.count() == 0


def test_it_saves_a_first_checkpoint_that_expects_seq_0(agent_client: APIClient) -> None:
    response = save(agent_client, task_id="inbox-42", expected_seq=0)

    assert response.status_code == 201, response.json()
    assert response.json()["seq"] == 1
    task = Task.objects.get(task_id="inbox-42")
    assert task.last_seq == 1


def test_it_hashes_the_canonical_json_whatever_the_key_order(agent_client: APIClient) -> None:
    first = save(agent_client, state={"a": 1, "b": {"y": 2, "x": 1}}).json()
    second = save(agent_client, state={"b": {"x": 1, "y": 2}, "a": 1}).json()

    assert first["sha256"] == second["sha256"]
    assert bytes(Checkpoint.objects.get(seq=1).data) == bytes(Checkpoint.objects.get(seq=2).data)


def test_it_refuses_an_oversized_state_naming_the_limit(agent_client: APIClient) -> None:
    with override_settings(REBOUND=factories.rebound_settings(CHECKPOINT_MAX_BYTES=2048)):
        response = save(agent_client, state={"text": "x" * 3000})

    assert response.status_code == 413
    body = response.json()
    assert "the limit is 2048 bytes" in body["detail"]
    assert body["errors"] == [{"field": "state", "message": body["detail"]}]
    assert not Task.objects.exists()
    assert not Checkpoint.objects.exists()


def test_it_refuses_a_checkpoint_body_past_its_own_limit_before_reading_it(agent_client: APIClient) -> None:
    with override_settings(CHECKPOINT_MAX_BODY_BYTES=10_000):
        response = save(agent_client, state={"text": "x" * 20_000})

    assert response.status_code == 413
    assert "the limit is 10000 bytes" in response.json()["detail"]
    assert not Checkpoint.objects.exists()


def test_it_takes_a_state_larger_than_the_general_body_limit(agent_client: APIClient) -> None:
    state = {"chunks": [f"chunk {n} " + "abcdefghij" * 100 for n in range(1500)]}  # about 1.5 MB

    response = save(agent_client, state=state)

    assert response.status_code == 201, response.content[:300]
    assert response.json()["size_bytes"] == len(canonical(state)) > 1_048_576
    latest = agent_client.get("/api/v1/tasks/job-1/checkpoints/latest")
    assert latest.json()["state"] == state


@pytest.mark.parametrize("body", [b'{"state": {"a": ', b'{"state": NaN}', b"[1, 2]", b"", b"\xff\xfe"])
def test_it_refuses_a_body_that_is_not_a_json_object(agent_client: APIClient, body: bytes) -> None:
    response = agent_client.post("/api/v1/tasks/job-1/checkpoints", body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "body"
    assert not Task.objects.exists()


def test_it_refuses_a_body_that_is_not_sent_as_json(agent_client: APIClient) -> None:
    response = agent_client.post("/api/v1/tasks/job-1/checkpoints", b"state=1", content_type="text/plain")

    assert response.status_code == 415
    assert not Task.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"progress": 10}, "state"),
        ({"state": {}, "progress": 101}, "progress"),
        ({"state": {}, "expected_seq": -1}, "expected_seq"),
        ({"state": {}, "expected_seq": 2**31}, "expected_seq"),  # past what a seq can be
        ({"state": {}, "step": "sum\x00marise"}, "step"),  # PostgreSQL text cannot hold a NUL
        ({"state": {}, "completed_steps": ["fetch\x00"]}, "completed_steps[0]"),
        ({"state": {}, "metadata": {"model\x00": "gpt"}}, "metadata"),
        ({"state": {}, "completed_steps": "fetch"}, "completed_steps"),
        ({"state": {}, "unknown": 1}, "unknown"),
        ({"state": {}, "metadata": {"blob": "x" * 20_000}}, "metadata"),
    ],
)
def test_it_names_the_bad_field(agent_client: APIClient, body: dict[str, Any], field: str) -> None:
    response = agent_client.post("/api/v1/tasks/job-1/checkpoints", body, format="json")

    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == [field]
    assert not Checkpoint.objects.exists()


def test_it_refuses_a_lone_surrogate_in_the_metadata(agent_client: APIClient) -> None:
    body = b'{"state": {}, "metadata": {"model": ["\\ud800"]}}'  # JSON syntax, but no text UTF-8 can hold

    response = agent_client.post("/api/v1/tasks/job-1/checkpoints", body, content_type="application/json")

    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["metadata"]
    assert not Task.objects.exists()


def test_it_refuses_a_bad_task_id(agent_client: APIClient) -> None:
    response = save(agent_client, task_id="-no good")

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "task_id"


def test_it_refuses_checkpoints_of_a_finished_task(agent_client: APIClient) -> None:
    save(agent_client)
    agent_client.post("/api/v1/tasks/job-1/complete", {"status": "succeeded"}, format="json")

    response = save(agent_client)
    beat = agent_client.post("/api/v1/tasks/job-1/heartbeat")

    assert response.status_code == 409
    assert "succeeded" in response.json()["detail"]
    assert beat.status_code == 409
    task = Task.objects.get()
    assert task.last_seq == 1
    assert task.last_heartbeat_at is None
    assert Checkpoint.objects.count() == 1


def test_it_refuses_checkpoints_from_operators(operator_client: APIClient) -> None:
    response = save(operator_client)

    assert response.status_code == 403
    assert not Task.objects.exists()


def test_a_checkpoint_clears_the_stale_mark(agent_client: APIClient) -> None:
    save(agent_client)
    Task.objects.update(stale_at="2026-01-01T00:00:00Z")

    save(agent_client)

    assert Task.objects.get().stale_at is None


# --- reading -----------------------------------------------------------------------------------------------


def test_it_answers_the_newest_checkpoint_with_its_state(agent_client: APIClient) -> None:
    save(agent_client, state={"n": 1})
    save(agent_client, state=STATE, progress=75, step="write")

    response = agent_client.get("/api/v1/tasks/job-1/checkpoints/latest")

    assert response.status_code == 200
    body = response.json()
    assert body["state"] == STATE
    assert body["seq"] == 2
    assert (body["progress"], body["step"]) == (75, "write")
    assert body["skipped_corrupt"] == []
    assert body["sha256"] == hashlib.sha256(canonical(STATE)).hexdigest()


@pytest.mark.parametrize("how", ["data", "sha256"])
def test_the_latest_skips_corrupt_checkpoints_and_says_which(agent_client: APIClient, how: str) -> None:
    for n in range(1, 5):
        save(agent_client, state={"n": n, "text": "some words to compress " * 20})
    task = Task.objects.get()
    corrupt(task, 4, how)
    corrupt(task, 3, how)

    response = agent_client.get("/api/v1/tasks/job-1/checkpoints/latest")

    assert response.status_code == 200
    body = response.json()
    assert body["seq"] == 2
    assert body["state"]["n"] == 2
    assert body["skipped_corrupt"] == [4, 3]


def test_the_latest_of_a_task_without_an_intact_checkpoint_is_a_409(agent_client: APIClient) -> None:
    save(agent_client)
    corrupt(Task.objects.get(), 1)

    response = agent_client.get("/api/v1/tasks/job-1/checkpoints/latest")

    assert response.status_code == 409
    assert response.json()["code"] == "checkpoint_corrupt"
    assert "[1]" in response.json()["detail"]


def test_the_latest_of_a_task_without_checkpoints_is_a_404(agent_client: APIClient) -> None:
    agent_client.post("/api/v1/tasks", {"task_id": "job-1"}, format="json")

    response = agent_client.get("/api/v1/tasks/job-1/checkpoints/latest")

    assert response.status_code == 404


def test_it_reads_an_earlier_checkpoint_by_seq(agent_client: APIClient) -> None:
    save(agent_client, state={"n": 1}, step="one")
    save(agent_client, state={"n": 2}, step="two")

    response = agent_client.get("/api/v1/tasks/job-1/checkpoints/1")

    assert response.status_code == 200
    assert response.json()["state"] == {"n": 1}
    assert response.json()["step"] == "one"
    assert agent_client.get("/api/v1/tasks/job-1/checkpoints/9").status_code == 404


def test_a_corrupt_checkpoint_read_by_seq_is_a_409_that_says_so(agent_client: APIClient) -> None:
    save(agent_client, state={"text": "some words to compress " * 20})
    corrupt(Task.objects.get(), 1)

    response = agent_client.get("/api/v1/tasks/job-1/checkpoints/1")

    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "checkpoint_corrupt"
    assert "Checkpoint 1 is corrupt" in body["detail"]
    assert "latest" in body["detail"]


def test_the_list_gives_metadata_only_and_never_loads_the_data(agent_client: APIClient) -> None:
    for n in range(3):
        save(agent_client, state={"n": n}, progress=n * 10)

    with CaptureQueriesContext(connection) as queries:
        response = agent_client.get("/api/v1/tasks/job-1/checkpoints?page_size=2")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 3
    assert [c["seq"] for c in body["results"]] == [3, 2]
    assert "state" not in body["results"][0]
    assert set(body["results"][0]) >= {"seq", "progress", "step", "sha256", "size_bytes", "created_at"}
    selects = [q["sql"] for q in queries.captured_queries if "recovery_checkpoint" in q["sql"]]
    assert selects
    assert not [sql for sql in selects if '"recovery_checkpoint"."data"' in sql]


# --- who sees what -----------------------------------------------------------------------------------------


def other_agents_task() -> Task:
    other = factories.AgentFactory(name="other-agent")
    task = factories.task(other, "secret-job")
    from recovery.checkpoints import services as checkpoint_services

    checkpoint_services.save_checkpoint(agent=other, task_id="secret-job", state={"secret": True})
    return task


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/tasks/secret-job"),
        ("get", "/api/v1/tasks/secret-job?agent=other-agent"),
        ("get", "/api/v1/tasks/secret-job/checkpoints"),
        ("get", "/api/v1/tasks/secret-job/checkpoints/latest"),
        ("get", "/api/v1/tasks/secret-job/checkpoints/1?agent=other-agent"),
        ("post", "/api/v1/tasks/secret-job/complete"),
        ("post", "/api/v1/tasks/secret-job/checkpoints/1/fork"),
    ],
)
def test_another_agents_task_is_a_404(agent_client: APIClient, method: str, path: str) -> None:
    other_agents_task()
    body = {"status": "failed"} if path.endswith("complete") else {"task_id": "stolen"}

    response = getattr(agent_client, method)(path, body if method == "post" else None, format="json")

    assert response.status_code == 404
    assert "other-agent" not in response.content.decode()
    assert Task.objects.get(task_id="secret-job").status == "running"
    assert not Task.objects.filter(task_id="stolen").exists()


def test_an_agent_listing_another_agents_tasks_gets_a_404(agent_client: APIClient) -> None:
    other_agents_task()
    save(agent_client, task_id="mine-1")

    response = agent_client.get("/api/v1/tasks?agent=other-agent")

    assert response.status_code == 404, response.json()
    assert response.json()["errors"][0]["field"] == "agent"
    assert "secret-job" not in response.content.decode()


def test_an_agent_naming_itself_in_the_list_gets_its_own_tasks(agent_client: APIClient) -> None:
    other_agents_task()
    save(agent_client, task_id="mine-1")
    name = agent_client.agent.name  # type: ignore[attr-defined]

    response = agent_client.get(f"/api/v1/tasks?agent={name}")

    assert response.status_code == 200, response.json()
    assert [t["task_id"] for t in response.json()["results"]] == ["mine-1"]


def test_an_unknown_task_is_a_404(agent_client: APIClient) -> None:
    for path in ("", "/checkpoints", "/checkpoints/latest", "/checkpoints/1"):
        assert agent_client.get(f"/api/v1/tasks/nope{path}").status_code == 404
    assert (
        agent_client.post("/api/v1/tasks/nope/complete", {"status": "failed"}, format="json").status_code
        == 404
    )
    fork = agent_client.post("/api/v1/tasks/nope/checkpoints/1/fork", {"task_id": "x"}, format="json")
    assert fork.status_code == 404
    assert not Task.objects.exists()


def test_an_agent_writing_to_another_agents_task_id_gets_its_own_task(agent_client: APIClient) -> None:
    other = other_agents_task()

    response = save(agent_client, task_id="secret-job", state={"mine": True})

    assert response.status_code == 201
    assert response.json()["seq"] == 1
    other.refresh_from_db()
    assert other.last_seq == 1
    assert Task.objects.filter(task_id="secret-job").count() == 2


def test_humans_read_any_task_by_naming_its_agent(
    operator_client: APIClient, viewer_client: APIClient
) -> None:
    other_agents_task()

    for client in (operator_client, viewer_client):
        task = client.get("/api/v1/tasks/secret-job?agent=other-agent")
        latest = client.get("/api/v1/tasks/secret-job/checkpoints/latest?agent=other-agent")
        assert task.status_code == 200
        assert task.json()["agent"] == "other-agent"
        assert latest.json()["state"] == {"secret": True}
    missing = operator_client.get("/api/v1/tasks/secret-job")
    assert missing.status_code == 400
    assert missing.json()["errors"][0]["field"] == "agent"


# --- tasks -------------------------------------------------------------------------------------------------


def test_it_creates_a_task_idempotently(agent_client: APIClient) -> None:
    first = agent_client.post(
        "/api/v1/tasks", {"task_id": "job-1", "name": "Inbox", "metadata": {"user": "u-1"}}, format="json"
    )
    again = agent_client.post("/api/v1/tasks", {"task_id": "job-1", "name": "Other name"}, format="json")

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["name"] == "Inbox"
    task = Task.objects.get()
    assert (task.name, task.metadata, task.last_seq, task.status) == ("Inbox", {"user": "u-1"}, 0, "running")
    assert task.agent == agent_client.agent  # type: ignore[attr-defined]


def test_it_lists_tasks_an_agent_its_own_and_humans_all(
    agent_client: APIClient, operator_client: APIClient
) -> None:
    other_agents_task()
    save(agent_client, task_id="mine-1", progress=30, step="fetch")
    save(agent_client, task_id="mine-2")
    Task.objects.filter(task_id="mine-2").update(stale_at="2026-01-01T00:00:00Z")

    own = agent_client.get("/api/v1/tasks").json()
    everyone = operator_client.get("/api/v1/tasks").json()
    stale = operator_client.get("/api/v1/tasks?stale=true").json()
    others = operator_client.get("/api/v1/tasks?agent=other-agent&status=running").json()

    assert sorted(t["task_id"] for t in own["results"]) == ["mine-1", "mine-2"]
    mine = next(t for t in own["results"] if t["task_id"] == "mine-1")
    assert (mine["progress"], mine["step"], mine["last_seq"]) == (30, "fetch", 1)
    assert everyone["count"] == 3
    assert [t["task_id"] for t in stale["results"]] == ["mine-2"]
    assert [t["task_id"] for t in others["results"]] == ["secret-job"]


# --- forks -------------------------------------------------------------------------------------------------


def _fork(agent_client: APIClient) -> Any:
    save(agent_client, state={"n": 1}, step="one", progress=10)
    save(agent_client, state={"n": 2}, step="two", progress=20)
    return agent_client.post(
        "/api/v1/tasks/job-1/checkpoints/1/fork", {"task_id": "job-1-again", "name": "Again"}, format="json"
    )


def test_it_forks_a_checkpoint_into_a_new_task_of_the_agent(agent_client: APIClient) -> None:
    response = _fork(agent_client)
    source = Checkpoint.objects.get(seq=1, task__task_id="job-1")

    assert response.status_code == 201, response.json()
    assert response.json()["forked_from"] == {"task_id": "job-1", "seq": 1}
    child = Task.objects.get(task_id="job-1-again")
    assert child.agent == agent_client.agent  # type: ignore[attr-defined]
    assert (child.name, child.status, child.last_seq) == ("Again", "running", 1)
    assert child.forked_from == source
    assert child.last_checkpoint_at is not None


def test_it_copies_the_forked_checkpoint_as_the_new_tasks_first(agent_client: APIClient) -> None:
    _fork(agent_client)
    source = Checkpoint.objects.get(seq=1, task__task_id="job-1")
    copy = Checkpoint.objects.get(task__task_id="job-1-again")
    assert copy.seq == 1
    assert bytes(copy.data) == bytes(source.data)
    assert (copy.sha256, copy.size_bytes, copy.step, copy.progress) == (
        source.sha256,
        source.size_bytes,
        "one",
        10,
    )


def test_it_lets_a_forked_task_read_its_state_and_take_the_next_checkpoint(agent_client: APIClient) -> None:
    _fork(agent_client)
    assert agent_client.get("/api/v1/tasks/job-1-again/checkpoints/latest").json()["state"] == {"n": 1}
    assert save(agent_client, task_id="job-1-again", expected_seq=1).json()["seq"] == 2


def test_it_does_not_audit_an_agents_own_fork(agent_client: APIClient) -> None:
    _fork(agent_client)
    assert not AuditEvent.objects.filter(
        action__startswith="task."
    ).exists()  # an agent's own fork is its work, not a human action


def test_a_fork_needs_a_new_id_and_an_intact_checkpoint(agent_client: APIClient) -> None:
    save(agent_client, state={"text": "some words to compress " * 20})
    save(agent_client)

    taken = agent_client.post("/api/v1/tasks/job-1/checkpoints/1/fork", {"task_id": "job-1"}, format="json")
    corrupt(Task.objects.get(), 1)
    broken = agent_client.post("/api/v1/tasks/job-1/checkpoints/1/fork", {"task_id": "job-2"}, format="json")

    assert taken.status_code == 409
    assert taken.json()["errors"][0]["field"] == "task_id"
    assert broken.status_code == 409
    assert broken.json()["code"] == "checkpoint_corrupt"
    assert Task.objects.count() == 1


def test_an_operators_fork_needs_a_reason_and_is_audited(
    agent_client: APIClient, operator_client: APIClient
) -> None:
    save(agent_client)
    name = agent_client.agent.name  # type: ignore[attr-defined]
    path = f"/api/v1/tasks/job-1/checkpoints/1/fork?agent={name}"

    refused = operator_client.post(path, {"task_id": "job-2"}, format="json")
    done = operator_client.post(path, {"task_id": "job-2", "reason": "replay for INC-7"}, format="json")

    assert refused.status_code == 400
    assert refused.json()["errors"][0]["field"] == "reason"
    assert done.status_code == 201
    child = Task.objects.get(task_id="job-2")
    assert child.agent == agent_client.agent  # type: ignore[attr-defined]
    event = AuditEvent.objects.get(action__startswith="task.")
    assert (event.action, event.reason, event.target_id) == ("task.fork", "replay for INC-7", str(child.pk))
    assert event.actor_user == operator_client.user  # type: ignore[attr-defined]


# --- heartbeats and completion -----------------------------------------------------------------------------


def test_a_heartbeat_marks_the_task_alive(agent_client: APIClient) -> None:
    save(agent_client)
    Task.objects.update(stale_at="2026-01-01T00:00:00Z")

    response = agent_client.post("/api/v1/tasks/job-1/heartbeat")

    assert response.status_code == 200
    task = Task.objects.get()
    assert task.last_heartbeat_at is not None
    assert task.stale_at is None
    assert task.last_seq == 1
    assert response.json()["last_heartbeat_at"] is not None


def test_a_heartbeat_creates_the_task_on_first_use(agent_client: APIClient) -> None:
    response = agent_client.post("/api/v1/tasks/job-9/heartbeat")

    assert response.status_code == 200
    task = Task.objects.get(task_id="job-9")
    assert (task.status, task.last_seq) == ("running", 0)
    assert task.last_heartbeat_at is not None


def _complete_three_times(agent_client: APIClient) -> tuple[Any, Any, Any]:
    save(agent_client)

    done = agent_client.post(
        "/api/v1/tasks/job-1/complete", {"status": "failed", "reason": "quota"}, format="json"
    )
    again = agent_client.post("/api/v1/tasks/job-1/complete", {"status": "failed"}, format="json")
    other = agent_client.post("/api/v1/tasks/job-1/complete", {"status": "succeeded"}, format="json")
    return done, again, other


def test_it_completes_a_running_task_once(agent_client: APIClient) -> None:
    done, again, other = _complete_three_times(agent_client)

    assert done.status_code == 200
    assert done.json()["changed"] is True
    assert again.status_code == 200
    assert again.json()["changed"] is False
    assert other.status_code == 409
    assert "already ended as failed" in other.json()["detail"]


def test_it_keeps_the_first_completion_with_its_reason_unaudited(agent_client: APIClient) -> None:
    _complete_three_times(agent_client)
    task = Task.objects.get()
    assert task.status == "failed"
    assert task.finished_at is not None
    assert task.metadata == {"completion_reason": "quota"}
    assert not AuditEvent.objects.filter(action__startswith="task.").exists()


def test_it_refuses_an_unknown_final_status(agent_client: APIClient) -> None:
    save(agent_client)

    response = agent_client.post("/api/v1/tasks/job-1/complete", {"status": "running"}, format="json")

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "status"
    assert Task.objects.get().status == "running"


def test_an_operator_abandons_a_task_with_a_reason_audited(
    agent_client: APIClient, operator_client: APIClient
) -> None:
    save(agent_client)
    path = f"/api/v1/tasks/job-1/complete?agent={agent_client.agent.name}"  # type: ignore[attr-defined]

    refused = operator_client.post(path, {"status": "abandoned"}, format="json")
    done = operator_client.post(path, {"status": "abandoned", "reason": "customer cancelled"}, format="json")

    assert refused.status_code == 400
    assert refused.json()["errors"][0]["field"] == "reason"
    assert done.status_code == 200
    task = Task.objects.get()
    assert task.status == "abandoned"
    assert task.finished_at is not None
    event = AuditEvent.objects.get(action__startswith="task.")
    assert (event.action, event.reason, event.source) == ("task.complete", "customer cancelled", "api")
    assert (event.before, event.after) == ({"status": "running"}, {"status": "abandoned"})

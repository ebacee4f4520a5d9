"""The transactions API: opening, recording steps, commit and rollback requests, who sees what, bad input."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from core.audit.models import AuditEvent
from recovery.breakers.models import Service
from recovery.checkpoints.models import Task
from recovery.decisions import policies
from recovery.decisions.models import RetryPolicy
from recovery.sagas.models import Transaction, TransactionStep
from tests.support import factories

pytestmark = pytest.mark.django_db

URL = "http://127.0.0.1:8099/undo"


@pytest.fixture(autouse=True)
def allow_local_target() -> Iterator[None]:
    with override_settings(REBOUND=factories.rebound_settings(OUTBOUND_ALLOWED_HOSTS=["127.0.0.1:8099"])):
        policies.forget()
        yield
    policies.forget()


def open_one(client: APIClient, **body: Any) -> dict[str, Any]:
    response = client.post(
        "/api/v1/transactions", {"name": "order-1", "deadline_s": 600, **body}, format="json"
    )
    assert response.status_code == 201, response.json()
    return response.json()  # type: ignore[no-any-return]


def http(**request: Any) -> dict[str, Any]:
    return {"kind": "http", "request": {"method": "POST", "url": URL, **request}}


def step_body(key: str = "k1", **fields: Any) -> dict[str, Any]:
    return {"name": f"step {key}", "idempotency_key": key, "compensation": http(body={"key": key}), **fields}


def post_step(client: APIClient, txn_id: str, body: dict[str, Any]) -> Any:
    return client.post(f"/api/v1/transactions/{txn_id}/steps", body, format="json")


def errors_of(response: Any) -> list[str]:
    return [e["field"] for e in response.json()["errors"]]


# --- opening ------------------------------------------------------------------------------------------------


def test_it_opens_a_transaction_for_the_agents_own_task(agent_client: APIClient) -> None:
    task = Task.objects.create(agent=agent_client.agent, task_id="job-7", started_at=timezone.now())  # type: ignore[attr-defined]
    before = timezone.now()

    body = open_one(agent_client, task_id="job-7", deadline_s=600)

    txn = Transaction.objects.get(pk=body["id"])
    assert txn.agent == agent_client.agent and txn.created_by is None  # type: ignore[attr-defined]
    assert txn.task == task and txn.name == "order-1" and txn.status == "open"
    assert before + timedelta(seconds=599) < txn.deadline_at < timezone.now() + timedelta(seconds=601)  # type: ignore[operator]
    assert body["status"] == "open" and body["task_id"] == "job-7" and body["step_count"] == 0
    assert body["agent"] == agent_client.agent.name  # type: ignore[attr-defined]


def test_it_takes_a_deadline_as_a_date(operator_client: APIClient) -> None:
    deadline = timezone.now() + timedelta(hours=2)
    body = open_one(operator_client, deadline_s=None, deadline_at=deadline.isoformat())
    txn = Transaction.objects.get(pk=body["id"])
    assert txn.deadline_at == deadline and txn.agent is None
    assert txn.created_by == operator_client.user  # type: ignore[attr-defined]
    assert body["created_by"] == operator_client.user.username  # type: ignore[attr-defined]


def test_it_answers_404_for_a_task_the_agent_does_not_have(agent_client: APIClient) -> None:
    other, _ = factories.agent_key()
    Task.objects.create(agent=other, task_id="theirs", started_at=timezone.now())
    response = agent_client.post(
        "/api/v1/transactions", {"name": "x", "task_id": "theirs", "deadline_s": 60}, format="json"
    )
    assert response.status_code == 404 and errors_of(response) == ["task_id"]
    assert not Transaction.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x"}, "body"),
        ({"name": "x", "deadline_s": 60, "deadline_at": "2030-01-01T00:00:00Z"}, "body"),
        ({"name": "x", "deadline_s": -1}, "deadline_s"),
        ({"name": "x", "deadline_at": "2001-01-01T00:00:00Z"}, "deadline_at"),
        ({"name": "x", "deadline_at": "2030-01-01T00:00:00"}, "deadline_at"),
        ({"name": "x", "deadline_s": 10**9}, "deadline_s"),
        ({"name": "x", "deadline_s": 1e12}, "deadline_s"),  # past the last date a datetime holds
        ({"name": "x", "deadline_s": 1e308}, "deadline_s"),
        ({"name": "x", "deadline_at": "9999-12-31T23:59:59Z"}, "deadline_at"),
        ({"name": "", "deadline_s": 60}, "name"),
        ({"name": "x", "deadline_s": 60, "colour": "red"}, "colour"),
    ],
)
def test_it_refuses_a_bad_transaction_naming_the_field(
    agent_client: APIClient, body: dict[str, Any], field: str
) -> None:
    response = agent_client.post("/api/v1/transactions", body, format="json")
    assert response.status_code == 400, response.json()
    assert field in errors_of(response)
    assert not Transaction.objects.exists()


def test_it_lets_viewers_read_but_not_open(viewer_client: APIClient, agent_client: APIClient) -> None:
    open_one(agent_client)
    assert (
        viewer_client.post("/api/v1/transactions", {"name": "x", "deadline_s": 60}, format="json").status_code
        == 403
    )
    assert viewer_client.get("/api/v1/transactions").json()["count"] == 1
    txn_id = Transaction.objects.get().pk
    assert viewer_client.get(f"/api/v1/transactions/{txn_id}").status_code == 200
    refused = viewer_client.post(f"/api/v1/transactions/{txn_id}/rollback", {"reason": "x"}, format="json")
    assert refused.status_code == 403
    assert Transaction.objects.get().status == "open"


# --- who sees what -------------------------------------------------------------------------------------------


def test_it_hides_another_agents_transaction_behind_a_404(agent_client: APIClient) -> None:
    _, key = factories.agent_key()
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    txn_id = open_one(other)["id"]
    base = f"/api/v1/transactions/{txn_id}"

    assert agent_client.get(base).status_code == 404
    assert post_step(agent_client, txn_id, step_body()).status_code == 404
    assert agent_client.post(f"{base}/commit").status_code == 404
    assert agent_client.post(f"{base}/rollback", {"reason": "x"}, format="json").status_code == 404
    assert agent_client.get("/api/v1/transactions").json()["count"] == 0
    assert agent_client.get(f"/api/v1/transactions/{uuid.uuid4()}").status_code == 404
    assert agent_client.get("/api/v1/transactions/not-a-uuid").status_code == 404
    assert Transaction.objects.get().status == "open" and not TransactionStep.objects.exists()


def _three_transactions(agent_client: APIClient, operator_client: APIClient) -> tuple[str, str, str]:
    """An agent's "refund flow" (task job-1) and committed "booking", and an operator's own: their ids."""
    Task.objects.create(agent=agent_client.agent, task_id="job-1", started_at=timezone.now())  # type: ignore[attr-defined]
    first = open_one(agent_client, name="refund flow", task_id="job-1")
    second = open_one(agent_client, name="booking")
    agent_client.post(f"/api/v1/transactions/{second['id']}/commit")
    theirs = open_one(operator_client, name="operator's")
    return first["id"], second["id"], theirs["id"]


def _listed(client: APIClient, query: str = "") -> list[str]:
    response = client.get(f"/api/v1/transactions{query}")
    assert response.status_code == 200, response.json()
    return [t["id"] for t in response.json()["results"]]


def test_it_lists_an_agent_its_transactions_and_an_operator_all_newest_first(
    agent_client: APIClient, operator_client: APIClient
) -> None:
    first, second, theirs = _three_transactions(agent_client, operator_client)
    assert _listed(agent_client) == [second, first]
    assert _listed(operator_client) == [theirs, second, first]


def test_it_filters_transactions_by_status_name_task_and_needing_a_human(
    agent_client: APIClient, operator_client: APIClient
) -> None:
    first, second, _ = _three_transactions(agent_client, operator_client)
    assert _listed(agent_client, "?status=committed") == [second]
    assert _listed(agent_client, "?name=REFUND") == [first]
    assert _listed(agent_client, "?task_id=job-1") == [first]
    assert _listed(agent_client, "?needs_human=true") == []
    assert _listed(agent_client, "?needs_human=false") == [second, first]


def test_it_filters_transactions_by_since_and_refuses_an_unknown_status(
    agent_client: APIClient, operator_client: APIClient
) -> None:
    _three_transactions(agent_client, operator_client)
    assert _listed(operator_client, f"?since={timezone.now().isoformat().replace('+00:00', 'Z')}") == []
    bad = agent_client.get("/api/v1/transactions?status=lost")
    assert bad.status_code == 400 and errors_of(bad) == ["status"]


# --- steps ---------------------------------------------------------------------------------------------------


def _record_three_steps(agent_client: APIClient) -> tuple[str, Any, Any, Any]:
    """An HTTP step with a secret header, a task step with the "transient" policy and a step with nothing to undo."""
    txn_id = open_one(agent_client)["id"]
    first = post_step(
        agent_client,
        txn_id,
        step_body("k1", compensation=http(headers={"Authorization": "Bearer s3cret", "X-Trace": "t1"})),
    )
    second = post_step(
        agent_client,
        txn_id,
        {
            "name": "stock",
            "idempotency_key": "k2",
            "compensation": {"kind": "task", "task": {"name": "recovery.demo_tasks.echo", "args": [1]}},
            "policy": "transient",
        },
    )
    third = post_step(
        agent_client, txn_id, {"name": "read", "idempotency_key": "k3", "compensation": {"kind": "none"}}
    )
    return txn_id, first, second, third


def test_it_records_steps_in_order_with_their_compensations_and_policies(agent_client: APIClient) -> None:
    _, first, second, third = _record_three_steps(agent_client)

    assert (first.status_code, second.status_code, third.status_code) == (201, 201, 201)
    steps = list(TransactionStep.objects.order_by("seq"))
    assert [(s.seq, s.idempotency_key, s.compensation_kind) for s in steps] == [
        (1, "k1", "http"),
        (2, "k2", "task"),
        (3, "k3", "none"),
    ]
    assert steps[0].compensation["headers"] == {"Authorization": "Bearer s3cret", "X-Trace": "t1"}
    assert steps[0].compensation["url"] == URL and steps[0].policy is None and steps[0].policy_snapshot == {}
    assert steps[1].compensation == {"name": "recovery.demo_tasks.echo", "args": [1], "kwargs": {}}
    assert steps[1].policy == RetryPolicy.objects.get(name="transient")
    assert steps[1].policy_snapshot["max_attempts"] == 3 and steps[1].policy_snapshot["name"] == "transient"
    assert all(s.status == "done" and s.attempts == 0 for s in steps)


def test_it_hides_secrets_in_the_answer_to_a_recorded_step(agent_client: APIClient) -> None:
    _, first, _, _ = _record_three_steps(agent_client)
    assert first.json()["compensation"]["request"]["headers"] == {
        "Authorization": "[redacted]",
        "X-Trace": "t1",
    }


def test_it_shows_a_transactions_steps_in_order_with_secrets_hidden(agent_client: APIClient) -> None:
    txn_id, _, _, _ = _record_three_steps(agent_client)
    detail = agent_client.get(f"/api/v1/transactions/{txn_id}").json()
    assert [s["seq"] for s in detail["steps"]] == [1, 2, 3]
    assert detail["steps"][0]["compensation"]["request"]["headers"]["Authorization"] == "[redacted]"
    assert detail["steps"][1]["policy"] == "transient"
    assert detail["steps"][2]["compensation"] == {"kind": "none"}
    assert all(s["compensation_attempts"] == [] for s in detail["steps"])
    assert "s3cret" not in str(detail)


def test_it_answers_the_stored_step_for_the_same_key_and_409_for_another(agent_client: APIClient) -> None:
    txn_id = open_one(agent_client)["id"]
    created = post_step(agent_client, txn_id, step_body("k1"))
    again = post_step(agent_client, txn_id, step_body("k1"))
    changed = post_step(agent_client, txn_id, step_body("k1", name="something else"))
    other_target = post_step(agent_client, txn_id, step_body("k1", compensation=http(body={"key": "other"})))

    assert created.status_code == 201 and again.status_code == 200
    assert again.json() == created.json()
    assert changed.status_code == 409 and errors_of(changed) == ["idempotency_key"]
    assert other_target.status_code == 409
    assert TransactionStep.objects.count() == 1


def test_it_records_steps_only_while_open(agent_client: APIClient) -> None:
    txn_id = open_one(agent_client)["id"]
    post_step(agent_client, txn_id, step_body("k1"))
    assert agent_client.post(f"/api/v1/transactions/{txn_id}/commit").status_code == 200

    late = post_step(agent_client, txn_id, step_body("k2"))
    replay = post_step(agent_client, txn_id, step_body("k1"))

    assert late.status_code == 409 and "committed" in late.json()["detail"]
    assert replay.status_code == 200  # an agent retrying its own earlier request still gets its answer
    assert list(TransactionStep.objects.values_list("idempotency_key", flat=True)) == ["k1"]


@pytest.mark.parametrize(
    ("compensation", "field"),
    [
        ({"kind": "http", "request": {"url": "http://169.254.169.254/latest"}}, "compensation.request.url"),
        ({"kind": "http", "request": {"url": "http://example.com/undo"}}, "compensation.request.url"),
        ({"kind": "http", "request": {"url": URL, "method": "BREW"}}, "compensation.request.method"),
        ({"kind": "http", "request": {"url": URL, "headers": {"Host": "x"}}}, "compensation.request.headers"),
        (
            {"kind": "http", "request": {"url": URL, "headers": {"idempotency-key": "mine"}}},
            "compensation.request.headers",
        ),
        ({"kind": "http"}, "compensation.request"),
        ({"kind": "http", "request": {"url": URL}, "extra": 1}, "compensation.extra"),
        ({"kind": "task", "task": {"name": "os.system", "args": ["rm -rf /"]}}, "compensation.task.name"),
        (
            {"kind": "task", "task": {"name": "recovery.demo_tasks.echo", "args": "x"}},
            "compensation.task.args",
        ),
        (
            {
                "kind": "task",
                "task": {"name": "recovery.demo_tasks.echo", "kwargs": {"idempotency_key": "x"}},
            },
            "compensation.task.kwargs",
        ),
        ({"kind": "email"}, "compensation.kind"),
        ({}, "compensation.kind"),
    ],
)
def test_it_refuses_a_compensation_it_could_not_run_naming_the_field(
    agent_client: APIClient, compensation: dict[str, Any], field: str
) -> None:
    txn_id = open_one(agent_client)["id"]
    response = post_step(
        agent_client, txn_id, {"name": "s", "idempotency_key": "k", "compensation": compensation}
    )
    assert response.status_code == 400, response.json()
    assert field in errors_of(response)
    assert not TransactionStep.objects.exists()


@pytest.mark.parametrize(
    ("task", "field", "words"),
    [
        (
            {"name": "recovery.demo_tasks.flaky", "kwargs": {"failures": 1}},
            "compensation.task.kwargs",
            "'key'",
        ),
        (
            {"name": "recovery.demo_tasks.flaky", "kwargs": {"key": "k", "colour": 1}},
            "compensation.task.kwargs",
            "colour",
        ),
        (
            {"name": "recovery.demo_tasks.flaky", "args": ["k", 1, "ValueError", 2, 3]},
            "compensation.task.args",
            "positional",
        ),
    ],
)
def test_it_refuses_a_task_compensation_whose_arguments_do_not_fit_its_signature(
    agent_client: APIClient, task: dict[str, Any], field: str, words: str
) -> None:
    txn_id = open_one(agent_client)["id"]

    response = post_step(
        agent_client,
        txn_id,
        {"name": "s", "idempotency_key": "k", "compensation": {"kind": "task", "task": task}},
    )

    assert response.status_code == 400, response.json()
    error = next(e for e in response.json()["errors"] if e["field"] == field)
    assert words in error["message"]
    assert not TransactionStep.objects.exists()


def test_it_records_a_task_compensation_whose_arguments_fit_its_signature(agent_client: APIClient) -> None:
    txn_id = open_one(agent_client)["id"]
    task = {"name": "recovery.demo_tasks.flaky", "args": ["k"], "kwargs": {"failures": 0}}

    response = post_step(
        agent_client,
        txn_id,
        {"name": "s", "idempotency_key": "k", "compensation": {"kind": "task", "task": task}},
    )

    assert response.status_code == 201, response.json()
    assert TransactionStep.objects.get().compensation == {**task, "name": "recovery.demo_tasks.flaky"}


def test_it_refuses_an_unknown_policy_and_a_step_without_a_key(agent_client: APIClient) -> None:
    txn_id = open_one(agent_client)["id"]
    unknown = post_step(agent_client, txn_id, step_body(policy="never heard of it"))
    keyless = post_step(agent_client, txn_id, {"name": "s", "compensation": {"kind": "none"}})
    assert unknown.status_code == 400 and errors_of(unknown) == ["policy"]
    assert keyless.status_code == 400 and errors_of(keyless) == ["idempotency_key"]
    assert not TransactionStep.objects.exists()


def test_it_snapshots_the_named_policy_as_it_was_when_the_step_was_recorded(agent_client: APIClient) -> None:
    service = Service.objects.create(name="billing")
    policy = RetryPolicy.objects.create(name="billing", service=service, max_attempts=5)
    txn_id = open_one(agent_client)["id"]
    post_step(agent_client, txn_id, step_body(policy="billing"))
    RetryPolicy.objects.filter(pk=policy.pk).update(max_attempts=1)
    step = TransactionStep.objects.get()
    assert step.policy == policy and step.policy_snapshot["max_attempts"] == 5


# --- commit and rollback -------------------------------------------------------------------------------------


def test_it_commits_once(agent_client: APIClient) -> None:
    txn_id = open_one(agent_client)["id"]
    before = REGISTRY.get_sample_value("transactions_total", {"outcome": "committed"}) or 0.0

    first = agent_client.post(f"/api/v1/transactions/{txn_id}/commit")
    again = agent_client.post(f"/api/v1/transactions/{txn_id}/commit")
    rollback = agent_client.post(
        f"/api/v1/transactions/{txn_id}/rollback", {"reason": "too late"}, format="json"
    )

    assert first.status_code == 200 and first.json()["status"] == "committed"
    assert again.status_code == 200 and again.json()["finished_at"] == first.json()["finished_at"]
    assert rollback.status_code == 409
    txn = Transaction.objects.get()
    assert txn.status == "committed" and txn.finished_at is not None and txn.rollback_reason == ""
    assert not AuditEvent.objects.filter(action__startswith="transaction.").exists()
    # Counted when the database transaction commits: in this test it never does.
    assert (REGISTRY.get_sample_value("transactions_total", {"outcome": "committed"}) or 0.0) == before


def test_it_audits_an_operator_committing_an_agents_transaction(
    agent_client: APIClient, operator_client: APIClient
) -> None:
    txn_id = open_one(agent_client)["id"]
    assert operator_client.post(f"/api/v1/transactions/{txn_id}/commit").status_code == 200
    event = AuditEvent.objects.get(action="transaction.commit")
    assert event.actor_user == operator_client.user and event.target_id == txn_id  # type: ignore[attr-defined]


def test_it_starts_one_rollback_and_answers_the_state_to_the_next_request(agent_client: APIClient) -> None:
    txn_id = open_one(agent_client)["id"]
    post_step(agent_client, txn_id, step_body("k1"))
    url = f"/api/v1/transactions/{txn_id}/rollback"

    first = agent_client.post(url, {"reason": "payment refused"}, format="json")
    second = agent_client.post(url, {"reason": "me too"}, format="json")

    assert first.status_code == 202 and first.json()["status"] == "rolling_back"
    assert second.status_code == 202 and second.json()["rollback_reason"] == "payment refused"
    txn = Transaction.objects.get()
    assert txn.status == "rolling_back" and txn.fence and txn.rollback_reason == "payment refused"
    assert AuditEvent.objects.filter(action="transaction.rollback").count() == 1
    assert post_step(agent_client, txn_id, step_body("k2")).status_code == 409
    assert agent_client.post(f"/api/v1/transactions/{txn_id}/commit").status_code == 409
    Transaction.objects.filter(pk=txn_id).update(status="rolled_back", finished_at=timezone.now())
    ended = agent_client.post(url, {"reason": "again"}, format="json")
    assert ended.status_code == 200 and ended.json()["status"] == "rolled_back"


def test_it_requires_a_reason_to_roll_back(agent_client: APIClient) -> None:
    txn_id = open_one(agent_client)["id"]
    for body in ({}, {"reason": "   "}):
        response = agent_client.post(f"/api/v1/transactions/{txn_id}/rollback", body, format="json")
        assert response.status_code == 400 and errors_of(response) == ["reason"]
    assert Transaction.objects.get().status == "open"

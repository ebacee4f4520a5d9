"""retry_operation, called as the SDK calls it minus the transport: the plain tool function with a verified caller.
Creating a job does what POST /api/v1/retries does (the same rows, the same idempotency), reading one answers what
GET /api/v1/retries/{id} answers, and the errors name the tool's arguments."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from core.api.errors import Forbidden, InvalidInput, NotFound
from mcp_server import callers
from mcp_server.tools.retries import retry_operation
from recovery.retries import services as retry_services
from recovery.retries.models import RetryJob
from tests.support import factories
from tests.support.http_target import Target, running_target
from tests.support.mcp_calls import through_sdk

pytestmark = pytest.mark.django_db


@pytest.fixture
def target() -> Iterator[Target]:
    with (
        running_target() as server,
        override_settings(REBOUND=factories.rebound_settings(OUTBOUND_ALLOWED_HOSTS=[server.host])),
    ):
        yield server


@pytest.fixture(autouse=True)
def queued(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """The attempts the service enqueues, recorded instead of sent: these tests look at the job, not its run."""
    sent: list[tuple[str, int]] = []
    monkeypatch.setattr(
        retry_services, "enqueue", lambda job_id, number, *_: sent.append((str(job_id), number))
    )
    return sent


def job_args(target: Target, **changes: Any) -> dict[str, Any]:
    return {
        "service": "billing",
        "operation": "create_invoice",
        "kind": "http",
        "request": {
            "method": "POST",
            "url": target.url("/invoices"),
            "headers": {"Authorization": "Bearer sk-live-secret"},
            "body": {"amount": 42},
        },
        "idempotency_key": "invoice-42",
        **changes,
    }


def test_it_creates_an_http_job_owned_by_the_agent(agent_caller: callers.Caller, target: Target) -> None:
    out = retry_operation(agent_caller, **job_args(target))

    job = RetryJob.objects.get()
    assert out.created is True
    assert str(out.job.id) == str(job.pk)
    assert (job.agent, job.created_by, job.state, job.kind, job.idempotency_key) == (
        agent_caller.agent,
        None,
        "pending",
        "http",
        "invoice-42",
    )
    assert job.request["headers"]["Authorization"] == "Bearer sk-live-secret"
    assert (
        out.job.request is not None and out.job.request["headers"]["Authorization"] != "Bearer sk-live-secret"
    )


def test_it_answers_the_same_job_to_the_same_idempotency_key(
    agent_caller: callers.Caller, target: Target
) -> None:
    first = retry_operation(agent_caller, **job_args(target))
    again = retry_operation(agent_caller, **job_args(target))

    assert (first.created, again.created) == (True, False)
    assert again.job.id == first.job.id
    assert RetryJob.objects.count() == 1


def test_it_reads_a_job_as_the_rest_api_answers_it(target: Target) -> None:
    _, key = factories.agent_key()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    created = client.post("/api/v1/retries", job_args(target), format="json")
    assert created.status_code == 201, created.json()
    job_id = created.json()["id"]

    out = retry_operation(callers.authenticate(key), job_id=job_id)

    assert out.created is None
    assert out.job.model_dump(mode="json") == client.get(f"/api/v1/retries/{job_id}").json()


def test_it_does_not_show_an_agent_another_agents_job(agent_caller: callers.Caller, target: Target) -> None:
    _, other_key = factories.agent_key()
    theirs = retry_operation(callers.authenticate(other_key), **job_args(target))

    with pytest.raises(NotFound) as refused:
        retry_operation(agent_caller, job_id=str(theirs.job.id))
    assert refused.value.field == "job_id"


def test_it_answers_not_found_naming_job_id_for_a_job_id_that_is_no_uuid(
    agent_caller: callers.Caller,
) -> None:
    with pytest.raises(NotFound) as refused:
        retry_operation(agent_caller, job_id="not-a-uuid")
    assert refused.value.field == "job_id"


def test_it_refuses_a_viewer_creating_a_job(viewer_caller: callers.Caller, target: Target) -> None:
    with pytest.raises(Forbidden):
        retry_operation(viewer_caller, **job_args(target))
    assert RetryJob.objects.count() == 0


def test_it_refuses_job_id_with_a_job_to_create(agent_caller: callers.Caller) -> None:
    with pytest.raises(InvalidInput) as refused:
        retry_operation(agent_caller, job_id="0d5c3a4e-8f1b-4c2d-9e7a-6b5c4d3e2f1a", service="billing")
    assert refused.value.field == "job_id"
    assert RetryJob.objects.count() == 0


def test_it_names_request_url_for_a_host_outside_the_allowlist_as_the_rest_api_does(
    agent_caller: callers.Caller, agent_client: APIClient, target: Target
) -> None:
    args = job_args(target)
    args["request"] = {**args["request"], "url": "https://billing.elsewhere.example/invoices"}

    with pytest.raises(InvalidInput) as refused:
        retry_operation(agent_caller, **args)

    rest = agent_client.post("/api/v1/retries", args, format="json")
    assert rest.status_code == 400
    assert (
        [e["field"] for e in refused.value.errors]
        == [e["field"] for e in rest.json()["errors"]]
        == ["request.url"]
    )
    assert RetryJob.objects.count() == 0


def test_it_takes_json_arguments_as_the_sdk_validates_them(
    agent_caller: callers.Caller, target: Target
) -> None:
    content = through_sdk(agent_caller, "retry_operation", job_args(target))

    job = RetryJob.objects.get()
    assert (content["created"], content["job"]["id"], content["job"]["state"]) == (
        True,
        str(job.pk),
        "pending",
    )
    assert content["job"]["request"]["headers"]["Authorization"] != "Bearer sk-live-secret"

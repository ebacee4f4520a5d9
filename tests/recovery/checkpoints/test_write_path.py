"""The checkpoint write's hot path (issue 17): one statement per save, the body parsed once and its state stored
exactly (nulls included, with no NaN search on a parsed state), and `api.hot_save`, the handler a plain-case
lane in front of the view calls with the raw body, answering as the view does."""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework import exceptions
from rest_framework.test import APIClient

from core.access.authentication import AgentPrincipal
from core.api.errors import InvalidInput
from recovery.checkpoints import api
from recovery.checkpoints.models import Checkpoint, Task
from tests.support import factories

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

STATE = {
    "messages": [{"role": "user", "content": "Résumé", "tool": None}],
    "cursor": None,
    "n": [1, None, 2.5],
}


def canonical(state: Any) -> bytes:
    return orjson.dumps(state, option=orjson.OPT_SORT_KEYS)


@dataclass
class LaneRequest:
    """What a lane hands a handler: the principal, and the body as it came (bytes)."""

    user: Any
    data: Any


def test_it_saves_a_checkpoint_of_a_running_task_over_http_in_one_statement(agent_client: APIClient) -> None:
    first = agent_client.post("/api/v1/tasks/job-1/checkpoints", {"state": {"n": 0}}, format="json")
    assert first.status_code == 201, first.json()

    with CaptureQueriesContext(connection) as queries:
        response = agent_client.post(
            "/api/v1/tasks/job-1/checkpoints", {"state": STATE, "expected_seq": 1}, format="json"
        )

    assert response.status_code == 201, response.json()
    assert len(queries.captured_queries) == 1, [q["sql"][:120] for q in queries.captured_queries]
    assert "INSERT INTO" in queries.captured_queries[0]["sql"]
    task = Task.objects.get(task_id="job-1")
    assert task.last_seq == 2
    assert Checkpoint.objects.get(task=task, seq=2).sha256 == hashlib.sha256(canonical(STATE)).hexdigest()


def test_it_stores_a_state_with_nulls_sent_over_http_byte_for_byte(agent_client: APIClient) -> None:
    body = b'{"state": {"n": [1, null, 2.5], "cursor": null, "messages": [{"tool": null, "role": "user", '
    body += b'"content": "R\\u00e9sum\\u00e9"}]}}'

    response = agent_client.post("/api/v1/tasks/job-1/checkpoints", body, content_type="application/json")

    assert response.status_code == 201, response.json()
    stored = Checkpoint.objects.get(task__task_id="job-1", seq=1)
    assert zlib.decompress(bytes(stored.data)) == canonical(STATE)
    assert stored.size_bytes == len(canonical(STATE))
    latest = agent_client.get("/api/v1/tasks/job-1/checkpoints/latest").json()
    assert latest["state"] == STATE


def test_it_answers_the_lane_handler_with_the_views_answer_and_stores_the_checkpoint(
    agent_client: APIClient,
) -> None:
    agent = agent_client.agent  # type: ignore[attr-defined]
    raw = orjson.dumps({"state": STATE, "progress": 40, "step": "summarise"})
    view = agent_client.post("/api/v1/tasks/job-1/checkpoints", raw, content_type="application/json").json()

    status, answer = api.hot_save(LaneRequest(AgentPrincipal(agent), raw), "job-1")

    assert status == 201
    assert set(answer) == set(view)
    assert answer["seq"] == view["seq"] + 1 == 2
    assert answer["sha256"] == view["sha256"] == hashlib.sha256(canonical(STATE)).hexdigest()
    stored = Checkpoint.objects.get(task__agent=agent, task__task_id="job-1", seq=2)
    assert (stored.progress, stored.step) == (40.0, "summarise")
    assert Task.objects.get(agent=agent, task_id="job-1").last_seq == 2


def test_it_refuses_a_human_on_the_lane_handler_and_stores_nothing(operator_user: Any) -> None:
    raw = orjson.dumps({"state": STATE})

    with pytest.raises(exceptions.PermissionDenied):
        api.hot_save(LaneRequest(operator_user, raw), "job-1")

    assert not Task.objects.filter(task_id="job-1").exists()


def test_it_answers_400_naming_the_body_on_the_lane_handler_for_a_body_that_is_not_json() -> None:
    agent, _ = factories.agent_key()

    with pytest.raises(InvalidInput) as refused:
        api.hot_save(LaneRequest(AgentPrincipal(agent), b'{"state": NaN}'), "job-1")

    assert refused.value.field == "body"
    assert "NaN is not JSON" in str(refused.value)
    assert not Task.objects.filter(task_id="job-1").exists()

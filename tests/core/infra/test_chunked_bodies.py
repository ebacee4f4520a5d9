"""A chunked request body (Transfer-Encoding: chunked, no Content-Length) is read within the body limit where the
server has de-chunked it, and refused with 411 where it cannot be (issue 11, item 18)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from recovery.checkpoints.models import Checkpoint
from recovery.errors.models import ErrorEvent
from tests.support import factories
from tests.support.processes import PYTHON, free_port, process_env, start, stop, wait_http

REPORT = {"service": "svc", "type": "TimeoutError", "message": "timed out after 3 s"}


def _chunked(client: APIClient, path: str, body: bytes, *, terminated: bool = True) -> Any:
    """What gunicorn hands Django for a chunked request: no CONTENT_LENGTH, the de-chunked body as wsgi.input,
    and wsgi.input_terminated saying it may be read to its end."""
    extra: dict[str, Any] = {
        "CONTENT_LENGTH": "",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "wsgi.input": io.BytesIO(body),
    }
    if terminated:
        extra["wsgi.input_terminated"] = True
    return client.generic("POST", path, b"", content_type="application/json", **extra)


@pytest.mark.django_db
def test_it_reads_a_chunked_body(agent_client: APIClient) -> None:
    response = _chunked(agent_client, "/api/v1/errors", json.dumps(REPORT).encode())
    assert response.status_code == 201, response.content
    assert ErrorEvent.objects.get().message == "timed out after 3 s"


@pytest.mark.django_db
@override_settings(API_MAX_BODY_BYTES=200)
def test_it_refuses_a_chunked_body_over_the_limit_with_413(agent_client: APIClient) -> None:
    body = json.dumps({**REPORT, "message": "x" * 300}).encode()
    response = _chunked(agent_client, "/api/v1/errors", body)
    assert response.status_code == 413
    assert response.json()["code"] == "body_too_large"
    assert not ErrorEvent.objects.exists()


@pytest.mark.django_db
def test_it_refuses_a_chunked_body_the_server_did_not_dechunk_with_411(agent_client: APIClient) -> None:
    response = _chunked(agent_client, "/api/v1/errors", json.dumps(REPORT).encode(), terminated=False)
    assert response.status_code == 411
    assert response.json()["code"] == "length_required"
    assert not ErrorEvent.objects.exists()


@pytest.mark.django_db
@override_settings(API_MAX_BODY_BYTES=200)
def test_it_still_refuses_a_declared_length_over_the_limit_before_reading(agent_client: APIClient) -> None:
    response = agent_client.post("/api/v1/errors", {**REPORT, "message": "x" * 300}, format="json")
    assert response.status_code == 413
    body = response.json()
    assert (body["code"], body["errors"]) == (
        "body_too_large",
        [{"field": "body", "message": "at most 200 bytes"}],
    )
    assert body["detail"].endswith("the limit is 200 bytes.")


# --- a real gunicorn, a real chunked request ------------------------------------------------------------------


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = process_env(
        tmp_path,
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS="1",
        INTAKE_MODE="sync",
        API_MAX_BODY_BYTES="4096",
        CHECKPOINT_MAX_BYTES="8192",
    )
    web = start(
        [PYTHON, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "config.wsgi"], env, tmp_path / "web.log"
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(web)


def _pieces(body: bytes, size: int = 100) -> Iterator[bytes]:
    for start_at in range(0, len(body), size):
        yield body[start_at : start_at + size]


def _post_chunked(url: str, key: str, body: bytes) -> httpx.Response:
    # A generator body has no length: httpx sends it with Transfer-Encoding: chunked.
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    request = httpx.Request("POST", url, headers=headers, content=_pieces(body))
    assert request.headers["Transfer-Encoding"] == "chunked" and "Content-Length" not in request.headers
    with httpx.Client(timeout=30) as client:
        return client.send(request)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_gunicorn_reads_a_chunked_report_and_refuses_one_over_the_limit(gunicorn: str) -> None:
    _, key = factories.agent_key()
    batch = {"errors": [{**REPORT, "message": f"timed out {n}"} for n in range(20)]}
    response = _post_chunked(f"{gunicorn}/api/v1/errors", key, json.dumps(batch).encode())
    assert response.status_code == 201, response.text
    assert len(response.json()["results"]) == 20
    assert ErrorEvent.objects.count() == 20
    too_big = json.dumps({**REPORT, "message": "x" * 5000}).encode()
    refused = _post_chunked(f"{gunicorn}/api/v1/errors", key, too_big)
    assert refused.status_code == 413
    assert refused.json()["code"] == "body_too_large"
    assert ErrorEvent.objects.count() == 20


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_gunicorn_reads_a_chunked_checkpoint_within_its_own_limit(gunicorn: str) -> None:
    _, key = factories.agent_key()
    state = {"notes": "y" * 6000}  # over the API's 4096 bytes, within the checkpoint's own limit
    response = _post_chunked(
        f"{gunicorn}/api/v1/tasks/job-1/checkpoints", key, json.dumps({"state": state}).encode()
    )
    assert response.status_code == 201, response.text
    assert Checkpoint.objects.count() == 1

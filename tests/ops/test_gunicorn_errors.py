"""Requests gunicorn refuses before Django sees them are answered in the API's JSON envelope too."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.processes import PYTHON, free_port, process_env, start, stop, wait_http

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
]


def test_it_answers_a_request_line_too_long_for_gunicorn_in_json(tmp_path: Path) -> None:
    port = free_port()
    env = process_env(tmp_path, GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS="1")
    web = start(
        [PYTHON, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "config.wsgi"], env, tmp_path / "w.log"
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        query = "&".join(f"wait={n}" for n in range(1001))  # a request line over gunicorn's 4094 bytes
        response = httpx.get(f"http://127.0.0.1:{port}/api/v1/breakers/events?{query}")
    finally:
        stop(web)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == "bad_request"
    assert "Request Line is too large" in body["detail"]
    assert body["errors"] == [{"field": "request", "message": body["detail"]}]

"""How the MCP server is reached: stdio refuses to start without a key Rebound accepts; the HTTP transport's key
verifier; the HTTP app in-process (Starlette's test client): 401 before any tool without a good bearer key,
/healthz without one, the Host check from ALLOWED_HOSTS. Real processes over stdio and HTTP: test_stdio.py and
test_http.py (slow)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from django.core.management.base import CommandError
from django.db import connections
from django.test import override_settings
from starlette.testclient import TestClient

from core.access import services as access
from core.api.errors import ServiceUnavailable
from core.audit.services import Actor
from mcp_server import callers, transports
from mcp_server.auth import ApiKeyVerifier
from tests.support import factories

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture
def worker_threads(transactional_db: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keys verified on worker threads: the rows committed, and each worker's connection closed after its call
    (CONN_MAX_AGE 0), so that none keeps the test database busy when the run drops it."""
    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", 0)
    yield
    callers.use_process_key(None)


def rebound_settings(**changes: Any) -> Any:
    return override_settings(REBOUND=factories.rebound_settings(**changes))


def revoked_key() -> str:
    _, key = factories.agent_key()
    access.revoke_key(api_key=callers.authenticate(key).api_key, actor=Actor(), reason="leaked")
    return key


class NoServer:
    """Stands in for mcp_server.server: a test fails if a server is built."""

    @staticmethod
    def build(**kwargs: Any) -> Any:
        raise AssertionError("a server was built")


# --- stdio ------------------------------------------------------------------------------------------------------


def test_it_refuses_to_serve_stdio_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transports, "server", NoServer)
    with (
        rebound_settings(REBOUND_API_KEY=""),
        pytest.raises(CommandError, match="REBOUND_API_KEY is not set"),
    ):
        transports.serve_stdio()


def test_it_refuses_to_serve_stdio_with_an_unknown_key(
    worker_threads: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transports, "server", NoServer)
    with (
        rebound_settings(REBOUND_API_KEY="rb_nothing_known"),
        pytest.raises(CommandError, match="REBOUND_API_KEY is refused: "),
    ):
        transports.serve_stdio()
    assert callers._process_key is None


def test_it_refuses_to_serve_stdio_with_a_revoked_key(
    worker_threads: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = revoked_key()
    monkeypatch.setattr(transports, "server", NoServer)
    with (
        rebound_settings(REBOUND_API_KEY=key),
        pytest.raises(CommandError, match=r"REBOUND_API_KEY is refused: Unknown or revoked API key\."),
    ):
        transports.serve_stdio()
    assert callers._process_key is None


def test_it_serves_stdio_with_the_process_key(worker_threads: None, monkeypatch: pytest.MonkeyPatch) -> None:
    agent, key = factories.agent_key()
    ran: list[Any] = []
    monkeypatch.setattr(transports.anyio, "run", ran.append)
    with rebound_settings(REBOUND_API_KEY=key):
        transports.serve_stdio()
    [target] = ran
    assert target.__name__ == "run_stdio_async"
    assert callers._process_key == key
    assert callers.caller_of(None).label == f"agent:{agent.name}"


# --- the HTTP transport's key verifier ----------------------------------------------------------------------------


def verify(token: str) -> Any:
    return anyio.run(ApiKeyVerifier().verify_token, token)


def test_it_verifies_an_agent_key_as_its_prefix_and_its_agent(worker_threads: None) -> None:
    agent, key = factories.agent_key()
    token = verify(key)
    assert token is not None
    assert (token.token, token.scopes) == (key, [])
    assert token.client_id == callers.authenticate(key).api_key.prefix
    assert token.subject == f"agent:{agent.name}"


def test_it_verifies_an_operators_user_key(worker_threads: None) -> None:
    user = factories.operator()
    token = verify(factories.user_key(user))
    assert token is not None
    assert token.subject == user.get_username()


def test_it_answers_none_for_an_unknown_key(worker_threads: None) -> None:
    assert verify("rb_abcdefgh_" + "x" * 40) is None
    assert verify("not a key at all") is None


def test_it_answers_none_for_a_revoked_key(worker_threads: None) -> None:
    assert verify(revoked_key()) is None


def test_it_answers_none_and_warns_when_the_database_cannot_answer(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def down(token: str) -> Any:
        raise ServiceUnavailable("The database is unavailable, so this key cannot be verified now.")

    monkeypatch.setattr(callers, "authenticate", down)
    with caplog.at_level(logging.WARNING, logger="mcp_server.auth"):
        assert verify("rb_abcdefgh_" + "x" * 40) is None
    assert "the database cannot answer now" in caplog.text


# --- the HTTP app ---------------------------------------------------------------------------------------------------


@pytest.fixture
def http() -> Iterator[TestClient]:
    """The streamable HTTP app as `manage.py mcp --transport http` serves it, its lifespan running."""
    with TestClient(transports.http_app("127.0.0.1", 8001), base_url="http://127.0.0.1:8001") as client:
        yield client


def test_it_answers_healthz_without_a_key(http: TestClient) -> None:
    response = http.get("/healthz")
    assert (response.status_code, response.text) == (200, "ok")


def test_it_answers_401_without_a_key_before_anything_runs(http: TestClient) -> None:
    response = http.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert "oauth-protected-resource/mcp" in response.headers["www-authenticate"]


def test_it_answers_401_for_an_unknown_or_revoked_key(worker_threads: None, http: TestClient) -> None:
    for key in ("rb_abcdefgh_" + "x" * 40, revoked_key()):
        response = http.post(
            "/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 401, key


def test_it_opens_a_session_for_a_good_key(worker_threads: None, http: TestClient) -> None:
    _, key = factories.agent_key()
    response = http.post("/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    assert response.headers["mcp-session-id"]
    assert '"serverInfo":{"name":"rebound"' in response.text


def test_it_refuses_a_session_with_another_key_than_the_one_that_opened_it(
    worker_threads: None, http: TestClient
) -> None:
    agent, first = factories.agent_key()
    _, second = factories.agent_key(agent)
    opened = http.post("/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": f"Bearer {first}"})
    session = opened.headers["mcp-session-id"]
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {second}", "Mcp-Session-Id": session}
    assert http.post("/mcp", json=ping, headers=headers).status_code == 404


def test_it_refuses_a_host_that_allowed_hosts_does_not_name(worker_threads: None, http: TestClient) -> None:
    _, key = factories.agent_key()
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {key}", "Host": "evil.example"}
    assert http.post("/mcp", json=INITIALIZE, headers=headers).status_code == 421


# --- settings --------------------------------------------------------------------------------------------------


def test_it_announces_the_public_url_or_this_host_and_port() -> None:
    with rebound_settings(MCP_PUBLIC_URL=""):
        assert transports.public_url("127.0.0.1", 8001) == "http://127.0.0.1:8001/mcp"
        assert transports.public_url("0.0.0.0", 9000) == "http://127.0.0.1:9000/mcp"
        assert transports.public_url("::1", 9000) == "http://[::1]:9000/mcp"
    with rebound_settings(MCP_PUBLIC_URL="https://mcp.example.com/mcp"):
        assert transports.public_url("0.0.0.0", 8001) == "https://mcp.example.com/mcp"
        auth = transports.auth_settings(transports.public_url("0.0.0.0", 8001))
    assert str(auth.issuer_url) == "https://mcp.example.com"
    assert str(auth.resource_server_url) == "https://mcp.example.com/mcp"
    assert auth.validate_token_resource is False


def test_it_allows_the_hosts_django_allows_and_the_public_one_with_any_port() -> None:
    with override_settings(ALLOWED_HOSTS=["localhost", ".example.com", "[::1]"]):
        security = transports.transport_security("0.0.0.0", "http://mcp:8001/mcp")
    assert security.enable_dns_rebinding_protection
    assert security.allowed_hosts == [
        "localhost", "localhost:*", "example.com", "example.com:*", "[::1]", "[::1]:*", "mcp", "mcp:*",
    ]  # fmt: skip
    assert "https://example.com:*" in security.allowed_origins


def test_it_turns_the_host_check_off_when_django_allows_any_host() -> None:
    with override_settings(ALLOWED_HOSTS=["*"]):
        security = transports.transport_security("127.0.0.1", "http://127.0.0.1:8001/mcp")
    assert not security.enable_dns_rebinding_protection

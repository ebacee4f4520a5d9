"""How the MCP server is reached (`manage.py mcp`, `rebound-mcp`).

- stdio, for desktop clients that start the server themselves: one process, one key (REBOUND_API_KEY), checked
  before the server starts. stdout belongs to the protocol: the logs go to stderr (Django's console handler).
- streamable HTTP, on a port of its own (MCP_HOST:MCP_PORT, the endpoint at /mcp): each request authenticated by
  its bearer key (mcp_server/auth.py), the Host header checked against ALLOWED_HOSTS (the SDK's DNS rebinding
  protection), `/healthz` for the process manager and the container's healthcheck (no key: the SDK's custom
  routes are outside its auth). The SDK's defaults otherwise: a session per client, answers streamed as
  server-sent events. Served by uvicorn; SIGTERM ends it gracefully.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import anyio
import uvicorn
from django.conf import settings
from django.core.management.base import CommandError
from django.db import connection
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from core.api.errors import DATABASE_UNAVAILABLE, ServiceUnavailable
from core.infra.conf import rebound
from mcp_server import callers, server
from mcp_server.auth import ApiKeyVerifier

log = logging.getLogger(__name__)

ENDPOINT = "/mcp"
# Addresses a server listens on, never a name a client sends in Host.
ANY_ADDRESS = ("0.0.0.0", "::", "")
# On SIGTERM: the calls in flight finish, then the sessions' open event streams (a client holds one as long as
# it stays connected) are closed after this long rather than waited for.
GRACEFUL_S = 10


# --- stdio -------------------------------------------------------------------------------------------------------


def process_caller(key: str) -> callers.Caller:
    """The caller of the stdio process's key, or a CommandError saying why it cannot serve."""
    if not key:
        raise CommandError(
            "REBOUND_API_KEY is not set: the stdio server acts with one API key (an agent's, or an operator's "
            "user key: manage.py create_agent / create_user_key)."
        )
    try:
        return callers.authenticate(key)
    except callers.Unauthenticated as error:
        raise CommandError(f"REBOUND_API_KEY is refused: {error}") from None
    except (ServiceUnavailable, *DATABASE_UNAVAILABLE) as error:
        raise CommandError(f"REBOUND_API_KEY cannot be verified now: {error}") from None
    finally:
        # The event loop's thread never touches the database again: the tools run on worker threads.
        connection.close()


def serve_stdio() -> None:
    key = str(rebound("REBOUND_API_KEY") or "")
    caller = process_caller(key)
    callers.use_process_key(key, label=caller.label)
    log.info("MCP server on stdio, acting as %s", caller.label)
    anyio.run(server.build().run_stdio_async)


# --- streamable HTTP --------------------------------------------------------------------------------------------


def _url_host(host: str) -> str:
    if host in ANY_ADDRESS:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def public_url(host: str, port: int) -> str:
    """Where agents reach the endpoint: MCP_PUBLIC_URL, else this host and port."""
    return str(rebound("MCP_PUBLIC_URL") or "") or f"http://{_url_host(host)}:{port}{ENDPOINT}"


def auth_settings(url: str) -> AuthSettings:
    """Rebound is the resource server and the keys' issuer; its keys are not bound to an audience, so the SDK does
    not compare one (validate_token_resource=False)."""
    parts = urlsplit(url)
    return AuthSettings(
        issuer_url=f"{parts.scheme}://{parts.netloc}",  # type: ignore[arg-type]
        resource_server_url=url,  # type: ignore[arg-type]
        validate_token_resource=False,
    )


def transport_security(host: str, url: str) -> TransportSecuritySettings:
    """The SDK's Host and Origin checks, from Django's ALLOWED_HOSTS plus the public URL's host and the host
    listened on, each with any port. `*` turns the checks off, as it does for Django; the SDK knows no
    subdomain wildcard, so `.example.com` allows example.com itself only."""
    names = [*settings.ALLOWED_HOSTS, urlsplit(url).hostname or "", host]
    if "*" in names:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    hosts: list[str] = []
    for name in names:
        name = name.lstrip(".")
        if name in ANY_ADDRESS:
            continue
        name = f"[{name}]" if ":" in name and not name.startswith("[") else name
        if name not in hosts:
            hosts.append(name)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[form for name in hosts for form in (name, f"{name}:*")],
        allowed_origins=[
            form
            for name in hosts
            for scheme in ("http", "https")
            for form in (f"{scheme}://{name}", f"{scheme}://{name}:*")
        ],
    )


async def healthz(request: Request) -> Response:
    """Alive and serving: no key, no database (the web's /readyz checks the database)."""
    return PlainTextResponse("ok")


def http_app(host: str, port: int) -> Starlette:
    url = public_url(host, port)
    mcp = server.build(auth=auth_settings(url), token_verifier=ApiKeyVerifier())
    mcp.custom_route("/healthz", methods=["GET"], include_in_schema=False)(healthz)
    return mcp.streamable_http_app(
        streamable_http_path=ENDPOINT, transport_security=transport_security(host, url), host=host
    )


def serve_http(host: str, port: int) -> None:
    app = http_app(host, port)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # Django's logging (stderr, JSON in production)
        access_log=False,
        lifespan="on",  # starts and stops the SDK's session manager
        timeout_graceful_shutdown=GRACEFUL_S,
    )
    log.info("MCP server on streamable HTTP at %s (bearer API keys)", public_url(host, port))
    uvicorn.Server(config).run()

"""The streamable HTTP transport's authentication: every request carries `Authorization: Bearer <key>`, a Rebound
API key (an agent's, or an operator's user key), verified exactly as the REST API verifies it. The SDK's bearer
middleware asks this verifier; a key it refuses (none, unknown, revoked, its agent or user deactivated) gets HTTP
401 before any tool runs.

The SDK only knows "a token or not": while the database cannot be reached, a key this process has not verified
before cannot be checked, and is answered 401 too (with a warning in the log), where the REST API answers 503. A
key verified within API_KEY_STALE_GRACE_SECONDS keeps working from its last good copy, as in the REST API.

The SDK keeps a session for the principal that opened it (the key's prefix as `client_id`, the agent or user as
`subject`): a request with another key, even of the same agent, is answered 404 "Session not found"."""

from __future__ import annotations

import logging

import anyio.to_thread
from django.db import close_old_connections
from mcp.server.auth.provider import AccessToken

from core.api.errors import DATABASE_UNAVAILABLE, ServiceUnavailable
from mcp_server import callers

log = logging.getLogger(__name__)


def _authenticate(token: str) -> callers.Caller:
    close_old_connections()
    try:
        return callers.authenticate(token)
    finally:
        close_old_connections()


class ApiKeyVerifier:
    """mcp.server.auth.provider.TokenVerifier over Rebound's API keys."""

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            # The key cache answers most calls at once; a miss reads the database, never on the event loop.
            caller = await anyio.to_thread.run_sync(_authenticate, token)
        except callers.Unauthenticated:
            return None
        except (ServiceUnavailable, *DATABASE_UNAVAILABLE) as error:
            log.warning("MCP key not verified, answered 401: the database cannot answer now (%s)", error)
            return None
        return AccessToken(token=token, client_id=caller.api_key.prefix, scopes=[], subject=caller.label)

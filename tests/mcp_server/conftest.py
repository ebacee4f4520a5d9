"""The MCP tools' callers: an agent's key, an operator's, a viewer's, verified as a tool call verifies them."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_server import callers
from tests.support import factories


@pytest.fixture
def agent_caller(db: Any) -> callers.Caller:
    _, key = factories.agent_key()
    return callers.authenticate(key)


@pytest.fixture
def operator_caller(db: Any) -> callers.Caller:
    return callers.authenticate(factories.user_key(factories.operator()))


@pytest.fixture
def viewer_caller(db: Any) -> callers.Caller:
    return callers.authenticate(factories.user_key(factories.viewer()))

"""The calls' shapes as answers show them: an HTTP request or a task call as stored for a retry job or a saga
compensation, with secrets redacted (outbound.redact_request, outbound.redact_task)."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, with_config
from typing_extensions import TypedDict


@with_config(ConfigDict(extra="allow"))
class ShownRequest(TypedDict, total=False):
    """An HTTP call's request as stored, with secret headers and query values shown as [redacted]."""

    method: str
    url: str
    headers: dict[str, str]
    body: Any
    success_statuses: list[int]
    timeout_s: float


@with_config(ConfigDict(extra="allow"))
class ShownTaskCall(TypedDict, total=False):
    """A registered task's call as stored, with secret-looking kwargs shown as [redacted]."""

    name: str
    args: list[Any]
    kwargs: dict[str, Any]

"""What an action answered, as a run keeps it: secrets hidden (outbound.redact_*'s names), text PostgreSQL can
store (no NUL, no lone surrogate, no NaN), and bounded in depth and size. And the one exception an action
raises to say it failed, with what it answered all the same."""

from __future__ import annotations

import math
from typing import Any

from recovery.calls.outbound import REDACTED, is_secret_name

MAX_DEPTH = 20
MAX_TEXT = 10_000
MAX_ITEMS = 1_000


class ActionFailed(Exception):
    """The action ran and did not do its job: `message` says why, `output` is what it answered."""

    def __init__(self, message: str, output: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.output = output or {}


def text(value: str, limit: int = MAX_TEXT) -> str:
    """A string PostgreSQL can keep: NUL replaced, lone surrogates replaced, at most `limit` characters."""
    cleaned = value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "…"


def stored(value: Any, depth: int = 0) -> Any:
    """A JSON value safe to store and show: values under secret-looking keys hidden, at every level."""
    if depth > MAX_DEPTH:
        return "[nested too deeply]"
    if isinstance(value, dict):
        items = list(value.items())[:MAX_ITEMS]
        return {
            text(str(k), 200): (REDACTED if is_secret_name(str(k)) else stored(v, depth + 1))
            for k, v in items
        }
    if isinstance(value, list | tuple):
        return [stored(v, depth + 1) for v in list(value)[:MAX_ITEMS]]
    if isinstance(value, str):
        return text(value)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return text(str(value))

"""Request bodies for the error-intake benchmark: one error as the issue states it, and a varied batch.

Deterministic (no randomness), so that two runs send byte-identical bodies and differ only in the machine.
"""

from __future__ import annotations

import json
from typing import Any

# The single error of the issue: a rate limit with a Retry-After header, the most common report of all.
SINGLE_ERROR: dict[str, Any] = {
    "service": "openai",
    "operation": "chat",
    "type": "RateLimitError",
    "message": "Rate limit reached for org-42",
    "status_code": 429,
    "headers": {"Retry-After": "3"},
}

# What agents really send: several services, types, status codes and message shapes, so that a batch hits
# several classification rules and patterns (and the message masking), not one hot row.
_KINDS: list[dict[str, Any]] = [
    SINGLE_ERROR,
    {"service": "openai", "operation": "chat", "type": "APITimeoutError", "message": "Request timed out."},
    {
        "service": "anthropic",
        "operation": "messages",
        "type": "OverloadedError",
        "message": "Overloaded",
        "status_code": 529,
    },
    {
        "service": "github-mcp",
        "operation": "create_issue",
        "status_code": 503,
        "message": "Service Unavailable",
    },
    {
        "service": "pinecone",
        "operation": "query",
        "type": "httpx.ConnectTimeout",
        "message": "timed out connecting to 10.0.{n}.7:443",
    },
    {
        "service": "postgres-mcp",
        "operation": "query",
        "type": "OperationalError",
        "message": "could not connect to server: Connection refused (attempt {n})",
    },
    {
        "service": "openai",
        "operation": "embeddings",
        "type": "AuthenticationError",
        "message": "Incorrect API key provided: sk-...{n}",
        "status_code": 401,
    },
    {
        "service": "slack",
        "operation": "chat.postMessage",
        "type": "SlackApiError",
        "message": "ratelimited, retry in {n} seconds",
        "status_code": 429,
        "retry_after": 7,
    },
    {
        "service": "search",
        "operation": "web",
        "type": "ValueError",
        "message": "invalid query id 5f1c{n:04x}ab: unexpected token",
        "status_code": 400,
    },
    {
        "service": "stripe-mcp",
        "operation": "charge",
        "type": "ContextWindowExceededError",
        "message": "This model's maximum context length is 128000 tokens, you asked for {n}",
    },
]


def _fill(template: dict[str, Any], n: int) -> dict[str, Any]:
    error = dict(template)
    if "{n" in error.get("message", ""):
        error["message"] = error["message"].format(n=n)
    error["context"] = {"task": f"bench-{n % 7}", "attempt": n % 3 + 1}
    return error


def batch_errors(size: int = 100) -> list[dict[str, Any]]:
    return [_fill(_KINDS[i % len(_KINDS)], 1000 + i) for i in range(size)]


def single_body() -> bytes:
    return json.dumps(SINGLE_ERROR).encode()


def batch_body(size: int = 100, successes: int = 400) -> bytes:
    return json.dumps({"errors": batch_errors(size), "successes": successes}).encode()

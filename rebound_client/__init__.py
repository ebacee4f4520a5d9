"""Rebound's Python SDK: fleet-wide circuit breakers decided locally, outcomes reported in the background, and
the recovery planner's plans followed for you.

    from rebound_client import Client
    client = Client("http://rebound:8000", "rb_...")

    with client.guard("openai", operation="chat"):
        reply = openai_call()

It depends on httpx alone and never imports Django: see docs/sdk.md.
"""

from rebound_client._core import Change
from rebound_client.aio import AsyncClient, AsyncGuard
from rebound_client.client import Client, Guard
from rebound_client.errors import (
    CircuitOpenError,
    DegradedError,
    EscalatedError,
    FallbackUnavailableError,
    ReboundAPIError,
    ReboundError,
    ReboundUnavailableError,
    RecoveryAbortedError,
    RetriesExhaustedError,
)
from rebound_client.plans import Fallback, PartialResult, Plan

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AsyncGuard",
    "Change",
    "CircuitOpenError",
    "Client",
    "DegradedError",
    "EscalatedError",
    "Fallback",
    "FallbackUnavailableError",
    "Guard",
    "PartialResult",
    "Plan",
    "ReboundAPIError",
    "ReboundError",
    "ReboundUnavailableError",
    "RecoveryAbortedError",
    "RetriesExhaustedError",
    "__version__",
]

"""get_fallback_status: what can stand in for a service now. The fallback chain exactly as GET
/api/v1/fallbacks/{service} answers it, and the results cached for the service (which cache fallbacks can
offer), each with its age."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, TypeAdapter

from core.api.validation import parse
from core.infra.conf import rebound
from core.slugs import Slug
from mcp_server import callers
from mcp_server.running import tool
from recovery.breakers import selectors as breaker_selectors
from recovery.decisions import fallbacks
from recovery.decisions.fallbacks import CACHE_KEY_SHOWN, CachedEntry
from recovery.decisions.schemas import CacheKey, ChainOut, ChainQuery, Operation

_CHAIN = TypeAdapter(ChainQuery)  # the REST view's own validation: the same refusals, naming the same fields
CACHE_ENTRIES = 20


class CacheEntryOut(BaseModel):
    operation: str = Field(description="Empty: a result stored before entries named their operation.")
    cache_key: str = Field(
        description=f"The input the result belongs to (its first {CACHE_KEY_SHOWN} characters)."
    )
    cached_at: datetime
    age_s: float = Field(description="Seconds since it was cached.")
    bytes: int = Field(description="The size of the stored entry.")


class CacheEntriesOut(BaseModel):
    count: int = Field(
        description="Results cached for the service (for the operation, when one is named). 0 also when the "
        "result cache cannot be read: the chain's cache options then say so."
    )
    ttl_s: int = Field(description="How long a result stays cached (RESULT_CACHE_TTL_SECONDS).")
    entries: list[CacheEntryOut] = Field(description=f"The newest {CACHE_ENTRIES}, newest first.")


class FallbackStatusOut(BaseModel):
    chain: ChainOut = Field(description="The fallback chain, as GET /api/v1/fallbacks/{service} answers it.")
    cache: CacheEntriesOut


@tool(title="Fallback status", read_only=True)
def get_fallback_status(
    caller: callers.Caller,
    service: Annotated[Slug, Field(description="The service whose fallbacks to read.")],
    operation: Annotated[
        Operation, Field(description="The operation; its own options come first. Empty: every operation's.")
    ] = "",
    cache_key: Annotated[
        CacheKey, Field(description="The input a cache fallback must match (as sent with outcomes).")
    ] = "",
) -> FallbackStatusOut:
    """What can stand in for a service now: its fallback chain (other services, cached results, a static
    default, skipping) with why each option is or is not available, and the results cached for it with their
    age. Call it before depending on a service whose breaker is open or degraded. Reads only; any agent key, or
    a user key with a role."""
    callers.require_reader(caller, "get_fallback_status")
    query = parse(_CHAIN, {"service": service, "operation": operation, "cache_key": cache_key})
    chain = fallbacks.chain_now(
        breaker_selectors.known_service(query.service), query.operation, query.cache_key
    )
    count, entries = fallbacks.cached_entries(chain.service, query.operation or None, CACHE_ENTRIES)
    return FallbackStatusOut(
        chain=ChainOut.of(chain),
        cache=CacheEntriesOut(
            count=count,
            ttl_s=int(rebound("RESULT_CACHE_TTL_SECONDS")),
            entries=[_entry(e) for e in entries],
        ),
    )


def _entry(entry: CachedEntry) -> CacheEntryOut:
    return CacheEntryOut(
        operation=entry.operation,
        cache_key=entry.cache_key,
        cached_at=entry.cached_at,
        age_s=entry.age_s,
        bytes=entry.bytes,
    )

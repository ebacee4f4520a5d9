"""Bearer-key authentication with a short in-process cache.

Verifying a key costs a database look-up; without a cache that alone would dominate the hot path. A verified
key is trusted for API_KEY_CACHE_SECONDS (default 5 s, at most 30): that is the longest a revoked key keeps
working in a process other than the one that revoked it. The revoking process forgets it at once.

When the database cannot be reached, a key this process verified keeps working from its last known good copy for
API_KEY_STALE_GRACE_SECONDS past that copy's expiry (default 300 s): the buffered intake exists to ride out
exactly such an outage, and it needs no database. A key the database refused (revoked, unknown, its agent
deactivated) stays refused; a key never verified here, or one whose grace is over, gets a 503 with Retry-After,
never a 500. While the database is down, each key's copy is re-checked once a second, not on every request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import timedelta

from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import Q
from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from core.access import keys
from core.access.models import Agent, ApiKey
from core.api.errors import DATABASE_UNAVAILABLE, ServiceUnavailable
from core.infra.conf import rebound

log = logging.getLogger(__name__)

# last_used_at and last_seen_at are written at most this often, so that reads stay reads.
TOUCH_INTERVAL = timedelta(seconds=60)
# While the database is unreachable, a key served from its last good copy is looked up again after this long.
OUTAGE_RECHECK_S = 1.0
# Keys the database refused, remembered so that an outage cannot make one work; bounded against key spraying.
REFUSED_MAX = 10_000
# What a client is told to wait when its key cannot be verified now.
UNAVAILABLE_RETRY_AFTER_S = 5


@dataclass
class AgentPrincipal:
    """What `request.user` is for an agent key: authenticated, never a Django user, never an operator."""

    agent: Agent
    is_authenticated: bool = True
    is_anonymous: bool = False
    is_active: bool = True
    is_agent: bool = True
    is_superuser: bool = False
    is_staff: bool = False
    pk: None = None

    def get_username(self) -> str:
        return f"agent:{self.agent.name}"

    def has_perm(self, perm: str, obj: object = None) -> bool:
        return False

    def __str__(self) -> str:
        return self.get_username()


# What `request.user` is after ApiKeyAuthentication: an agent's principal, or the key's user.
Principal = AgentPrincipal | AbstractBaseUser


@dataclass(frozen=True)
class _Cached:
    expires: float  # trusted without a look-up until then (monotonic time)
    stale_until: float  # served while the database is unreachable until then
    principal: Principal
    key: ApiKey


_cache: dict[str, _Cached] = {}
_refused: OrderedDict[str, None] = OrderedDict()
_lock = threading.Lock()


def forget(plaintext_hash: str | None = None) -> None:
    """Drop one cached key (by its hash), or every cached and refused key: a change to agents in this process,
    or a test starting afresh."""
    with _lock:
        if plaintext_hash is None:
            _cache.clear()
            _refused.clear()
        else:
            _cache.pop(plaintext_hash, None)


def forget_key(api_key: ApiKey) -> None:
    """A key revoked in this process: refused at once, and never served from a copy during an outage."""
    with _lock:
        for digest in [d for d, c in _cache.items() if c.key.pk == api_key.pk]:
            del _cache[digest]
            _remember_refused(digest)


def _load(plaintext: str) -> tuple[Principal, ApiKey]:
    prefix = keys.parse_prefix(plaintext)
    if prefix is None:
        raise exceptions.AuthenticationFailed("Malformed API key.")
    api_key = (
        ApiKey.objects.select_related("agent", "user").filter(prefix=prefix, revoked_at__isnull=True).first()
    )
    if api_key is None or not keys.matches(plaintext, api_key.key_hash):
        raise exceptions.AuthenticationFailed("Unknown or revoked API key.")
    if api_key.agent is not None:
        if not api_key.agent.is_active:
            raise exceptions.AuthenticationFailed("This agent is deactivated.")
        principal: Principal = AgentPrincipal(agent=api_key.agent)
    else:
        user = api_key.user
        if user is None or not user.is_active:
            raise exceptions.AuthenticationFailed("This user is deactivated.")
        principal = user
    _touch(api_key)
    return principal, api_key


def _touch(api_key: ApiKey) -> None:
    # Compare-and-set: only one process writes per interval, and no row is rewritten on every request.
    now = timezone.now()
    try:
        stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - TOUCH_INTERVAL)
        ApiKey.objects.filter(stale, pk=api_key.pk).update(last_used_at=now)
        if api_key.agent_id:
            stale = Q(last_seen_at__isnull=True) | Q(last_seen_at__lt=now - TOUCH_INTERVAL)
            Agent.objects.filter(stale, pk=api_key.agent_id).update(last_seen_at=now)
    except DATABASE_UNAVAILABLE as error:
        # The key was verified; a lost "last used" mark is no reason to refuse the request.
        log.warning("could not mark the use of key %s: %s", api_key.prefix, error)


def verify(plaintext: str) -> tuple[Principal, ApiKey]:
    digest = keys.hash_key(plaintext)
    now = time.monotonic()
    cached = _cache.get(digest)
    if cached is not None and cached.expires > now:
        return cached.principal, cached.key
    try:
        principal, api_key = _load(plaintext)
    except exceptions.AuthenticationFailed:
        with _lock:
            _cache.pop(digest, None)
            _remember_refused(digest)
        raise
    except DATABASE_UNAVAILABLE as error:
        return _last_known(digest, cached, now, error)
    _remember_verified(digest, principal, api_key, now)
    return principal, api_key


def cached_principal(plaintext: str) -> Principal | None:
    """The principal of a key this process verified within API_KEY_CACHE_SECONDS, or None: then only verify()
    may decide (a look-up, a refusal, an outage's grace). For the hot lane (core/api/hotlane.py), which serves a
    request only when this answers and leaves every other case to the full stack."""
    cached = _cache.get(keys.hash_key(plaintext))
    if cached is not None and cached.expires > time.monotonic():
        return cached.principal
    return None


def _remember_verified(digest: str, principal: Principal, api_key: ApiKey, now: float) -> None:
    ttl = float(rebound("API_KEY_CACHE_SECONDS"))
    grace = float(rebound("API_KEY_STALE_GRACE_SECONDS"))
    with _lock:
        _refused.pop(digest, None)
        if ttl > 0 or grace > 0:
            _cache[digest] = _Cached(
                expires=now + ttl, stale_until=now + ttl + grace, principal=principal, key=api_key
            )


def _remember_refused(digest: str) -> None:
    """Called holding _lock."""
    _refused[digest] = None
    _refused.move_to_end(digest)
    while len(_refused) > REFUSED_MAX:
        _refused.popitem(last=False)


def _last_known(
    digest: str, cached: _Cached | None, now: float, error: Exception
) -> tuple[Principal, ApiKey]:
    """The database is unreachable: the last good copy of this key within its grace, else a refusal or a 503."""
    if digest in _refused:
        raise exceptions.AuthenticationFailed("Unknown or revoked API key.")
    if cached is None or cached.stale_until <= now:
        log.warning("database unavailable, key cannot be verified: %s", str(error).strip()[:300])
        raise ServiceUnavailable(
            "The database is unavailable, so this key cannot be verified now; try again shortly.",
            retry_after_s=UNAVAILABLE_RETRY_AFTER_S,
        )
    log.warning(
        "database unavailable, key %s served from its last good copy for %.0f s more: %s",
        cached.key.prefix,
        cached.stale_until - now,
        str(error).strip()[:300],
    )
    with _lock:
        _cache[digest] = replace(cached, expires=min(now + OUTAGE_RECHECK_S, cached.stale_until))
    return cached.principal, cached.key


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Principal, ApiKey] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        token = token.strip()
        if not token:
            raise exceptions.AuthenticationFailed("Empty bearer token.")
        return verify(token)

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="rebound"'

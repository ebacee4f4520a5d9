"""Bearer-key authentication with a short in-process cache.

Verifying a key costs a database look-up; without a cache that alone would dominate the hot path. A verified
key is trusted for API_KEY_CACHE_SECONDS (default 5 s, at most 30): that is the longest a revoked key keeps
working in a process other than the one that revoked it. The revoking process forgets it at once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import Q
from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from core.access import keys
from core.access.models import Agent, ApiKey
from core.infra.conf import rebound

# last_used_at and last_seen_at are written at most this often, so that reads stay reads.
TOUCH_INTERVAL = timedelta(seconds=60)


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
    expires: float
    principal: Principal
    key: ApiKey


_cache: dict[str, _Cached] = {}
_lock = threading.Lock()


def forget(plaintext_hash: str | None = None) -> None:
    """Drop one cached key (by its hash) or all of them: called on revocation in this process."""
    with _lock:
        if plaintext_hash is None:
            _cache.clear()
        else:
            _cache.pop(plaintext_hash, None)


def forget_key(api_key: ApiKey) -> None:
    with _lock:
        for digest in [d for d, c in _cache.items() if c.key.pk == api_key.pk]:
            del _cache[digest]


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
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - TOUCH_INTERVAL)
    ApiKey.objects.filter(stale, pk=api_key.pk).update(last_used_at=now)
    if api_key.agent_id:
        stale = Q(last_seen_at__isnull=True) | Q(last_seen_at__lt=now - TOUCH_INTERVAL)
        Agent.objects.filter(stale, pk=api_key.agent_id).update(last_seen_at=now)


def verify(plaintext: str) -> tuple[Principal, ApiKey]:
    digest = keys.hash_key(plaintext)
    now = time.monotonic()
    cached = _cache.get(digest)
    if cached is not None and cached.expires > now:
        return cached.principal, cached.key
    principal, api_key = _load(plaintext)
    ttl = rebound("API_KEY_CACHE_SECONDS")
    if ttl > 0:
        with _lock:
            _cache[digest] = _Cached(expires=now + ttl, principal=principal, key=api_key)
    return principal, api_key


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

"""Writes of access: agents created, changed, activated and deactivated; keys issued and revoked. Each one
audited with its reason."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from core.access import authentication, keys
from core.access.models import Agent, ApiKey
from core.api.errors import InvalidInput
from core.audit import services as audit
from core.audit.services import Actor

# --- Agents and keys -------------------------------------------------------------------------------------


def create_agent(*, name: str, description: str = "", actor: Actor, reason: str = "") -> Agent:
    if Agent.objects.filter(name=name).exists():
        raise InvalidInput(f"An agent named {name!r} exists already.", field="name")
    with transaction.atomic():
        agent = Agent.objects.create(name=name, description=description)
        audit.record(actor, "agent.create", agent, reason=reason, after=audit.snapshot(agent))
    return agent


AGENT_FIELDS = ["name", "description"]


def update_agent(*, agent_id: int, data: dict[str, Any], actor: Actor, reason: str) -> bool:
    """Change an agent's name or description, audited; False when nothing changed."""
    reason = audit.require_reason(reason)
    with transaction.atomic():
        # Locked so that "before" is what is stored, not what another editor is about to overwrite.
        agent = Agent.objects.select_for_update().get(pk=agent_id)
        before = audit.snapshot(agent, AGENT_FIELDS)
        for name in AGENT_FIELDS:
            if name in data:
                setattr(agent, name, data[name])
        after = audit.snapshot(agent, AGENT_FIELDS)
        if before == after:
            return False
        audit.full_clean(agent)
        agent.save(update_fields=AGENT_FIELDS)
        audit.record(actor, "agent.update", agent, reason=reason, before=before, after=after)
    # Cached principals carry the old name into actor labels; drop them.
    authentication.forget()
    return True


def set_agent_active(*, agent: Agent, active: bool, actor: Actor, reason: str) -> bool:
    reason = audit.require_reason(reason)
    with transaction.atomic():
        changed = Agent.objects.filter(pk=agent.pk, is_active=not active).update(is_active=active)
        if changed:
            audit.record(
                actor,
                "agent.activate" if active else "agent.deactivate",
                agent,
                reason=reason,
                before={"is_active": not active},
                after={"is_active": active},
            )
    authentication.forget()
    agent.refresh_from_db()
    return bool(changed)


def issue_key(
    *,
    actor: Actor,
    agent: Agent | None = None,
    user: User | None = None,
    name: str = "",
    reason: str = "",
) -> tuple[ApiKey, str]:
    """A new key for an agent or a user. The plaintext is returned once and never stored."""
    if (agent is None) == (user is None):
        raise InvalidInput("A key belongs to exactly one agent or one user.", field="owner")
    new = keys.generate()
    with transaction.atomic():
        api_key = ApiKey.objects.create(
            prefix=new.prefix, key_hash=new.key_hash, name=name, agent=agent, user=user
        )
        audit.record(
            actor,
            "apikey.issue",
            api_key,
            reason=reason,
            after={"prefix": api_key.prefix, "owner": api_key.owner_label, "name": name},
        )
    return api_key, new.plaintext


def revoke_key(*, api_key: ApiKey, actor: Actor, reason: str) -> bool:
    """Revoke once (compare-and-set); the key stops working within API_KEY_CACHE_SECONDS everywhere."""
    reason = audit.require_reason(reason)
    now = timezone.now()
    with transaction.atomic():
        changed = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now)
        if changed:
            audit.record(
                actor,
                "apikey.revoke",
                api_key,
                reason=reason,
                before={"revoked_at": None},
                after={"revoked_at": now.isoformat()},
            )
    authentication.forget_key(api_key)
    api_key.refresh_from_db()
    return bool(changed)

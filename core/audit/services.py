"""Writes of the audit trail: the one record() that every human control action goes through."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction

from core.access.roles import is_agent
from core.api.errors import InvalidInput
from core.audit.models import AuditEvent, audit_label
from core.infra import request_ids

if TYPE_CHECKING:
    from core.access.models import Agent


@dataclass(frozen=True)
class Actor:
    """Who acts: a user (admin, API or CLI), an agent key, or the system itself."""

    user: Any = None
    agent: Agent | None = None
    source: str = AuditEvent.Source.API

    @property
    def label(self) -> str:
        if self.agent is not None:
            return f"agent:{self.agent.name}"
        if self.user is not None:
            return f"user:{self.user.get_username()}"
        return "system"

    @classmethod
    def from_request(cls, request: Any, source: str = AuditEvent.Source.API) -> Actor:
        user = request.user
        if is_agent(user):
            return cls(agent=user.agent, source=source)
        return cls(user=user, source=source)


def require_reason(reason: str | None, field: str = "reason") -> str:
    """Operator actions must say why; a blank reason is refused, naming the field."""
    text = (reason or "").strip()
    if not text:
        raise InvalidInput("Operator actions require a reason.", field=field)
    return text


def record(
    actor: Actor,
    action: str,
    target: models.Model,
    *,
    reason: str = "",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    """The audit event of one action; for a person's action, also Django's admin log entry beside it (the
    object's admin history and the admin's log show what was done through the API, the console or the CLI)."""
    with transaction.atomic():
        event = AuditEvent.objects.create(
            actor_user=actor.user if actor.user is not None and actor.user.pk else None,
            actor_agent=actor.agent,
            actor_label=actor.label,
            action=action,
            target_type=audit_label(target),
            target_id=str(target.pk),
            target_repr=str(target)[:300],
            reason=reason,
            before=before,
            after=after,
            source=actor.source,
            request_id=request_ids.get_request_id() or "",
        )
        log_entry(actor, action, target, reason=reason)
    return event


def log_flag(action: str) -> int:
    """Django's kind of log entry for an audit action: ".create" adds, ".delete" deletes, the rest changes."""
    if action.endswith(".create"):
        return ADDITION
    if action.endswith(".delete"):
        return DELETION
    return CHANGE


def log_entry(actor: Actor, action: str, target: models.Model, *, reason: str = "") -> LogEntry | None:
    """Django's admin log entry of a person's action. Agents and the system write none: a LogEntry needs a user.
    The admin's own logging is switched off where its saves go through a service (core.admin_helpers.RoleAdmin),
    so each action is logged once, here."""
    user_id = getattr(actor.user, "pk", None) if actor.agent is None else None
    if user_id is None:
        return None
    message = f"{action} via {actor.source}: {reason}" if reason else f"{action} via {actor.source}"
    return LogEntry.objects.create(
        user_id=user_id,
        content_type=ContentType.objects.get_for_model(target, for_concrete_model=False),
        object_id=str(target.pk),
        object_repr=str(target)[:200],
        action_flag=log_flag(action),
        change_message=message,
    )


def snapshot(obj: models.Model, fields: list[str] | None = None) -> dict[str, Any]:
    """The object's fields as JSON-safe values, for an audit event's before and after."""
    concrete = {f.name: f for f in obj._meta.concrete_fields if not f.primary_key}
    # A relation is kept as its id: the audit row must not change when the related object later does.
    data = {name: getattr(obj, concrete[name].attname) for name in (fields or list(concrete))}
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def full_clean(obj: models.Model) -> None:
    """Model validation as a domain error that names every bad field."""
    try:
        obj.full_clean()
    except ValidationError as error:
        errors = [
            {"field": "body" if name == NON_FIELD_ERRORS else name, "message": str(message)}
            for name, messages in error.message_dict.items()
            for message in messages
        ]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise InvalidInput(f"Invalid input: {summary}", errors=errors) from error


M = TypeVar("M", bound=models.Model)


def audited_save(obj: M, fields: list[str], *, actor: Actor, reason: str, action: str) -> M:
    """Validate and save an operator's configuration row, with an audit event saying what changed and why.
    `obj` carries the new values; its stored row (if any) is the audit's "before"."""
    reason = require_reason(reason)
    with transaction.atomic():
        stored = type(obj)._default_manager.select_for_update().filter(pk=obj.pk).first() if obj.pk else None
        before = snapshot(stored, fields) if stored is not None else None
        full_clean(obj)
        obj.save()
        verb = "update" if stored is not None else "create"
        record(actor, f"{action}.{verb}", obj, reason=reason, before=before, after=snapshot(obj, fields))
    return obj


def audited_delete(obj: models.Model, fields: list[str], *, actor: Actor, reason: str, action: str) -> None:
    reason = require_reason(reason)
    with transaction.atomic():
        record(actor, f"{action}.delete", obj, reason=reason, before=snapshot(obj, fields))
        obj.delete()

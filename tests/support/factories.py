from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import factory
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from core.access import services as access
from core.access.models import Agent
from core.access.roles import OPERATORS, VIEWERS
from core.audit.services import Actor
from recovery.degradation.models import DegradationRule
from recovery.errors.models import ClassificationRule, ErrorEvent, ErrorPattern


class AgentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Agent

    name = factory.Sequence(lambda n: f"agent-{n}")
    description = "test agent"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user-{n}")
    is_staff = True
    password = factory.PostGenerationMethodCall("set_password", "password")

    @factory.post_generation
    def role(self, create: bool, extracted: str | None, **kwargs: Any) -> None:
        if extracted:
            self.groups.add(Group.objects.get(name=extracted))
        self.save()


def operator(**kwargs: Any) -> Any:
    return UserFactory(role=OPERATORS, **kwargs)


def viewer(**kwargs: Any) -> Any:
    return UserFactory(role=VIEWERS, **kwargs)


class RuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ClassificationRule

    name = factory.Sequence(lambda n: f"rule-{n}")
    priority = 50
    error_class = "resource"
    severity = "medium"
    kind = "temporary_resource"
    retryable = True
    counts_toward_breaker = True
    needs_human = False
    message_regex = "custom failure"


class DegradationRuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DegradationRule

    name = factory.Sequence(lambda n: f"degradation-rule-{n}")
    signal = DegradationRule.Signal.ERRORS_PER_MINUTE
    threshold = 1.0
    level = "degraded"


def rebound_settings(**changes: Any) -> dict[str, Any]:
    """settings.REBOUND with some values changed, for override_settings."""
    return {**settings.REBOUND, **changes}


def agent_key(agent: Agent | None = None) -> tuple[Agent, str]:
    agent = agent or AgentFactory()
    _, plaintext = access.issue_key(actor=Actor(source="cli"), agent=agent)
    return agent, plaintext


def user_key(user: Any) -> str:
    _, plaintext = access.issue_key(actor=Actor(user=user, source="cli"), user=user)
    return plaintext


def task(agent: Agent | None = None, task_id: str = "job-1", **fields: Any) -> Any:
    """A running task of an agent (new agent if none), as the first checkpoint or heartbeat would create."""
    from recovery.checkpoints.models import Task

    fields.setdefault("started_at", timezone.now())
    return Task.objects.create(agent=agent or AgentFactory(), task_id=task_id, **fields)


def pattern_with_events(service: str, message: str, events: int, minutes_ago: int = 0) -> ErrorPattern:
    """A transient pattern of the service with `events` errors, all seen `minutes_ago` minutes ago (its first and
    last sighting then too): what the fleet's "top pattern" reads count."""
    at = timezone.now() - timedelta(minutes=minutes_ago)
    found = ErrorPattern.objects.create(
        fingerprint=uuid.uuid4().hex,
        service=service,
        error_class="transient",
        severity="medium",
        kind="connection_timeout",
        message_template=message,
        first_seen_at=at,
        last_seen_at=at,
        total_count=events,
    )
    ErrorEvent.objects.bulk_create(
        ErrorEvent(
            pattern=found,
            occurred_at=at,
            service=service,
            error_class="transient",
            severity="medium",
            message=message,
        )
        for _ in range(events)
    )
    return found

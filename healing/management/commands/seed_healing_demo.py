"""Demo data of the healing side for the embedded mode: a heartbeat check that the demo's agents ping, a
celery check of Rebound's own workers, a remediation rule that asks for an approval when a breaker opens, and
for the console's review queue three escalations and a breaker reset waiting for an operator's approval.
Idempotent: a second run changes nothing (the escalations' dedup keys and the one open run per target see to it)."""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand
from django.utils import timezone

from core.audit.models import AuditEvent
from core.audit.services import Actor
from healing.actions import policy
from healing.actions import services as actions
from healing.actions.models import HealingAction
from healing.checks.models import HealthCheck
from healing.escalations import services as escalations
from healing.escalations.models import Escalation, Level, TriggerKind
from healing.remediation.models import RemediationRule

# What a reviewer finds in the queue after `make run`: one of each of the levels an operator meets most.
ESCALATIONS = [
    escalations.Raise(
        trigger=TriggerKind.AGENT,
        dedup_key="demo:stripe:card-declined-storm",
        level=Level.CRITICAL,
        title="stripe: card payments failing for every agent",
        summary="The billing agent's charges fail with 402 since the last deploy; retries do not help.",
        service="stripe",
        error_class="external_service",
    ),
    escalations.Raise(
        trigger=TriggerKind.AGENT,
        dedup_key="demo:openai:rate-limit",
        level=Level.WARNING,
        title="openai: rate limited for 10 minutes",
        summary="429s on the completions endpoint; the fallback chain moved agents to the smaller model.",
        service="openai",
        error_class="rate_limit",
    ),
    escalations.Raise(
        trigger=TriggerKind.AGENT,
        dedup_key="demo:web-search:stale-results",
        level=Level.INFO,
        title="web-search: results older than a day",
        summary="The research agent noticed cached answers; nothing is failing yet.",
        service="web-search",
    ),
]

CHECKS = [
    {
        "name": "research-agent-heartbeat",
        "service": "web-search",
        "kind": HealthCheck.Kind.HEARTBEAT,
        "description": "The research agent pings after each search: silence for 90 s is a failure.",
        "interval_s": 60,
        "grace_s": 30,
        "rise": 1,
        "fall": 2,
    },
    {
        "name": "rebound-workers",
        "service": "rebound-celery",
        "kind": HealthCheck.Kind.CELERY,
        "description": "Rebound's own Celery workers answer a ping on the default queue.",
        "queue": "celery",
        "interval_s": 30,
        "timeout_s": 2,
    },
]


class Command(BaseCommand):
    help = "Create the healing side's demo checks and rule (idempotent)."

    def handle(self, *args: object, **options: object) -> None:
        now = timezone.now()
        for spec in CHECKS:
            HealthCheck.objects.get_or_create(
                name=str(spec["name"]), defaults={**spec, "next_due_at": now + timedelta(seconds=5)}
            )
        reset = HealingAction.objects.filter(name="reset_breaker").first()
        if reset is not None:
            RemediationRule.objects.get_or_create(
                name="reset-stripe-breaker",
                defaults={
                    "description": "When the stripe breaker opens, ask an operator to approve a reset.",
                    "trigger": RemediationRule.Trigger.BREAKER_OPEN,
                    "service": "stripe",
                    "action": reset,
                },
            )
        if not Escalation.objects.filter(dedup_key__startswith="demo:").exists():
            for demo in ESCALATIONS:
                escalations.raise_escalation(demo)
        if reset is not None and reset.enabled:
            # A rule's request for a medium-risk action waits for one operator's approval in the queue.
            actions.request_run(
                action=reset.name,
                service="stripe",
                parameters={},
                reason="demo: the stripe breaker keeps opening; reset it once the provider recovers",
                trigger=policy.RULE,
                actor=Actor(source=AuditEvent.Source.SYSTEM),
                requester="rule:reset-stripe-breaker",
            )
        self.stdout.write(
            f"healing demo: {len(CHECKS)} checks, 1 remediation rule, {len(ESCALATIONS)} escalations, "
            "1 run waiting for approval"
        )

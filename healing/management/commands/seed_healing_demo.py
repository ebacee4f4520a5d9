"""Demo data of the healing side for the embedded mode: a heartbeat check that the demo's agents ping, a
celery check of Rebound's own workers, and a remediation rule that asks for an approval when a breaker opens.
Idempotent: a second run changes nothing."""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand
from django.utils import timezone

from healing.actions.models import HealingAction
from healing.checks.models import HealthCheck
from healing.remediation.models import RemediationRule

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
        self.stdout.write(f"healing demo: {len(CHECKS)} checks, 1 remediation rule")

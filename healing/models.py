"""Every model of the healing app, in one visible place: each room's models.py defines its own, and Django
finds an app's models through this module."""

from healing.actions.models import Approval, HealingAction, HealingHold, HealingRun, HealingRunTransition
from healing.checks.models import HealthCheck, HealthCheckResult, HealthCheckTransition
from healing.escalations.models import (
    Escalation,
    EscalationEvent,
    EscalationPolicy,
    EscalationTrigger,
    Runbook,
)
from healing.notifications.models import Delivery, NotificationChannel, Silence
from healing.remediation.models import RemediationRule, RuleCursor, RuleFiring

__all__ = [
    "Approval",
    "Delivery",
    "Escalation",
    "EscalationEvent",
    "EscalationPolicy",
    "EscalationTrigger",
    "HealingAction",
    "HealingHold",
    "HealingRun",
    "HealingRunTransition",
    "HealthCheck",
    "HealthCheckResult",
    "HealthCheckTransition",
    "NotificationChannel",
    "RemediationRule",
    "RuleCursor",
    "RuleFiring",
    "Runbook",
    "Silence",
]

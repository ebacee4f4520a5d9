"""Remediation rules (data): when a check turns unhealthy, a breaker opens, or a pattern passes a count in a
window for a service, request a healing action. Every firing is a row, so a rule never fires twice for one
event and operators see what each rule did."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from core.slugs import validate_slug
from healing.actions.models import HealingAction, HealingRun
from healing.checks.models import HealthCheck


class RemediationRule(models.Model):
    class Trigger(models.TextChoices):
        CHECK_UNHEALTHY = "check_unhealthy"
        BREAKER_OPEN = "breaker_open"
        PATTERN_COUNT = "pattern_count"

    name = models.CharField(max_length=100, unique=True, validators=[validate_slug])
    description = models.TextField(blank=True)
    enabled = models.BooleanField(default=True)
    trigger = models.CharField(max_length=20, choices=Trigger.choices)
    # check_unhealthy: the check (its service is the target unless `service` names another).
    health_check = models.ForeignKey(
        HealthCheck, null=True, blank=True, on_delete=models.CASCADE, related_name="remediation_rules"
    )
    # breaker_open and pattern_count: the service watched, and the run's target.
    service = models.CharField(max_length=100, blank=True, validators=[validate_slug])
    # pattern_count: errors of this class (blank: any) for the service, at least `threshold` in `window_s`.
    error_class = models.CharField(max_length=20, blank=True)
    threshold = models.PositiveIntegerField(
        default=10, validators=[MinValueValidator(1), MaxValueValidator(1_000_000)]
    )
    window_s = models.PositiveIntegerField(
        default=300, validators=[MinValueValidator(1), MaxValueValidator(86_400)]
    )
    action = models.ForeignKey(HealingAction, on_delete=models.PROTECT, related_name="remediation_rules")
    parameters = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(trigger="check_unhealthy") | Q(health_check__isnull=False),
                name="remediation_check_rule_names_check",
            ),
            models.CheckConstraint(
                condition=Q(trigger="check_unhealthy") | ~Q(service=""), name="remediation_rule_names_service"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name}: {self.trigger} -> {self.action_id}"

    def target(self) -> str:
        if self.service:
            return self.service
        return self.health_check.service if self.health_check is not None else ""


class RuleFiring(models.Model):
    """One firing of a rule for one event (`event_key`, e.g. the check transition's or breaker transition's id,
    or the pattern window): unique, so a redelivered event or a second evaluator never fires it twice."""

    rule = models.ForeignKey(RemediationRule, on_delete=models.CASCADE, related_name="firings")
    event_key = models.CharField(max_length=200)
    detail = models.TextField(blank=True)
    run = models.ForeignKey(HealingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    outcome = models.CharField(max_length=200, blank=True, help_text="created, joined, skipped, refused: …")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["rule", "event_key"], name="rulefiring_once_per_event")
        ]

    def __str__(self) -> str:
        return f"{self.rule_id} on {self.event_key}"


class RuleCursor(models.Model):
    """How far the evaluator has read a stream of events (check transitions, breaker transitions)."""

    stream = models.CharField(max_length=50, unique=True)
    last_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.stream} at {self.last_id}"

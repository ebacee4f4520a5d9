"""The healing catalog (actions with a risk level), every run of an action with its state machine, every
state change and every human decision as a row, and the holds that stop an action being automatic."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from core.access.models import Agent
from core.slugs import validate_slug
from healing.checks.models import HealthCheck


class Risk(models.TextChoices):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class HealingAction(models.Model):
    """Something Rebound can do to heal a service: a webhook operators add, or one of Rebound's built-ins."""

    class Kind(models.TextChoices):
        WEBHOOK = "webhook"
        BUILTIN = "builtin"

    name = models.CharField(max_length=100, unique=True, validators=[validate_slug])
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.WEBHOOK)
    # For built-ins: the registered function (healing/actions/builtins.py), e.g. "reset_breaker".
    builtin = models.CharField(max_length=100, blank=True)
    risk = models.CharField(max_length=10, choices=Risk.choices, default=Risk.MEDIUM)
    enabled = models.BooleanField(default=True)
    cooldown_s = models.PositiveIntegerField(default=300, validators=[MaxValueValidator(7 * 86_400)])
    max_runs_per_hour = models.PositiveIntegerField(
        default=6, validators=[MinValueValidator(1), MaxValueValidator(3600)], help_text="Per target service."
    )
    timeout_s = models.FloatField(default=60, validators=[MinValueValidator(1), MaxValueValidator(3600)])
    parameters_schema = models.JSONField(
        default=dict, blank=True, help_text="A JSON Schema for the parameters."
    )
    verify_check = models.ForeignKey(
        HealthCheck, null=True, blank=True, on_delete=models.SET_NULL, related_name="verified_actions"
    )
    verify_within_s = models.PositiveIntegerField(
        default=120, validators=[MinValueValidator(1), MaxValueValidator(86_400)]
    )
    # webhook
    url = models.URLField(max_length=2000, blank=True)
    method = models.CharField(max_length=10, default="POST", blank=True)
    body_template = models.JSONField(null=True, blank=True, help_text="JSON with {{parameter}} placeholders.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(risk__in=["low", "medium", "high", "critical"]), name="action_risk_known"
            ),
            models.CheckConstraint(
                condition=Q(kind="webhook", builtin="") | (Q(kind="builtin") & ~Q(builtin="")),
                name="action_builtin_named",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.risk})"


class HealingRun(models.Model):
    """One request to run an action on a target service, and everything that happened to it."""

    class State(models.TextChoices):
        PENDING_APPROVAL = "pending_approval"
        APPROVED = "approved"
        RUNNING = "running"
        VERIFYING = "verifying"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        REJECTED = "rejected"
        EXPIRED = "expired"
        CANCELLED = "cancelled"
        SKIPPED = "skipped"

    class Trigger(models.TextChoices):
        OPERATOR = "operator"
        AGENT = "agent"
        RULE = "rule"
        ESCALATION = "escalation"

    OPEN_STATES = ("pending_approval", "approved", "running", "verifying")
    FINAL_STATES = ("succeeded", "failed", "rejected", "expired", "cancelled", "skipped")

    action = models.ForeignKey(HealingAction, on_delete=models.PROTECT, related_name="runs")
    service = models.CharField(max_length=100, validators=[validate_slug], db_index=True)
    parameters = models.JSONField(default=dict, blank=True)
    # The action's risk when the run was asked for: a later edit of the catalog does not change a run's policy.
    risk = models.CharField(max_length=10, choices=Risk.choices)
    approvals_required = models.PositiveSmallIntegerField(default=0)
    trigger = models.CharField(max_length=12, choices=Trigger.choices)
    requested_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_by_agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_by = models.CharField(
        max_length=200, help_text="The requester's label: user:…, agent:…, rule:…"
    )
    reason = models.TextField(help_text="Why it was asked for.")
    state = models.CharField(max_length=20, choices=State.choices, db_index=True)
    # Why the run is in its state (skipped: cooldown; failed: verification_failed, worker_lost, ...).
    state_reason = models.TextField(blank=True)
    # The Celery task that owns the execution: a delivery with another id is not the owner (fenced).
    task_id = models.CharField(max_length=255, blank=True)
    approval_deadline = models.DateTimeField(null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True, help_text="Skipped: when it may run again.")
    started_at = models.DateTimeField(null=True, blank=True)
    acted_at = models.DateTimeField(null=True, blank=True, help_text="When the action itself finished.")
    verify_deadline = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    output = models.JSONField(default=dict, blank=True, help_text="What the action answered (redacted).")
    created_at = models.DateTimeField(db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["action", "service", "-created_at"], name="healingrun_target_recent"),
            models.Index(fields=["state", "updated_at"], name="healingrun_state"),
        ]
        constraints = [
            # One open run per action and target: a second request joins it (no healing loops, no twin runs).
            models.UniqueConstraint(
                fields=["action", "service"],
                condition=Q(state__in=["pending_approval", "approved", "running", "verifying"]),
                name="healingrun_one_open_per_target",
            ),
            models.CheckConstraint(
                condition=Q(
                    state__in=[
                        "pending_approval",
                        "approved",
                        "running",
                        "verifying",
                        "succeeded",
                        "failed",
                        "rejected",
                        "expired",
                        "cancelled",
                        "skipped",
                    ]
                ),
                name="healingrun_state_known",
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.pk}: {self.action_id} on {self.service} ({self.state})"


class HealingRunTransition(models.Model):
    """One move of a run's state machine: history as data."""

    run = models.ForeignKey(HealingRun, on_delete=models.CASCADE, related_name="transitions")
    from_state = models.CharField(max_length=20, blank=True)
    to_state = models.CharField(max_length=20)
    reason = models.TextField(blank=True)
    actor = models.CharField(max_length=200, help_text="user:…, agent:…, rule:…, system")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"run {self.run_id}: {self.from_state or '-'} -> {self.to_state}"


class Approval(models.Model):
    """A human decision on a run: an approval, a rejection or a cancellation."""

    class Decision(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"
        CANCEL = "cancel"

    run = models.ForeignKey(HealingRun, on_delete=models.CASCADE, related_name="approvals")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decision = models.CharField(max_length=10, choices=Decision.choices)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # One approval per operator and run: fifty clicks of one person are one approval.
            models.UniqueConstraint(
                fields=["run", "user"], condition=Q(decision="approve"), name="approval_one_per_operator"
            )
        ]

    def __str__(self) -> str:
        return f"{self.decision} of run {self.run_id} by {self.user_id}"


class HealingHold(models.Model):
    """An action that stopped being automatic for a target: it "succeeded" but its verification kept failing.
    Until an operator clears it, requests from agents and rules for this action and target wait for a human."""

    action = models.ForeignKey(HealingAction, on_delete=models.CASCADE, related_name="holds")
    service = models.CharField(max_length=100, validators=[validate_slug])
    reason = models.TextField()
    created_at = models.DateTimeField()
    cleared_at = models.DateTimeField(null=True, blank=True)
    cleared_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    cleared_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["action", "service"],
                condition=Q(cleared_at__isnull=True),
                name="healinghold_one_open",
            )
        ]

    def __str__(self) -> str:
        return f"hold on {self.action_id} for {self.service}"

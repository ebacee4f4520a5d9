"""The escalation review queue: escalations (one open per dedup key, a database constraint), every change as an
event row, the triggers that raise them and the policy that raises unacknowledged ones (both data), and the
runbooks that say what a human should do."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from core.access.models import Agent
from healing.actions.models import HealingRun
from recovery.breakers.models import BreakerTransition
from recovery.checkpoints.models import Task
from recovery.decisions.models import RecoveryPlan
from recovery.errors.models import ErrorPattern
from recovery.errors.taxonomy import ErrorClass
from recovery.retries.models import RetryJob
from recovery.sagas.models import Transaction


class Level(models.TextChoices):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"
    EMERGENCY = "emergency"


# The order of levels: a repeat raises an escalation's level, never lowers it.
LEVEL_RANK = {"info": 0, "warning": 1, "critical": 2, "emergency": 3}
LEVELS = list(LEVEL_RANK)


def higher(a: str, b: str) -> str:
    return a if LEVEL_RANK[a] >= LEVEL_RANK[b] else b


class TriggerKind(models.TextChoices):
    """What raised an escalation: the escalation triggers of the MCP error workflow, and an agent."""

    CRITICAL_ERROR = "critical_error"  # a critical or fatal error from an essential service
    SECURITY = "security"  # authentication or permission errors
    DATA_INTEGRITY = (
        "data_integrity"  # errors a classification rule marks as integrity (constraint violations)
    )
    REPEATED_PATTERN = "repeated_pattern"  # the same pattern more than N times in a window
    ERROR_RATE = "error_rate"  # a service's error rate over a threshold
    FALLBACKS_EXHAUSTED = "fallbacks_exhausted"  # the planner had nothing left
    PLANNER_ESCALATE = "planner_escalate"  # the planner answered escalate
    RETRY_NEEDS_HUMAN = "retry_needs_human"  # a server-side retry ended needing a human
    ROLLBACK_FAILED = "rollback_failed"  # a transaction whose rollback failed
    HEARTBEAT_MISSED = "heartbeat_missed"  # a task that missed its heartbeat deadline
    BREAKER_OPEN_TOO_LONG = "breaker_open_too_long"  # an essential service's breaker open too long
    HEALTH_CHECK_UNHEALTHY = "health_check_unhealthy"  # a health check turned unhealthy
    HEALING_RUN_FAILED = "healing_run_failed"  # failed, failed verification, or stopped as a loop
    APPROVAL_WAITING = "approval_waiting"  # a healing run waiting for approval
    AGENT = "agent"  # an agent raised it itself (POST /api/v1/escalations)


class State(models.TextChoices):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    SNOOZED = "snoozed"
    RESOLVED = "resolved"


NOT_RESOLVED = ("open", "acknowledged", "snoozed")


class EscalationTrigger(models.Model):
    """One trigger, as data: on or off, its default level, and its thresholds (which fields a kind reads is
    written beside each; the others are ignored). Built in, one row per kind: operators edit, never add."""

    kind = models.CharField(max_length=30, choices=TriggerKind.choices, unique=True)
    description = models.TextField(blank=True)
    enabled = models.BooleanField(default=True)
    level = models.CharField(max_length=10, choices=Level.choices, help_text="The level it raises at.")
    # security: the level once the same key has been raised `count` times within `window_s`.
    repeat_level = models.CharField(max_length=10, choices=Level.choices, blank=True)
    # repeated_pattern: more than `count` errors in `window_s`; security: repeats for repeat_level.
    count = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(1_000_000)]
    )
    # repeated_pattern, error_rate, security: the window, in seconds.
    window_s = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(86_400)]
    )
    # error_rate: above this percent of calls failed, with at least `min_calls` calls in the window.
    rate_percent = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0), MaxValueValidator(100)]
    )
    min_calls = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(10_000_000)]
    )
    # breaker_open_too_long: open longer than this many seconds; heartbeat_missed is the tasks' own deadline.
    duration_s = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(30 * 86_400)]
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kind"]

    def __str__(self) -> str:
        return f"{self.kind} ({self.level}{'' if self.enabled else ', off'})"


class EscalationPolicy(models.Model):
    """One step of the escalation policy (data): an escalation still unacknowledged at `from_level` for
    `after_s` seconds since its level last changed is raised to `to_level`."""

    from_level = models.CharField(max_length=10, choices=Level.choices, unique=True)
    to_level = models.CharField(max_length=10, choices=Level.choices)
    after_s = models.PositiveIntegerField(validators=[MinValueValidator(1), MaxValueValidator(30 * 86_400)])
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["from_level"]
        verbose_name_plural = "escalation policy steps"

    def __str__(self) -> str:
        return f"{self.from_level} -> {self.to_level} after {self.after_s} s"


class Runbook(models.Model):
    """Recommended actions for a human, matched by service, error class and trigger (blank: any). The most
    specific enabled match wins, then the lowest priority."""

    name = models.CharField(max_length=100, unique=True)
    service = models.CharField(max_length=100, blank=True)
    error_class = models.CharField(max_length=20, choices=ErrorClass.choices, blank=True)
    trigger = models.CharField(max_length=30, choices=TriggerKind.choices, blank=True)
    priority = models.IntegerField(default=100)
    steps = models.TextField(help_text="The recommended action, one step per line.")
    enabled = models.BooleanField(default=True)
    builtin = models.BooleanField(default=False, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["priority", "id"]

    def __str__(self) -> str:
        return self.name


class Escalation(models.Model):
    """Something a human must look at. One not resolved per dedup key; repeats count into it."""

    level = models.CharField(max_length=10, choices=Level.choices)
    state = models.CharField(max_length=15, choices=State.choices, default=State.OPEN)
    title = models.CharField(max_length=200)
    summary = models.TextField(blank=True)
    trigger = models.CharField(max_length=30, choices=TriggerKind.choices)
    dedup_key = models.CharField(max_length=300)
    service = models.CharField(max_length=100, blank=True, db_index=True)
    error_class = models.CharField(max_length=20, choices=ErrorClass.choices, blank=True)

    # What is behind it, where the trigger knows.
    pattern = models.ForeignKey(
        ErrorPattern, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    task = models.ForeignKey(Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    transaction = models.ForeignKey(
        Transaction, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    retry_job = models.ForeignKey(
        RetryJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    healing_run = models.ForeignKey(
        HealingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    breaker_transition = models.ForeignKey(
        BreakerTransition, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    plan = models.ForeignKey(RecoveryPlan, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    # Who raised it: an agent (agents read their own), or the system (raised_by "system" or "trigger:…").
    raised_by_agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    raised_by = models.CharField(max_length=200)

    occurrences = models.PositiveIntegerField(default=1)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    # When the level last changed (or it was raised or reopened): the escalation policy's timers count from it.
    level_changed_at = models.DateTimeField()

    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    snoozed_until = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.TextField(blank=True)
    auto_resolved = models.BooleanField(default=False)

    context = models.JSONField(default=dict, blank=True)
    recommended_action = models.TextField(blank=True)
    runbook = models.ForeignKey(Runbook, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Bumped (in the same compare-and-set) whenever the escalation must be told again: raised, level rose,
    # reopened. A Delivery is unique per (channel, escalation, notice), so one change notifies a channel once.
    notice = models.PositiveIntegerField(default=0)

    created_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-first_seen_at", "-id"]
        indexes = [
            models.Index(fields=["state", "level", "first_seen_at"], name="escalation_queue"),
            models.Index(fields=["dedup_key", "-resolved_at"], name="escalation_key_recent"),
        ]
        constraints = [
            # One escalation not resolved per key: a repeat counts into it, whatever the number of raisers.
            models.UniqueConstraint(
                fields=["dedup_key"],
                condition=Q(state__in=["open", "acknowledged", "snoozed"]),
                name="escalation_one_open_per_key",
            ),
            models.CheckConstraint(
                condition=Q(level__in=["info", "warning", "critical", "emergency"]),
                name="escalation_level_known",
            ),
            models.CheckConstraint(
                condition=Q(state__in=["open", "acknowledged", "snoozed", "resolved"]),
                name="escalation_state_known",
            ),
            models.CheckConstraint(
                condition=~Q(state="snoozed") | Q(snoozed_until__isnull=False),
                name="escalation_snooze_has_end",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.level} {self.title[:60]} ({self.state})"

    @property
    def is_resolved(self) -> bool:
        return self.state == State.RESOLVED


class EscalationEvent(models.Model):
    """One change of an escalation: history as data, with who did it."""

    class Kind(models.TextChoices):
        RAISED = "raised"
        REPEATED = "repeated"
        LEVEL_CHANGED = "level_changed"
        ACKNOWLEDGED = "acknowledged"
        ASSIGNED = "assigned"
        COMMENTED = "commented"
        SNOOZED = "snoozed"
        WOKE = "woke"
        RESOLVED = "resolved"
        REOPENED = "reopened"
        NOTIFIED = "notified"

    escalation = models.ForeignKey(Escalation, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=15, choices=Kind.choices)
    actor = models.CharField(max_length=200, help_text="user:…, agent:…, trigger:…, policy, system")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    from_level = models.CharField(max_length=10, blank=True)
    to_level = models.CharField(max_length=10, blank=True)
    text = models.TextField(blank=True, help_text="The comment, the reason, the resolution, the channel.")
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["escalation", "created_at"], name="escalationevent_history")]

    def __str__(self) -> str:
        return f"#{self.escalation_id} {self.kind} by {self.actor}"

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from recovery.taxonomy import ErrorClass, ErrorKind, Severity


class Agent(models.Model):
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ApiKey(models.Model):
    """A bearer key, stored as a public prefix plus the SHA-256 of the whole key (as GitHub tokens are).

    The key belongs to an agent or to a user (for scripts, acting with that user's permissions), never both.
    """

    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    name = models.CharField(max_length=100, blank=True)
    agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.CASCADE, related_name="keys")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="api_keys"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(agent__isnull=False) & Q(user__isnull=True))
                | (Q(agent__isnull=True) & Q(user__isnull=False)),
                name="apikey_one_owner",
            )
        ]

    def __str__(self) -> str:
        return f"rb_{self.prefix}_…"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def owner_label(self) -> str:
        return f"agent:{self.agent}" if self.agent_id else f"user:{self.user}"


validate_slug = RegexValidator(
    r"^[a-z0-9][a-z0-9_.:-]{0,99}$", "a lower-case slug: letters, digits and . _ : - (at most 100)"
)


def validate_regex(value: str) -> None:
    try:
        re.compile(value)
    except re.error as error:
        raise ValidationError(f"not a valid regular expression: {error}") from error


class ClassificationRule(models.Model):
    """One rule of the classifier. Every criterion that is set must match; the lowest priority wins."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    enabled = models.BooleanField(default=True)
    priority = models.IntegerField(default=500, help_text="Lower numbers are tried first.")
    builtin = models.BooleanField(default=False, editable=False)

    type_names = models.JSONField(
        default=list, blank=True, help_text='Exception type names, e.g. ["TimeoutError", "ConnectTimeout"].'
    )
    status_min = models.PositiveSmallIntegerField(null=True, blank=True)
    status_max = models.PositiveSmallIntegerField(null=True, blank=True)
    message_regex = models.CharField(
        max_length=500, blank=True, validators=[validate_regex], help_text="Searched case-insensitively."
    )
    service = models.CharField(max_length=100, blank=True, help_text="Only errors of this service.")

    error_class = models.CharField(max_length=20, choices=ErrorClass.choices)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    kind = models.CharField(max_length=30, choices=ErrorKind.choices, default=ErrorKind.UNKNOWN)
    retryable = models.BooleanField()
    counts_toward_breaker = models.BooleanField()
    needs_human = models.BooleanField(default=False)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["priority", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status_min__isnull=True)
                | Q(status_max__isnull=True)
                | Q(status_min__lte=models.F("status_max")),
                name="rule_status_range_ordered",
            )
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if not (self.type_names or self.status_min or self.status_max or self.message_regex):
            raise ValidationError(
                "A rule needs at least one of type names, a status range or a message regex."
            )
        if not isinstance(self.type_names, list) or not all(isinstance(t, str) for t in self.type_names):
            raise ValidationError({"type_names": "must be a list of strings"})


# What an operator may set on a rule (the API, the admin and the audit trail's before and after).
RULE_FIELDS = [
    "name",
    "description",
    "enabled",
    "priority",
    "type_names",
    "status_min",
    "status_max",
    "message_regex",
    "service",
    "error_class",
    "severity",
    "kind",
    "retryable",
    "counts_toward_breaker",
    "needs_human",
]


class ErrorPattern(models.Model):
    """Errors grouped by fingerprint. One row per fingerprint, counted atomically by an upsert."""

    # Only the fingerprint is indexed: the table holds one row per kind of error (small), and a counted
    # repeat then changes no indexed column, so PostgreSQL updates the row in place (a HOT update).
    fingerprint = models.CharField(max_length=64, unique=True)
    service = models.CharField(max_length=100)
    operation = models.CharField(max_length=200, blank=True)
    error_class = models.CharField(max_length=20, choices=ErrorClass.choices)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    kind = models.CharField(max_length=30, choices=ErrorKind.choices)
    type_name = models.CharField(max_length=200, blank=True)
    message_template = models.TextField(blank=True)
    sample_message = models.TextField(blank=True)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    total_count = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-last_seen_at"]

    def __str__(self) -> str:
        return f"{self.service}/{self.error_class}: {self.message_template[:60]}"


class ErrorEvent(models.Model):
    """One reported error. Pruned after ERROR_EVENT_RETENTION_DAYS; the pattern keeps the totals."""

    # The (pattern, occurred_at) index serves the pattern look-ups; fewer indexes, cheaper inserts.
    pattern = models.ForeignKey(ErrorPattern, on_delete=models.CASCADE, related_name="events", db_index=False)
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    occurred_at = models.DateTimeField(db_index=True)
    service = models.CharField(max_length=100)
    operation = models.CharField(max_length=200, blank=True)
    error_class = models.CharField(max_length=20, choices=ErrorClass.choices)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    type_name = models.CharField(max_length=200, blank=True)
    message = models.TextField(blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    retry_after_s = models.FloatField(null=True, blank=True)
    rule_name = models.CharField(max_length=100, blank=True)
    context = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    # Buffered intake: the stream entry and position an event came from. Unique, so a redelivered batch
    # inserts nothing twice and counts nothing twice.
    intake_key = models.CharField(max_length=48, null=True, blank=True, unique=True)

    class Meta:
        ordering = ["-occurred_at"]
        indexes = [
            models.Index(fields=["pattern", "occurred_at"]),
            models.Index(fields=["error_class", "occurred_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.service} {self.error_class} at {self.occurred_at:%Y-%m-%d %H:%M:%S}"


class Service(models.Model):
    """Anything an agent calls, with its breaker settings and the operator's override."""

    class Kind(models.TextChoices):
        TOOL = "tool"
        MCP_SERVER = "mcp_server"
        HTTP_API = "http_api"
        MODEL_PROVIDER = "model_provider"
        DATABASE = "database"
        OTHER = "other"

    class Criticality(models.TextChoices):
        ESSENTIAL = "essential"
        NON_CRITICAL = "non_critical"

    class WindowType(models.TextChoices):
        COUNT = "count"
        TIME = "time"

    class Override(models.TextChoices):
        AUTO = "auto"
        FORCED_OPEN = "forced_open"
        FORCED_CLOSED = "forced_closed"
        DISABLED = "disabled"

    name = models.CharField(max_length=100, unique=True, validators=[validate_slug])
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.OTHER)
    criticality = models.CharField(
        max_length=20, choices=Criticality.choices, default=Criticality.NON_CRITICAL
    )
    description = models.TextField(blank=True)
    auto_registered = models.BooleanField(default=False, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    failure_rate_threshold = models.FloatField(
        default=50, validators=[MinValueValidator(1), MaxValueValidator(100)], help_text="Percent."
    )
    window_type = models.CharField(max_length=10, choices=WindowType.choices, default=WindowType.COUNT)
    window_size = models.PositiveIntegerField(
        default=20,
        validators=[MinValueValidator(1), MaxValueValidator(10_000)],
        help_text="Calls, or seconds.",
    )
    minimum_calls = models.PositiveIntegerField(default=10, validators=[MinValueValidator(1)])
    consecutive_failures = models.PositiveIntegerField(default=5, help_text="0 turns this trigger off.")
    slow_call_ms = models.PositiveIntegerField(default=0, help_text="Slower calls count as failures; 0: off.")
    wait_duration_s = models.FloatField(default=30, validators=[MinValueValidator(0.001)])
    half_open_max_calls = models.PositiveIntegerField(default=3, validators=[MinValueValidator(1)])
    success_threshold = models.PositiveIntegerField(default=2, validators=[MinValueValidator(1)])
    wait_multiplier = models.FloatField(default=1.0, validators=[MinValueValidator(1)])
    max_wait_s = models.FloatField(default=300, validators=[MinValueValidator(0.001)])

    # Retry budget (as Envoy has): retries may be at most this share of the calls of the last window, with a
    # floor so that a quiet service can still retry; beyond it the planner falls back or fails fast.
    retry_budget_percent = models.FloatField(
        default=20,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="Percent of recent calls.",
    )
    retry_budget_min_retries = models.PositiveIntegerField(
        default=3, help_text="Retries always allowed per window."
    )
    retry_budget_window_s = models.PositiveIntegerField(
        default=10, validators=[MinValueValidator(1), MaxValueValidator(3600)], help_text="Seconds."
    )
    # Degradation: from which level agents should skip this service. Blank: non-critical services from
    # "minimal", essential ones never.
    skip_from_level = models.CharField(
        max_length=10,
        blank=True,
        choices=[
            ("degraded", "degraded"),
            ("minimal", "minimal"),
            ("emergency", "emergency"),
            ("never", "never"),
        ],
    )

    override = models.CharField(max_length=20, choices=Override.choices, default=Override.AUTO)
    override_reason = models.TextField(blank=True)
    override_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(override="auto") | ~Q(override_reason=""), name="service_override_has_reason"
            ),
            models.CheckConstraint(
                condition=Q(max_wait_s__gte=models.F("wait_duration_s")), name="service_max_wait"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class BreakerState(models.Model):
    """A breaker's state in the embedded (database) store. The Redis store keeps the same fields in a hash."""

    service = models.OneToOneField(Service, on_delete=models.CASCADE, related_name="breaker_state")
    data = models.JSONField(default=dict)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.service}: {self.data.get('state', 'closed')}"


class BreakerTransition(models.Model):
    """One change of a breaker's state, with why and the window it saw. Written on transitions only."""

    class Actor(models.TextChoices):
        AUTOMATIC = "automatic"
        AGENT = "agent"
        USER = "user"

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="transitions")
    from_state = models.CharField(max_length=20)
    to_state = models.CharField(max_length=20)
    reason = models.TextField()
    actor = models.CharField(max_length=10, choices=Actor.choices, default=Actor.AUTOMATIC)
    actor_agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    window = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["service", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.service}: {self.from_state} → {self.to_state}"


# The models of recovery decisions live in their own module; importing them here registers them.
from recovery.decision_models import (  # noqa: E402
    GLOBAL_SCOPE,
    LEVEL_RANK,
    DegradationEvent,
    DegradationLevel,
    DegradationRule,
    DegradationState,
    FallbackInvocation,
    FallbackOption,
    Operation,
    RecoveryPlan,
    RetryAttempt,
    RetryJob,
    RetryPolicy,
)
from recovery.state_models import (  # noqa: E402
    Checkpoint,
    CompensationAttempt,
    Task,
    Transaction,
    TransactionStep,
)

__all__ = [
    "GLOBAL_SCOPE",
    "LEVEL_RANK",
    "Agent",
    "ApiKey",
    "BreakerState",
    "BreakerTransition",
    "Checkpoint",
    "ClassificationRule",
    "CompensationAttempt",
    "DegradationEvent",
    "DegradationLevel",
    "DegradationRule",
    "DegradationState",
    "ErrorEvent",
    "ErrorPattern",
    "FallbackInvocation",
    "FallbackOption",
    "Operation",
    "RecoveryPlan",
    "RetryAttempt",
    "RetryJob",
    "RetryPolicy",
    "Service",
    "Task",
    "Transaction",
    "TransactionStep",
]

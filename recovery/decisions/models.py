"""Models of recovery decisions: operations, retry policies, plans, server-side retries, fallback chains and
degradation. Imported by recovery.models, so Django sees them as the recovery app's."""

from __future__ import annotations

import uuid

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q

from recovery.errors.taxonomy import ErrorClass, ErrorKind, Severity

# The classes a retry policy retries unless it says otherwise: those where trying again can help.
DEFAULT_RETRY_ON = [
    ErrorClass.TRANSIENT.value,
    ErrorClass.RATE_LIMIT.value,
    ErrorClass.RESOURCE.value,
    ErrorClass.EXTERNAL_SERVICE.value,
]


def default_retry_on() -> list[str]:
    return list(DEFAULT_RETRY_ON)


class Operation(models.Model):
    """One operation of a service (a tool, an endpoint, a query), with what the planner must know of it."""

    service = models.ForeignKey("recovery.Service", on_delete=models.CASCADE, related_name="operations")
    name = models.CharField(max_length=200)
    idempotent = models.BooleanField(
        default=True,
        help_text="A non-idempotent operation is never retried automatically unless the agent sends an "
        "idempotency key.",
    )
    critical = models.BooleanField(
        default=True, help_text="Non-critical work may be skipped with a partial result and a warning."
    )
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["service__name", "name"]
        constraints = [models.UniqueConstraint(fields=["service", "name"], name="operation_unique_name")]

    def __str__(self) -> str:
        return f"{self.service}/{self.name}"


class RetryPolicy(models.Model):
    """How to retry. Scope, most specific first: a service's operation, a service, an error kind, an error
    class, the global default (no service, no class, no kind)."""

    class Strategy(models.TextChoices):
        NONE = "none"
        FIXED = "fixed"
        LINEAR = "linear"
        EXPONENTIAL = "exponential"
        EXPONENTIAL_FULL_JITTER = "exponential_full_jitter"
        DECORRELATED_JITTER = "decorrelated_jitter"

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    builtin = models.BooleanField(default=False, editable=False)

    service = models.ForeignKey(
        "recovery.Service", null=True, blank=True, on_delete=models.CASCADE, related_name="retry_policies"
    )
    operation = models.CharField(max_length=200, blank=True, help_text="Only with a service.")
    error_class = models.CharField(
        max_length=20, choices=ErrorClass.choices, blank=True, help_text="A class default (no service)."
    )
    kind = models.CharField(
        max_length=30, choices=ErrorKind.choices, blank=True, help_text="A kind default (no service)."
    )

    strategy = models.CharField(max_length=30, choices=Strategy.choices, default=Strategy.EXPONENTIAL)
    max_attempts = models.PositiveSmallIntegerField(
        default=3,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="All attempts, the first included: 1 means no retry.",
    )
    base_delay_s = models.FloatField(default=1.0, validators=[MinValueValidator(0)])
    multiplier = models.FloatField(default=2.0, validators=[MinValueValidator(1)])
    max_delay_s = models.FloatField(default=16.0, validators=[MinValueValidator(0)])
    deadline_s = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.001)], help_text="Give up after this long."
    )
    honour_retry_after = models.BooleanField(default=True)
    retry_on = models.JSONField(default=default_retry_on, blank=True, help_text="Error classes retried.")

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "retry policies"
        constraints = [
            models.CheckConstraint(
                condition=Q(operation="") | Q(service__isnull=False),
                name="retrypolicy_operation_needs_service",
            ),
            models.CheckConstraint(
                condition=Q(service__isnull=True) | (Q(error_class="") & Q(kind="")),
                name="retrypolicy_service_or_class_scope",
            ),
            models.CheckConstraint(
                condition=Q(max_delay_s__gte=F("base_delay_s")), name="retrypolicy_max_delay"
            ),
            models.UniqueConstraint(
                fields=["service", "operation"],
                condition=Q(service__isnull=False),
                name="retrypolicy_one_per_service_operation",
            ),
            models.UniqueConstraint(
                fields=["error_class", "kind"],
                condition=Q(service__isnull=True),
                name="retrypolicy_one_per_class_kind",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def scope(self) -> str:
        if self.service_id:
            return "operation" if self.operation else "service"
        if self.kind:
            return "kind"
        return "error_class" if self.error_class else "global"


class RecoveryPlan(models.Model):
    """One answer of the planner, and whether following it worked (from the outcome that names it)."""

    class Action(models.TextChoices):
        RETRY = "retry"
        FALLBACK = "fallback"
        WAIT = "wait"
        DEGRADE = "degrade"
        ESCALATE = "escalate"
        ABORT = "abort"

    class Result(models.TextChoices):
        PENDING = "pending"  # the outcome that follows the plan will say
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        UNKNOWN = "unknown"  # no outcome came in time: whether following the plan worked is not known

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey(
        "core.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    service = models.CharField(max_length=100)
    operation = models.CharField(max_length=200, blank=True)
    task_id = models.CharField(max_length=200, blank=True)
    attempt = models.PositiveIntegerField(default=1)
    elapsed_s = models.FloatField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=200, blank=True)

    error_class = models.CharField(max_length=20, choices=ErrorClass.choices)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    kind = models.CharField(max_length=30, choices=ErrorKind.choices)
    # The error's pattern (recovery/errors): what error learning keys its figures on.
    fingerprint = models.CharField(max_length=64, blank=True)
    policy = models.ForeignKey(
        RetryPolicy, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )

    action = models.CharField(max_length=10, choices=Action.choices)
    delay_s = models.FloatField(null=True, blank=True)
    fallback = models.JSONField(null=True, blank=True)
    attempts_left = models.IntegerField(null=True, blank=True)
    reason = models.TextField()
    inputs = models.JSONField(
        default=dict, blank=True, help_text="What the planner saw: breaker, budget, ..."
    )

    result = models.CharField(max_length=10, choices=Result.choices, default=Result.PENDING)
    result_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["service", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.service}: {self.action} ({self.error_class})"


class FallbackOption(models.Model):
    """One step of a service's fallback chain, tried in position order."""

    class Kind(models.TextChoices):
        SERVICE = "service"  # another service and operation; skipped while its breaker is open
        CACHE = "cache"  # the cached last good result
        STATIC = "static"  # a static default
        SKIP = "skip"  # skip non-critical work with a partial result and a warning

    service = models.ForeignKey("recovery.Service", on_delete=models.CASCADE, related_name="fallbacks")
    operation = models.CharField(
        max_length=200, blank=True, help_text="Blank: every operation of the service."
    )
    position = models.PositiveSmallIntegerField(default=1)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    enabled = models.BooleanField(default=True)
    description = models.TextField(blank=True)

    target_service = models.ForeignKey(
        "recovery.Service", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    target_operation = models.CharField(max_length=200, blank=True)
    static_value = models.JSONField(null=True, blank=True)
    max_age_s = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Cache: the oldest result accepted.",
    )
    warning = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["service__name", "operation", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["service", "operation", "position"], name="fallbackoption_unique_position"
            ),
            models.CheckConstraint(
                condition=~Q(kind="service") | Q(target_service__isnull=False),
                name="fallbackoption_service_has_target",
            ),
            models.CheckConstraint(
                condition=~Q(kind="static") | Q(static_value__isnull=False),
                name="fallbackoption_static_has_value",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.service}/{self.operation or '*'} #{self.position}: {self.kind}"


class FallbackInvocation(models.Model):
    """One use of a fallback (or a chain found exhausted), for history and fallback_invocations_total."""

    service = models.CharField(max_length=100)
    operation = models.CharField(max_length=200, blank=True)
    option = models.ForeignKey(
        FallbackOption, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    kind = models.CharField(max_length=10, help_text="The option's kind, or 'exhausted'.")
    agent = models.ForeignKey(
        "core.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    plan = models.ForeignKey(
        RecoveryPlan, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.service}: {self.kind}"

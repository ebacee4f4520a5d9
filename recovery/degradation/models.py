"""Degradation levels in force (per scope), their history, and the rules that set them."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q


class DegradationLevel(models.TextChoices):
    NORMAL = "normal"
    DEGRADED = "degraded"
    MINIMAL = "minimal"
    EMERGENCY = "emergency"


# Levels in order, for comparisons: a higher rank is a worse state.
LEVEL_RANK = {level.value: rank for rank, level in enumerate(DegradationLevel)}
GLOBAL_SCOPE = "*"  # not a slug, so it never names a service


class DegradationState(models.Model):
    """The degradation level of one scope: the fleet ("*") or one service. One row per scope."""

    scope = models.CharField(max_length=100, unique=True)
    automatic_level = models.CharField(
        max_length=10, choices=DegradationLevel.choices, default=DegradationLevel.NORMAL
    )
    automatic_reason = models.TextField(blank=True)
    # Hysteresis: a lower level the signals have asked for, and since when; applied once it has held long enough.
    pending_level = models.CharField(max_length=10, choices=DegradationLevel.choices, blank=True)
    pending_since = models.DateTimeField(null=True, blank=True)
    forced_level = models.CharField(max_length=10, choices=DegradationLevel.choices, blank=True)
    forced_reason = models.TextField(blank=True)
    forced_until = models.DateTimeField(null=True, blank=True)
    forced_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    changed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["scope"]
        constraints = [
            models.CheckConstraint(
                condition=Q(forced_level="") | ~Q(forced_reason=""), name="degradation_forced_has_reason"
            )
        ]

    def __str__(self) -> str:
        return f"{self.scope}: {self.forced_level or self.automatic_level}"


class DegradationEvent(models.Model):
    """One change of a scope's effective level, automatic or by an operator."""

    class Source(models.TextChoices):
        AUTOMATIC = "automatic"
        OPERATOR = "operator"
        EXPIRY = "expiry"

    scope = models.CharField(max_length=100)
    from_level = models.CharField(max_length=10, choices=DegradationLevel.choices)
    to_level = models.CharField(max_length=10, choices=DegradationLevel.choices)
    source = models.CharField(max_length=10, choices=Source.choices)
    reason = models.TextField()
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    signals = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["scope", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.scope}: {self.from_level} → {self.to_level}"


class DegradationRule(models.Model):
    """When the signals reach a threshold, the scope's automatic level rises to at least `level`."""

    class Signal(models.TextChoices):
        ESSENTIAL_BREAKERS_OPEN = "essential_breakers_open"  # fleet: essential services with an open breaker
        BREAKERS_OPEN = "breakers_open"  # fleet: services with an open breaker
        SERVICE_BREAKER_OPEN = "service_breaker_open"  # per service: 1 while its breaker is open
        ERRORS_PER_MINUTE = "errors_per_minute"  # fleet, or the rule's service: over the last 5 minutes

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    enabled = models.BooleanField(default=True)
    builtin = models.BooleanField(default=False, editable=False)
    signal = models.CharField(max_length=30, choices=Signal.choices)
    threshold = models.FloatField(validators=[MinValueValidator(0)])
    level = models.CharField(max_length=10, choices=DegradationLevel.choices)
    service = models.ForeignKey(
        "recovery.Service",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="degradation_rules",
        help_text="Blank: the fleet (or, for service_breaker_open, every service).",
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=~Q(level="normal"), name="degradationrule_level_above_normal")
        ]

    def __str__(self) -> str:
        return self.name

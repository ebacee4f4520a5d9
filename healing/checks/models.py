"""Health checks (data, editable without a restart), every run of one as a result row, and every change of a
check's state as a transition row: history as data, as healthchecks keeps its pings and flips."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from core.slugs import validate_slug


class HealthCheck(models.Model):
    """One check of one service: what to probe, how often, and the rise/fall hysteresis of its verdict."""

    class Kind(models.TextChoices):
        HTTP = "http"
        TCP = "tcp"
        HEARTBEAT = "heartbeat"  # pushed: something outside pings, silence is a failure
        CELERY = "celery"

    class State(models.TextChoices):
        UNKNOWN = "unknown"
        HEALTHY = "healthy"
        UNHEALTHY = "unhealthy"

    name = models.CharField(max_length=100, unique=True, validators=[validate_slug])
    # The breaker's service, by name (a slug): a check may be created before any agent has called the service.
    service = models.CharField(max_length=100, validators=[validate_slug], db_index=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    description = models.TextField(blank=True)
    interval_s = models.FloatField(default=30, validators=[MinValueValidator(1), MaxValueValidator(86_400)])
    timeout_s = models.FloatField(default=5, validators=[MinValueValidator(0.1), MaxValueValidator(120)])
    rise = models.PositiveIntegerField(default=2, validators=[MinValueValidator(1), MaxValueValidator(100)])
    fall = models.PositiveIntegerField(default=3, validators=[MinValueValidator(1), MaxValueValidator(100)])
    enabled = models.BooleanField(default=True)
    drives_breaker = models.BooleanField(default=False)

    # http
    method = models.CharField(max_length=10, default="GET", blank=True)
    url = models.URLField(max_length=2000, blank=True)
    expected_status = models.JSONField(
        default=list, blank=True, help_text="Status codes that pass; [] : 2xx."
    )
    body_contains = models.CharField(max_length=1000, blank=True)
    # tcp
    host = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    # celery
    queue = models.CharField(max_length=200, blank=True)
    # heartbeat: silence longer than interval_s + grace_s is a failure
    grace_s = models.FloatField(default=0, validators=[MinValueValidator(0), MaxValueValidator(86_400)])

    state = models.CharField(max_length=10, choices=State.choices, default=State.UNKNOWN)
    consecutive_passes = models.PositiveIntegerField(default=0)
    consecutive_failures = models.PositiveIntegerField(default=0)
    # The dispatcher claims a due run by moving next_due_at forward (compare-and-set): one claim per due run.
    next_due_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_ping_at = models.DateTimeField(null=True, blank=True)
    state_changed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["enabled", "next_due_at"], name="healthcheck_due")]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=["http", "tcp", "heartbeat", "celery"]), name="healthcheck_kind_known"
            ),
            models.CheckConstraint(condition=Q(timeout_s__gt=0), name="healthcheck_timeout_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind}, {self.state})"


class HealthCheckResult(models.Model):
    """One run of a check (or one ping of a heartbeat check, or one missed ping)."""

    class Source(models.TextChoices):
        SCHEDULED = "scheduled"
        MANUAL = "manual"  # an operator's "run now"
        PING = "ping"
        VERIFICATION = "verification"  # asked for by a healing run that waits on this check

    health_check = models.ForeignKey(HealthCheck, on_delete=models.CASCADE, related_name="results")
    ok = models.BooleanField()
    latency_ms = models.FloatField(null=True, blank=True)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    source = models.CharField(max_length=12, choices=Source.choices, default=Source.SCHEDULED)
    # The due time this run answered (scheduled runs): a second delivery of the same run finds its row.
    due_at = models.DateTimeField(null=True, blank=True)
    # When the probe began: against due_at, how late the scheduler ran it (bench/health_checks.py).
    started_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["health_check", "-created_at"], name="healthresult_check_recent")]
        constraints = [
            models.UniqueConstraint(
                fields=["health_check", "due_at"],
                condition=Q(due_at__isnull=False),
                name="healthresult_one_per_due",
            )
        ]

    def __str__(self) -> str:
        return f"{self.health_check_id} {'ok' if self.ok else 'fail'} at {self.created_at:%Y-%m-%d %H:%M:%S}"


class HealthCheckTransition(models.Model):
    """A change of a check's state, with the result that caused it and what it did to the breaker."""

    health_check = models.ForeignKey(HealthCheck, on_delete=models.CASCADE, related_name="transitions")
    from_state = models.CharField(max_length=10, choices=HealthCheck.State.choices)
    to_state = models.CharField(max_length=10, choices=HealthCheck.State.choices)
    reason = models.TextField()
    result = models.ForeignKey(
        HealthCheckResult, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # What the verdict did to the service's breaker: "opened", "half_open", "override forced_closed in force", ...
    breaker_effect = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.health_check_id}: {self.from_state} -> {self.to_state}"

"""Classification rules (data, editable), error patterns (one row per fingerprint) and error events."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from core.access.models import Agent
from recovery.errors.classification import PRIORITY_MAX, PRIORITY_MIN, PatternError, compile_message_regex
from recovery.errors.taxonomy import ErrorClass, ErrorKind, Severity


def validate_regex(value: str) -> None:
    """A rule's message pattern must compile with RE2, the linear-time engine classification runs it on
    (the model's validator: the API's and the admin's refusal, naming `message_regex`)."""
    try:
        compile_message_regex(value)
    except PatternError as error:
        raise ValidationError(str(error)) from error


class ClassificationRule(models.Model):
    """One rule of the classifier. Every criterion that is set must match; the lowest priority wins."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    enabled = models.BooleanField(default=True)
    priority = models.IntegerField(
        default=500,
        validators=[MinValueValidator(PRIORITY_MIN), MaxValueValidator(PRIORITY_MAX)],
        help_text="Lower numbers are tried first (-1,000,000 to 1,000,000).",
    )
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
        if self.status_min is not None and self.status_max is not None and self.status_min > self.status_max:
            raise ValidationError({"status_max": "must be at least status_min"})


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


class IdempotencyRecord(models.Model):
    """An `Idempotency-Key` seen on a POST, where Redis is not configured (the embedded mode; with Redis the keys
    live there): the request that holds it, then the answer it gave (core/api/idempotency.py)."""

    key = models.CharField(max_length=200, unique=True, help_text="operation:caller:SHA-256 of the key")
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the request the key stands for")
    token = models.CharField(max_length=32, help_text="the request that holds the key now")
    state = models.CharField(max_length=10)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    body = models.JSONField(null=True, blank=True)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.key[:40]} ({self.state})"

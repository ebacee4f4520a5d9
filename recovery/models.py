from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError
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


class ErrorPattern(models.Model):
    """Errors grouped by fingerprint. One row per fingerprint, counted atomically by an upsert."""

    fingerprint = models.CharField(max_length=64, unique=True)
    service = models.CharField(max_length=100, db_index=True)
    operation = models.CharField(max_length=200, blank=True)
    error_class = models.CharField(max_length=20, choices=ErrorClass.choices, db_index=True)
    severity = models.CharField(max_length=10, choices=Severity.choices, db_index=True)
    kind = models.CharField(max_length=30, choices=ErrorKind.choices)
    type_name = models.CharField(max_length=200, blank=True)
    message_template = models.TextField(blank=True)
    sample_message = models.TextField(blank=True)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField(db_index=True)
    total_count = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-last_seen_at"]

    def __str__(self) -> str:
        return f"{self.service}/{self.error_class}: {self.message_template[:60]}"


class ErrorEvent(models.Model):
    """One reported error. Pruned after ERROR_EVENT_RETENTION_DAYS; the pattern keeps the totals."""

    pattern = models.ForeignKey(ErrorPattern, on_delete=models.CASCADE, related_name="events")
    agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
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

    class Meta:
        ordering = ["-occurred_at"]
        indexes = [
            models.Index(fields=["pattern", "occurred_at"]),
            models.Index(fields=["error_class", "occurred_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.service} {self.error_class} at {self.occurred_at:%Y-%m-%d %H:%M:%S}"

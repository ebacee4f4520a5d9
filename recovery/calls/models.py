"""What an attempt at one outbound call records, shared by retry attempts and saga compensations."""

from __future__ import annotations

from django.db import models

from recovery.errors.taxonomy import ErrorClass, ErrorKind


class CallAttempt(models.Model):
    """What every attempt of a call records (a retry job's, a compensation's): its outcome and classification."""

    class Outcome(models.TextChoices):
        RUNNING = "running"
        SUCCESS = "success"
        FAILURE = "failure"

    number = models.PositiveIntegerField()
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.RUNNING)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error_class = models.CharField(max_length=20, choices=ErrorClass.choices, blank=True)
    kind = models.CharField(max_length=30, choices=ErrorKind.choices, blank=True)
    error_type = models.CharField(max_length=200, blank=True)
    message = models.TextField(blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

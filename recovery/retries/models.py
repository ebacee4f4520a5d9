"""Server-side retry jobs and each attempt they made."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from recovery.calls.models import CallAttempt
from recovery.decisions.models import RetryPolicy
from recovery.errors.taxonomy import Severity


class RetryJob(models.Model):
    """An operation handed to Rebound to retry on Celery workers: an HTTP request or a registered task."""

    class Kind(models.TextChoices):
        HTTP = "http"
        TASK = "task"

    class State(models.TextChoices):
        PENDING = "pending"  # the next attempt is queued or waiting for its delay
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"  # a failure that retrying cannot fix, or the policy ran out: needs a human
        CANCELLED = "cancelled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey(
        "core.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="retry_jobs"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    service = models.ForeignKey("recovery.Service", on_delete=models.CASCADE, related_name="retry_jobs")
    operation = models.CharField(max_length=200, blank=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    request = models.JSONField(
        default=dict, blank=True, help_text="HTTP: method, url, headers, body, success_statuses, timeout_s."
    )
    task_name = models.CharField(max_length=200, blank=True)
    task_args = models.JSONField(default=list, blank=True)
    task_kwargs = models.JSONField(default=dict, blank=True)
    idempotency_key = models.CharField(max_length=200)

    policy = models.ForeignKey(
        RetryPolicy, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    policy_snapshot = models.JSONField(default=dict, help_text="The policy as it was when the job started.")

    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    # The Celery task id allowed to run the next attempt: a duplicate or stale delivery finds another id and exits.
    fence = models.CharField(max_length=64, blank=True)
    needs_human = models.BooleanField(default=False, db_index=True)
    last_error = models.JSONField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "idempotency_key"],
                condition=Q(agent__isnull=False),
                name="retryjob_agent_idempotency_key",
            ),
            models.UniqueConstraint(
                fields=["created_by", "idempotency_key"],
                condition=Q(agent__isnull=True),
                name="retryjob_user_idempotency_key",
            ),
            models.CheckConstraint(
                condition=(Q(kind="http") & Q(task_name="")) | (Q(kind="task") & ~Q(task_name="")),
                name="retryjob_kind_fields",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.service}/{self.operation or self.kind} {self.state}"

    @property
    def is_finished(self) -> bool:
        return self.state in (self.State.SUCCEEDED, self.State.FAILED, self.State.CANCELLED)


class RetryAttempt(CallAttempt):
    """One attempt of a retry job."""

    job = models.ForeignKey(RetryJob, on_delete=models.CASCADE, related_name="attempt_rows")
    severity = models.CharField(max_length=10, choices=Severity.choices, blank=True)

    class Meta(CallAttempt.Meta):
        ordering = ["job", "number"]
        constraints = [models.UniqueConstraint(fields=["job", "number"], name="retryattempt_unique_number")]

    def __str__(self) -> str:
        return f"{self.job_id} #{self.number}: {self.outcome}"

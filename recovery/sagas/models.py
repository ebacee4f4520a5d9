"""Transactions (sagas), their steps with compensations, and each compensation attempt."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from recovery.calls.models import CallAttempt
from recovery.checkpoints.models import Task


class Transaction(models.Model):
    """A saga: completed steps, each with the compensation that undoes it, run in reverse on rollback."""

    class Status(models.TextChoices):
        OPEN = "open"
        COMMITTED = "committed"
        ROLLING_BACK = "rolling_back"
        ROLLED_BACK = "rolled_back"
        ROLLBACK_FAILED = "rollback_failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey(
        "core.Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="transactions"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    name = models.CharField(max_length=200)
    task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="transactions"
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OPEN)
    deadline_at = models.DateTimeField(null=True, blank=True)
    rollback_reason = models.TextField(blank=True)
    needs_human = models.BooleanField(default=False, db_index=True)
    # The Celery task id allowed to drive the rollback: a duplicate or stale delivery finds another id and exits.
    fence = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "deadline_at"])]
        constraints = [
            models.CheckConstraint(
                condition=~Q(status__in=["rolling_back", "rolled_back", "rollback_failed"])
                | ~Q(rollback_reason=""),
                name="transaction_rollback_has_reason",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"


class TransactionStep(models.Model):
    """A completed step and its compensation: an HTTP request or a registered Celery task."""

    class Status(models.TextChoices):
        DONE = "done"
        COMPENSATING = "compensating"
        COMPENSATED = "compensated"
        COMPENSATION_FAILED = "compensation_failed"

    class CompensationKind(models.TextChoices):
        HTTP = "http"
        TASK = "task"
        NONE = "none"  # nothing to undo (a read, say); recorded so the history is whole

    transaction = models.ForeignKey(Transaction, on_delete=models.CASCADE, related_name="steps")
    seq = models.PositiveIntegerField()
    name = models.CharField(max_length=200)
    idempotency_key = models.CharField(max_length=200)
    compensation_kind = models.CharField(max_length=10, choices=CompensationKind.choices)
    compensation = models.JSONField(
        default=dict,
        blank=True,
        help_text="HTTP: method, url, headers, body, success_statuses; task: name, args.",
    )
    policy = models.ForeignKey(
        "recovery.RetryPolicy", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    policy_snapshot = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DONE)
    attempts = models.PositiveIntegerField(default=0)
    fence = models.CharField(max_length=64, blank=True)
    last_error = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    compensated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["transaction", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["transaction", "seq"], name="transactionstep_unique_seq"),
            models.UniqueConstraint(
                fields=["transaction", "idempotency_key"], name="transactionstep_unique_idempotency_key"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.transaction_id} #{self.seq} {self.name}: {self.status}"


class CompensationAttempt(CallAttempt):
    """One attempt at a step's compensation."""

    step = models.ForeignKey(TransactionStep, on_delete=models.CASCADE, related_name="attempt_rows")

    class Meta(CallAttempt.Meta):
        ordering = ["step", "number"]
        constraints = [
            models.UniqueConstraint(fields=["step", "number"], name="compensationattempt_unique_number")
        ]

    def __str__(self) -> str:
        return f"{self.step_id} #{self.number}: {self.outcome}"

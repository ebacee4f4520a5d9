"""Models of state recovery: agents' tasks with their checkpoints, and transactions whose steps carry
compensations (sagas). Imported by recovery.models, so Django sees them as the recovery app's."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class Task(models.Model):
    """One agent job. Its id is the agent's own, unique per agent."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        ABANDONED = "abandoned"

    agent = models.ForeignKey("core.Agent", on_delete=models.CASCADE, related_name="tasks")
    task_id = models.CharField(max_length=200)
    name = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    metadata = models.JSONField(default=dict, blank=True)
    forked_from = models.ForeignKey(
        "recovery.Checkpoint", null=True, blank=True, on_delete=models.SET_NULL, related_name="forks"
    )
    last_seq = models.PositiveIntegerField(default=0, help_text="The newest checkpoint's sequence number.")
    started_at = models.DateTimeField()
    last_checkpoint_at = models.DateTimeField(null=True, blank=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    stale_at = models.DateTimeField(
        null=True, blank=True, help_text="Set when a running task went quiet for too long."
    )
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        constraints = [models.UniqueConstraint(fields=["agent", "task_id"], name="task_unique_per_agent")]
        indexes = [
            models.Index(fields=["status", "finished_at"]),
            models.Index(fields=["status", "stale_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.agent}/{self.task_id}"

    @property
    def is_finished(self) -> bool:
        return self.status != self.Status.RUNNING


class Checkpoint(models.Model):
    """A task's saved state: canonical JSON, compressed, with its SHA-256 and size checked on every read."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="checkpoints")
    seq = models.PositiveIntegerField()
    data = models.BinaryField(help_text="The compressed canonical JSON of the state.")
    encoding = models.CharField(max_length=10, default="zlib")
    sha256 = models.CharField(max_length=64)
    size_bytes = models.PositiveIntegerField(help_text="Canonical JSON, before compression.")
    stored_bytes = models.PositiveIntegerField()
    progress = models.FloatField(default=0, validators=[MinValueValidator(0), MaxValueValidator(100)])
    step = models.CharField(max_length=200, blank=True)
    completed_steps = models.JSONField(default=list, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["task", "-seq"]
        constraints = [models.UniqueConstraint(fields=["task", "seq"], name="checkpoint_unique_seq")]
        indexes = [models.Index(fields=["created_at"])]

    def __str__(self) -> str:
        return f"{self.task} #{self.seq}"

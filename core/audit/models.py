from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models


class AuditEvent(models.Model):
    """Who did what to which object, when and why. Append-only: rows are never changed or deleted.

    On PostgreSQL triggers refuse UPDATE and DELETE (healing migration 0002) and TRUNCATE (core migration 0002),
    so not even a bug can rewrite history.
    """

    class Source(models.TextChoices):
        API = "api"
        ADMIN = "admin"
        CONSOLE = "console"
        CLI = "cli"
        MCP = "mcp"
        SYSTEM = "system"

    occurred_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_agent = models.ForeignKey(
        "core.Agent", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # A snapshot of the actor's name: readable even when the user or agent is later renamed.
    actor_label = models.CharField(max_length=200)
    action = models.CharField(max_length=100, db_index=True)
    target_type = models.CharField(max_length=100, db_index=True)
    target_id = models.CharField(max_length=100, db_index=True)
    target_repr = models.CharField(max_length=300, blank=True)
    reason = models.TextField(blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices)
    request_id = models.CharField(max_length=64, blank=True)

    class Meta:
        db_table = "healing_auditevent"  # the table it had in the healing app, with its append-only trigger
        ordering = ["-occurred_at", "-id"]
        indexes = [models.Index(fields=["target_type", "target_id", "-occurred_at"])]

    def __str__(self) -> str:
        return f"{self.actor_label} {self.action} {self.target_type}:{self.target_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise RuntimeError("AuditEvent rows are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("AuditEvent rows are append-only")


def audit_label(model: type[models.Model] | models.Model) -> str:
    """How audit rows name a model: its label, or the label it had before it moved apps (AUDIT_LABEL)."""
    label = getattr(model, "AUDIT_LABEL", None)
    return label if isinstance(label, str) else model._meta.label_lower

"""Who may call Rebound: agents and their API keys (user keys too). Tables kept from the recovery app."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Agent(models.Model):
    # Moved from the recovery app with its table: audit rows written before the move name it so, and one
    # object keeps one history (core.audit.models.audit_label).
    AUDIT_LABEL = "recovery.agent"

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "recovery_agent"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ApiKey(models.Model):
    """A bearer key, stored as a public prefix plus the SHA-256 of the whole key (as GitHub tokens are).

    The key belongs to an agent or to a user (for scripts, acting with that user's permissions), never both.
    """

    AUDIT_LABEL = "recovery.apikey"

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
        db_table = "recovery_apikey"
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

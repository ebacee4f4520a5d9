"""Where escalations are sent (channels: an apprise URL, kept secret), every attempt to send one (deliveries),
and the time-boxed mutes operators set (silences): a silenced escalation is recorded, only not sent."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from core.slugs import validate_slug
from healing.escalations.models import Escalation, Level


class NotificationChannel(models.Model):
    """One destination through apprise (e-mail, Slack, Teams, PagerDuty, Opsgenie, a JSON webhook, ...)."""

    name = models.CharField(max_length=100, unique=True, validators=[validate_slug])
    # The apprise URL carries the destination's credentials: never shown back in full (API, admin, logs).
    url = models.TextField(help_text="An apprise URL, e.g. json://host/path or slack://tokenA/tokenB/tokenC.")
    min_level = models.CharField(max_length=10, choices=Level.choices, default=Level.WARNING)
    services = models.JSONField(default=list, blank=True, help_text="Only these services; empty: every one.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Silence(models.Model):
    """Mutes escalations of a service (blank: every service) at a level or below (blank: every level) until
    `ends_at`. Ended early by setting `ended_at`: a silence is history too."""

    service = models.CharField(max_length=100, blank=True)
    level = models.CharField(max_length=10, choices=Level.choices, blank=True)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    reason = models.TextField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    ended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-starts_at", "-id"]
        indexes = [models.Index(fields=["ends_at"], name="silence_ends")]
        constraints = [
            models.CheckConstraint(
                condition=Q(ends_at__gt=models.F("starts_at")), name="silence_ends_after_start"
            )
        ]

    def __str__(self) -> str:
        return f"silence {self.service or '*'}/{self.level or '*'} until {self.ends_at:%Y-%m-%d %H:%M}"


class Delivery(models.Model):
    """One notice of one escalation to one channel, with every attempt counted: sent, failed after its
    retries, or silenced (recorded, not sent)."""

    class Status(models.TextChoices):
        PENDING = "pending"  # queued, or waiting for its next attempt
        SENT = "sent"
        FAILED = "failed"  # every attempt failed
        SILENCED = "silenced"

    channel = models.ForeignKey(
        NotificationChannel, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    channel_name = models.CharField(max_length=100, help_text="Kept when the channel is deleted.")
    escalation = models.ForeignKey(Escalation, on_delete=models.CASCADE, related_name="deliveries")
    notice = models.PositiveIntegerField(help_text="The escalation's notice number this delivery tells.")
    level = models.CharField(max_length=10, choices=Level.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    silence = models.ForeignKey(Silence, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # The Celery task allowed to make the next attempt: a duplicate delivery of the task finds another id.
    task_id = models.CharField(max_length=64, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "deliveries"
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="delivery_due")]
        constraints = [
            # One change notifies a channel once, never twice, whatever the number of tasks that try.
            models.UniqueConstraint(
                fields=["channel", "escalation", "notice"],
                condition=Q(channel__isnull=False),
                name="delivery_once_per_notice",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "sent", "failed", "silenced"]),
                name="delivery_status_known",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.escalation_id} to {self.channel_name} ({self.status})"

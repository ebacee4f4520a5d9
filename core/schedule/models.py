from __future__ import annotations

from django.db import models


class PeriodicClaim(models.Model):
    """The last time a beat process sent one periodic entry, and which one: the row every beat competes for."""

    name = models.CharField(max_length=200, primary_key=True, help_text="The beat schedule entry's name.")
    sent_at = models.DateTimeField(help_text="When a beat last claimed (and sent) it.")
    sent_by = models.CharField(max_length=200, help_text="The beat that sent it: host name and pid.")
    sends = models.PositiveBigIntegerField(default=0, help_text="How many times it was sent, by any beat.")
    skips = models.PositiveBigIntegerField(
        default=0, help_text="How many times a beat found it already sent for this tick and left it."
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

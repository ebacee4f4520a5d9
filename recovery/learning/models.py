"""Effectiveness figures: one row per (pattern, action) and per (service, error class, action)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from recovery.learning import stats


class Effectiveness(models.Model):
    """How well one recovery action has worked for one error pattern, or for one service and error class.

    `tries`, `successes` and the sums are decayed weights as of `as_of_s` (seconds since the epoch): each
    result counts 1 when it comes and half as much every LEARNING_HALF_LIFE_DAYS after, so a read decays them
    to now and a new result is folded in without reading any history (recovery/learning/stats.py). The
    `total_*` counts are plain counts, never decayed. `version` makes every fold a compare-and-set."""

    class Scope(models.TextChoices):
        PATTERN = "pattern"
        SERVICE = "service"

    scope = models.CharField(max_length=10, choices=Scope.choices)
    fingerprint = models.CharField(max_length=64, blank=True, help_text="The pattern's (pattern scope only).")
    service = models.CharField(max_length=100)
    error_class = models.CharField(max_length=20, blank=True, help_text="Blank: any class (healing runs).")
    action = models.CharField(
        max_length=160,
        help_text="retry, wait, fallback:cache, fallback:static, fallback:service:<name>[/<op>], degrade, "
        "escalate, abort, server_retry, healing:<action>",
    )

    tries = models.FloatField(default=0.0)
    successes = models.FloatField(default=0.0)
    recover_s_sum = models.FloatField(default=0.0, help_text="Seconds to recover, summed over successes.")
    delay_s_sum = models.FloatField(
        default=0.0, help_text="Retries and waits that worked: seconds after the first failure, summed."
    )
    delay_weight = models.FloatField(default=0.0)
    as_of_s = models.FloatField(help_text="The moment the decayed figures are as of (epoch seconds).")

    total_tries = models.BigIntegerField(default=0)
    total_successes = models.BigIntegerField(default=0)
    total_unknown = models.BigIntegerField(default=0)
    first_result_at = models.DateTimeField()
    last_result_at = models.DateTimeField()
    version = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["scope", "service", "error_class", "fingerprint", "action"]
        verbose_name_plural = "effectiveness"
        constraints = [
            models.UniqueConstraint(
                fields=["fingerprint", "action"],
                condition=Q(scope="pattern"),
                name="effectiveness_one_per_pattern_action",
            ),
            models.UniqueConstraint(
                fields=["service", "error_class", "action"],
                condition=Q(scope="service"),
                name="effectiveness_one_per_service_class_action",
            ),
            models.CheckConstraint(
                condition=Q(scope="service") | ~Q(fingerprint=""),
                name="effectiveness_pattern_has_fingerprint",
            ),
        ]
        indexes = [models.Index(fields=["service", "error_class"], name="effectiveness_service")]

    def __str__(self) -> str:
        where = (
            self.fingerprint[:12]
            if self.scope == self.Scope.PATTERN
            else f"{self.service}/{self.error_class}"
        )
        return f"{where}: {self.action}"

    def sums(self) -> stats.Sums:
        """The row's decayed sums, as stats.py folds and reads them."""
        return stats.Sums(
            tries=self.tries,
            successes=self.successes,
            recover_s_sum=self.recover_s_sum,
            delay_s_sum=self.delay_s_sum,
            delay_weight=self.delay_weight,
            as_of_s=self.as_of_s,
        )

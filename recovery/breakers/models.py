"""Services (anything an agent calls) with their breaker settings and operator overrides, the breaker state of
the embedded mode's database store, and every transition as a row."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from core.access.models import Agent
from core.slugs import validate_slug


class Service(models.Model):
    """Anything an agent calls, with its breaker settings and the operator's override."""

    class Kind(models.TextChoices):
        TOOL = "tool"
        MCP_SERVER = "mcp_server"
        HTTP_API = "http_api"
        MODEL_PROVIDER = "model_provider"
        DATABASE = "database"
        OTHER = "other"

    class Criticality(models.TextChoices):
        ESSENTIAL = "essential"
        NON_CRITICAL = "non_critical"

    class WindowType(models.TextChoices):
        COUNT = "count"
        TIME = "time"

    class Override(models.TextChoices):
        AUTO = "auto"
        FORCED_OPEN = "forced_open"
        FORCED_CLOSED = "forced_closed"
        DISABLED = "disabled"

    name = models.CharField(max_length=100, unique=True, validators=[validate_slug])
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.OTHER)
    criticality = models.CharField(
        max_length=20, choices=Criticality.choices, default=Criticality.NON_CRITICAL
    )
    description = models.TextField(blank=True)
    auto_registered = models.BooleanField(default=False, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    failure_rate_threshold = models.FloatField(
        default=50, validators=[MinValueValidator(1), MaxValueValidator(100)], help_text="Percent."
    )
    window_type = models.CharField(max_length=10, choices=WindowType.choices, default=WindowType.COUNT)
    window_size = models.PositiveIntegerField(
        default=20,
        validators=[MinValueValidator(1), MaxValueValidator(10_000)],
        help_text="Calls, or seconds.",
    )
    minimum_calls = models.PositiveIntegerField(default=10, validators=[MinValueValidator(1)])
    consecutive_failures = models.PositiveIntegerField(default=5, help_text="0 turns this trigger off.")
    slow_call_ms = models.PositiveIntegerField(default=0, help_text="Slower calls count as failures; 0: off.")
    wait_duration_s = models.FloatField(default=30, validators=[MinValueValidator(0.001)])
    half_open_max_calls = models.PositiveIntegerField(default=3, validators=[MinValueValidator(1)])
    success_threshold = models.PositiveIntegerField(default=2, validators=[MinValueValidator(1)])
    wait_multiplier = models.FloatField(default=1.0, validators=[MinValueValidator(1)])
    max_wait_s = models.FloatField(default=300, validators=[MinValueValidator(0.001)])

    # Retry budget (as Envoy has): retries may be at most this share of the calls of the last window, with a
    # floor so that a quiet service can still retry; beyond it the planner falls back or fails fast.
    retry_budget_percent = models.FloatField(
        default=20,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="Percent of recent calls.",
    )
    retry_budget_min_retries = models.PositiveIntegerField(
        default=3, help_text="Retries always allowed per window."
    )
    retry_budget_window_s = models.PositiveIntegerField(
        default=10, validators=[MinValueValidator(1), MaxValueValidator(3600)], help_text="Seconds."
    )
    # Degradation: from which level agents should skip this service. Blank: non-critical services from
    # "minimal", essential ones never.
    skip_from_level = models.CharField(
        max_length=10,
        blank=True,
        choices=[
            ("degraded", "degraded"),
            ("minimal", "minimal"),
            ("emergency", "emergency"),
            ("never", "never"),
        ],
    )

    override = models.CharField(max_length=20, choices=Override.choices, default=Override.AUTO)
    override_reason = models.TextField(blank=True)
    override_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(override="auto") | ~Q(override_reason=""), name="service_override_has_reason"
            ),
            models.CheckConstraint(
                condition=Q(max_wait_s__gte=models.F("wait_duration_s")), name="service_max_wait"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class BreakerState(models.Model):
    """A breaker's state in the embedded (database) store. The Redis store keeps the same fields in a hash."""

    service = models.OneToOneField(Service, on_delete=models.CASCADE, related_name="breaker_state")
    data = models.JSONField(default=dict)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.service}: {self.data.get('state', 'closed')}"


class BreakerTransition(models.Model):
    """One change of a breaker's state, with why and the window it saw. Written on transitions only."""

    class Actor(models.TextChoices):
        AUTOMATIC = "automatic"
        AGENT = "agent"
        USER = "user"
        HEALTH_CHECK = "health_check"  # a health check's verdict (healing): its name is in actor_name

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="transitions")
    from_state = models.CharField(max_length=20)
    to_state = models.CharField(max_length=20)
    reason = models.TextField()
    actor = models.CharField(max_length=20, choices=Actor.choices, default=Actor.AUTOMATIC)
    # Who acted when no user or agent row says it: the health check's name (a slug, as HealthCheck.name).
    actor_name = models.CharField(max_length=100, blank=True, default="")
    actor_agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    window = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["service", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.service}: {self.from_state} → {self.to_state}"

    @property
    def actor_label(self) -> str:
        """Who made it, as text: automatic, user <name>, agent <name> or health check <name>."""
        if self.actor == self.Actor.HEALTH_CHECK:
            return f"health check {self.actor_name}"
        if self.actor == self.Actor.USER:
            return f"user {self.actor_user or '(deleted)'}"
        if self.actor == self.Actor.AGENT:
            return f"agent {self.actor_agent or '(deleted)'}"
        return "automatic"


SETTINGS_FIELDS = [
    "kind",
    "criticality",
    "description",
    "failure_rate_threshold",
    "window_type",
    "window_size",
    "minimum_calls",
    "consecutive_failures",
    "slow_call_ms",
    "wait_duration_s",
    "half_open_max_calls",
    "success_threshold",
    "wait_multiplier",
    "max_wait_s",
]

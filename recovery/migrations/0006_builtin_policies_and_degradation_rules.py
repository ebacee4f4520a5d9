"""The built-in retry policies (sources 003 and 004) and degradation rules. Operators may edit them."""

from django.db import migrations

RETRYABLE = ["transient", "rate_limit", "resource", "external_service"]

# (name, error_class, kind, strategy, max_attempts, base_delay_s, max_delay_s, description)
POLICIES = [
    ("global default", "", "", "exponential", 3, 1.0, 16.0, "Backoff 1, 2, 4, 8, 16 s (source 003)."),
    ("transient", "transient", "", "exponential", 3, 1.0, 16.0, "At most 3 attempts for transient errors (003)."),
    ("resource", "resource", "", "exponential", 2, 1.0, 16.0, "At most 2 attempts for recoverable errors (003)."),
    (
        "external service",
        "external_service",
        "",
        "exponential",
        2,
        1.0,
        16.0,
        "At most 2 attempts for recoverable errors (003).",
    ),
    ("rate limit", "rate_limit", "", "exponential", 3, 1.0, 60.0, "Wait for Retry-After, then retry (004)."),
    (
        "connection timeout",
        "",
        "connection_timeout",
        "exponential",
        4,
        1.0,
        16.0,
        "3 retries with exponential backoff (004).",
    ),
    ("database lock", "", "database_lock", "fixed", 4, 0.1, 0.1, "3 retries at 100 ms (004)."),
    ("service unavailable", "", "service_unavailable", "fixed", 4, 2.0, 2.0, "3 retries at 2 s (004)."),
    ("temporary resource", "", "temporary_resource", "fixed", 4, 1.0, 1.0, "3 retries at 1 s (004)."),
]

# (name, signal, threshold, level, description)
RULES = [
    ("essential breaker open", "essential_breakers_open", 1, "degraded", "An essential service's breaker is open."),
    ("essential breakers open", "essential_breakers_open", 2, "minimal", "Two essential services are down."),
    ("half the fleet open", "breakers_open", 5, "emergency", "Five or more breakers are open."),
    ("service breaker open", "service_breaker_open", 1, "degraded", "A service is degraded while its breaker is open."),
]


def add(apps, schema_editor):
    RetryPolicy = apps.get_model("recovery", "RetryPolicy")
    for name, error_class, kind, strategy, attempts, base, cap, description in POLICIES:
        RetryPolicy.objects.update_or_create(
            name=name,
            defaults={
                "builtin": True,
                "error_class": error_class,
                "kind": kind,
                "strategy": strategy,
                "max_attempts": attempts,
                "base_delay_s": base,
                "multiplier": 2.0,
                "max_delay_s": cap,
                "honour_retry_after": True,
                "retry_on": RETRYABLE,
                "description": description,
            },
        )
    DegradationRule = apps.get_model("recovery", "DegradationRule")
    for name, signal, threshold, level, description in RULES:
        DegradationRule.objects.update_or_create(
            name=name,
            defaults={
                "builtin": True,
                "signal": signal,
                "threshold": threshold,
                "level": level,
                "description": description,
            },
        )


def remove(apps, schema_editor):
    apps.get_model("recovery", "RetryPolicy").objects.filter(builtin=True).delete()
    apps.get_model("recovery", "DegradationRule").objects.filter(builtin=True).delete()


class Migration(migrations.Migration):
    dependencies = [("recovery", "0005_recovery_decisions")]
    operations = [migrations.RunPython(add, remove)]

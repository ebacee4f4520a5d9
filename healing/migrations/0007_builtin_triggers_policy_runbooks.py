"""The escalation triggers of the MCP error workflow with their default levels and thresholds, the escalation
policy (warning -> critical after 30 minutes, critical -> emergency after 15), runbooks with the workflow's
recommended actions, and the reviewers group."""

from django.db import migrations

# kind, level, description, and the thresholds it reads
TRIGGERS = [
    ("critical_error", "critical", "An error of severity critical or fatal from an essential service.", {}),
    (
        "security",
        "warning",
        "Authentication or permission errors; critical once repeated `count` times within `window_s`.",
        {"repeat_level": "critical", "count": 3, "window_s": 900},
    ),
    ("data_integrity", "critical", "Errors a classification rule marks as integrity (constraint violations).", {}),
    (
        "repeated_pattern",
        "warning",
        "The same error pattern more than `count` times in `window_s` seconds.",
        {"count": 5, "window_s": 300},
    ),
    (
        "error_rate",
        "critical",
        "A service's error rate above `rate_percent` over `window_s` seconds, with at least `min_calls` calls.",
        {"rate_percent": 50.0, "window_s": 300, "min_calls": 20},
    ),
    ("fallbacks_exhausted", "critical", "The planner had nothing left: every fallback of an operation exhausted.", {}),
    ("planner_escalate", "warning", "The planner answered escalate (at the level its reason carries).", {}),
    ("retry_needs_human", "warning", "A server-side retry ended needing a human.", {}),
    ("rollback_failed", "emergency", "A transaction whose rollback failed.", {}),
    ("heartbeat_missed", "warning", "A running task that missed its heartbeat deadline (TASK_STALE_SECONDS).", {}),
    (
        "breaker_open_too_long",
        "critical",
        "An essential service's breaker open longer than `duration_s` seconds.",
        {"duration_s": 600},
    ),
    ("health_check_unhealthy", "warning", "A health check turned unhealthy (critical for an essential service).", {}),
    ("healing_run_failed", "critical", "A healing run that failed, failed its verification, or was held as a loop.", {}),
    ("approval_waiting", "info", "A healing run waiting for approval, so approvals appear in the queue.", {}),
    ("agent", "warning", "An agent raised it (POST /api/v1/escalations); the level is the agent's.", {}),
]

POLICY = [("warning", "critical", 1800), ("critical", "emergency", 900)]

# name, trigger, error_class, priority, steps: the workflow's recommended actions (source 004).
RUNBOOKS = [
    (
        "security-scan",
        "security",
        "",
        10,
        "1. Review detected vulnerabilities and the failing credentials\n"
        "2. Check the CVE database for severity\n"
        "3. Rotate or renew the credentials; plan patching\n"
        "4. Block deployment if critical vulnerabilities",
    ),
    (
        "deployment",
        "rollback_failed",
        "",
        10,
        "1. Check deployment logs\n"
        "2. Verify staging smoke tests passed\n"
        "3. Check for open incidents\n"
        "4. Consider manual deployment or rollback",
    ),
    (
        "validation",
        "",
        "validation",
        20,
        "1. Review input parameters\n2. Check API documentation\n3. Verify data format matches schema",
    ),
    (
        "data-integrity",
        "data_integrity",
        "",
        10,
        "1. Stop writes that violate the constraint\n"
        "2. Find the records involved from the error's context\n"
        "3. Repair the data, then resume the agents",
    ),
    (
        "breaker-open",
        "breaker_open_too_long",
        "",
        10,
        "1. Check the service's health checks and status page\n"
        "2. Run its healing actions, or restart it\n"
        "3. Force degradation if it stays down",
    ),
    ("general", "", "", 1000, "Review error logs and tool documentation"),
]


def add(apps, schema_editor):
    Trigger = apps.get_model("healing", "EscalationTrigger")
    for kind, level, description, thresholds in TRIGGERS:
        Trigger.objects.update_or_create(
            kind=kind, defaults={"level": level, "description": description, **thresholds}
        )
    Policy = apps.get_model("healing", "EscalationPolicy")
    for from_level, to_level, after_s in POLICY:
        Policy.objects.update_or_create(from_level=from_level, defaults={"to_level": to_level, "after_s": after_s})
    Runbook = apps.get_model("healing", "Runbook")
    for name, trigger, error_class, priority, steps in RUNBOOKS:
        Runbook.objects.update_or_create(
            name=name,
            defaults={
                "trigger": trigger,
                "error_class": error_class,
                "priority": priority,
                "steps": steps,
                "builtin": True,
            },
        )
    apps.get_model("auth", "Group").objects.get_or_create(name="reviewers")


def remove(apps, schema_editor):
    apps.get_model("healing", "EscalationTrigger").objects.all().delete()
    apps.get_model("healing", "EscalationPolicy").objects.all().delete()
    apps.get_model("healing", "Runbook").objects.filter(builtin=True).delete()
    apps.get_model("auth", "Group").objects.filter(name="reviewers").delete()


class Migration(migrations.Migration):
    dependencies = [("healing", "0006_escalations_and_notifications")]

    operations = [migrations.RunPython(add, remove)]

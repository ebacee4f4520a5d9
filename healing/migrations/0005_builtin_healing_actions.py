# The built-in healing actions, with their risk levels (docs/healing.md). Operators add webhooks; they may raise
# or lower a built-in's risk, cooldown and limits in the admin or the API.

from django.db import migrations

BUILTINS = [
    {
        "name": "reset_breaker",
        "risk": "medium",
        "cooldown_s": 120,
        "max_runs_per_hour": 6,
        "description": "Close the target service's breaker and empty its window: traffic flows again at once.",
        "parameters_schema": {"type": "object", "properties": {}, "additionalProperties": False},
    },
    {
        "name": "clear_degradation",
        "risk": "medium",
        "cooldown_s": 300,
        "max_runs_per_hour": 4,
        "description": "Clear an operator's forced degradation level of the target service (or of the fleet).",
        "parameters_schema": {
            "type": "object",
            "properties": {
                "fleet": {"type": "boolean", "description": "Clear the fleet's level, not the service's."}
            },
            "additionalProperties": False,
        },
    },
    {
        "name": "flush_fallback_cache",
        "risk": "low",
        "cooldown_s": 60,
        "max_runs_per_hour": 12,
        "description": "Forget the cached last good results of the target service's operations.",
        "parameters_schema": {"type": "object", "properties": {}, "additionalProperties": False},
    },
    {
        "name": "replay_dead_letters",
        "risk": "medium",
        "cooldown_s": 300,
        "max_runs_per_hour": 4,
        "description": "Replay the error reports the intake set aside (its dead letters) into the database.",
        "parameters_schema": {
            "type": "object",
            "properties": {"limit": {"type": "integer", "minimum": 1, "maximum": 100000}},
            "additionalProperties": False,
        },
    },
    {
        "name": "requeue_stuck_retries",
        "risk": "low",
        "cooldown_s": 60,
        "max_runs_per_hour": 12,
        "description": "Send again the server-side retry attempts of the target service that no worker took up.",
        "parameters_schema": {"type": "object", "properties": {}, "additionalProperties": False},
    },
    {
        "name": "restart_worker_pool",
        "risk": "high",
        "cooldown_s": 900,
        "max_runs_per_hour": 2,
        "description": "Restart the Celery workers' pools (Celery's pool_restart broadcast).",
        "parameters_schema": {
            "type": "object",
            "properties": {"destination": {"type": "array", "items": {"type": "string"}, "maxItems": 100}},
            "additionalProperties": False,
        },
    },
]


def create(apps, schema_editor):
    HealingAction = apps.get_model("healing", "HealingAction")
    for spec in BUILTINS:
        fields = {key: value for key, value in spec.items() if key != "name"}
        HealingAction.objects.get_or_create(
            name=spec["name"],
            defaults={**fields, "kind": "builtin", "builtin": spec["name"], "timeout_s": 60},
        )


def remove(apps, schema_editor):
    HealingAction = apps.get_model("healing", "HealingAction")
    HealingAction.objects.filter(kind="builtin", runs__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [("healing", "0004_health_checks_and_healing")]

    operations = [migrations.RunPython(create, remove)]

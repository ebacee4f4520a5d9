"""Reads of the remediation rules: the rules in force, their firings, and the events they read."""

from __future__ import annotations

from django.db.models import Max, QuerySet

from healing.checks.models import HealthCheckTransition
from healing.remediation.models import RemediationRule, RuleCursor, RuleFiring


def enabled_rules(trigger: str) -> list[RemediationRule]:
    """The enabled rules of one trigger, read afresh on every evaluation: rules are data, edited live."""
    return list(
        RemediationRule.objects.select_related("action", "health_check").filter(enabled=True, trigger=trigger)
    )


def rules() -> QuerySet[RemediationRule]:
    return RemediationRule.objects.select_related("action", "health_check").order_by("name")


def firings(rule_id: int | None = None) -> QuerySet[RuleFiring]:
    qs = RuleFiring.objects.select_related("rule", "run")
    return qs.filter(rule_id=rule_id) if rule_id is not None else qs


def fired_keys(rule_ids: set[int], event_keys: set[str]) -> set[tuple[int, str]]:
    """Which of these (rule, event) pairs have fired already: events read again cost one query, not one
    insert attempt each."""
    if not rule_ids or not event_keys:
        return set()
    rows = RuleFiring.objects.filter(rule_id__in=rule_ids, event_key__in=event_keys).values_list(
        "rule_id", "event_key"
    )
    return set(rows)


def cursor_position(stream: str) -> int | None:
    """Where the evaluator has read the stream to, or None before its first evaluation."""
    return RuleCursor.objects.filter(stream=stream).values_list("last_id", flat=True).first()


# --- the health checks' transitions ------------------------------------------------------------------------
# Read here rather than through healing.checks.selectors, which has no feed of transitions: the one query the
# rules need, beside the breakers' transitions_after (recovery/breakers/selectors.py), which it mirrors.


def check_transitions_after(after_id: int, limit: int = 500) -> list[HealthCheckTransition]:
    return list(
        HealthCheckTransition.objects.select_related("health_check")
        .filter(pk__gt=after_id)
        .order_by("id")[:limit]
    )


def last_check_transition_id() -> int:
    """The id of the last check transition written (0 before the first): where a new cursor starts."""
    return HealthCheckTransition.objects.aggregate(last=Max("id"))["last"] or 0


def turned_unhealthy_with_rules(transition_id: int) -> bool:
    """Whether this check transition is a turn to unhealthy that an enabled rule watches (the receivers'
    question: enqueue an evaluation now, or leave it to beat)."""
    return RemediationRule.objects.filter(
        enabled=True,
        trigger=RemediationRule.Trigger.CHECK_UNHEALTHY,
        health_check__transitions__id=transition_id,
        health_check__transitions__to_state="unhealthy",
    ).exists()


def watches_breakers_of(services: set[str]) -> bool:
    """Whether an enabled breaker_open rule watches any of these services."""
    if not services:
        return False
    return RemediationRule.objects.filter(
        enabled=True, trigger=RemediationRule.Trigger.BREAKER_OPEN, service__in=services
    ).exists()

from __future__ import annotations

from typing import Any

import pytest

from core.audit.models import AuditEvent
from recovery.errors.models import ClassificationRule
from tests.support.factories import RuleFactory

pytestmark = pytest.mark.django_db

RULE = {
    "name": "vector store overloaded",
    "priority": 5,
    "type_names": [],
    "message_regex": "index (is )?overloaded",
    "service": "pinecone",
    "error_class": "resource",
    "severity": "medium",
    "kind": "temporary_resource",
    "retryable": True,
    "counts_toward_breaker": True,
    "needs_human": False,
    "reason": "Pinecone reports overload as a 400",
}


def test_it_lists_the_built_in_rules_in_priority_order(agent_client: Any) -> None:
    rules = agent_client.get("/api/v1/rules").json()
    assert len(rules) == ClassificationRule.objects.count() >= 40
    assert [r["priority"] for r in rules] == sorted(r["priority"] for r in rules)
    assert all(r["builtin"] for r in rules)


def test_it_creates_a_rule_in_force_at_once_and_audited(operator_client: Any) -> None:
    response = operator_client.post("/api/v1/rules", RULE, format="json")
    assert response.status_code == 201, response.json()
    rule = ClassificationRule.objects.get(name=RULE["name"])
    assert (rule.priority, rule.service, rule.error_class, rule.builtin) == (5, "pinecone", "resource", False)
    event = AuditEvent.objects.get(action="rule.create")
    assert (event.actor_user, event.reason, event.source) == (operator_client.user, RULE["reason"], "api")
    assert event.after["message_regex"] == RULE["message_regex"]
    verdict = operator_client.post(
        "/api/v1/errors/classify", {"service": "pinecone", "message": "index is overloaded"}, format="json"
    ).json()
    assert verdict["matched_rule"]["name"] == RULE["name"]


def test_it_updates_a_rule_recording_before_and_after(operator_client: Any) -> None:
    rule = RuleFactory(severity="low")
    response = operator_client.patch(
        f"/api/v1/rules/{rule.pk}", {"severity": "high", "reason": "it pages people"}, format="json"
    )
    assert response.status_code == 200
    rule.refresh_from_db()
    assert rule.severity == "high"
    event = AuditEvent.objects.get(action="rule.update")
    assert (event.before["severity"], event.after["severity"], event.reason) == (
        "low",
        "high",
        "it pages people",
    )


def test_it_deletes_a_rule_with_a_reason(operator_client: Any) -> None:
    rule = RuleFactory()
    assert (
        operator_client.delete(f"/api/v1/rules/{rule.pk}", {"reason": "obsolete"}, format="json").status_code
        == 204
    )
    assert not ClassificationRule.objects.filter(pk=rule.pk).exists()
    event = AuditEvent.objects.get(action="rule.delete")
    assert (event.target_id, event.before["name"], event.reason) == (str(rule.pk), rule.name, "obsolete")


@pytest.mark.parametrize("method", ["post", "patch", "delete"])
def test_it_requires_a_reason_for_every_change(operator_client: Any, method: str) -> None:
    rule = RuleFactory(severity="low")
    url = "/api/v1/rules" if method == "post" else f"/api/v1/rules/{rule.pk}"
    body = {k: v for k, v in RULE.items() if k != "reason"} if method == "post" else {"severity": "high"}
    response = getattr(operator_client, method)(url, body, format="json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "reason"
    rule.refresh_from_db()
    assert rule.severity == "low"
    assert ClassificationRule.objects.filter(builtin=False).count() == 1
    assert not AuditEvent.objects.filter(action__startswith="rule.").exists()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"error_class": "catastrophic"}, "error_class"),
        ({"severity": "meh"}, "severity"),
        ({"message_regex": "(unclosed"}, "message_regex"),
        ({"type_names": "TimeoutError"}, "type_names"),
        ({"status_min": 500, "status_max": 400, "message_regex": ""}, "status_max"),
        ({"message_regex": "", "type_names": []}, "body"),
    ],
)
def test_it_refuses_bad_rules_naming_the_field(
    operator_client: Any, change: dict[str, Any], field: str
) -> None:
    response = operator_client.post("/api/v1/rules", {**RULE, **change}, format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["errors"][0]["field"] == field
    assert not ClassificationRule.objects.filter(name=RULE["name"]).exists()


def test_it_answers_404_for_an_unknown_rule(operator_client: Any) -> None:
    assert operator_client.patch("/api/v1/rules/999999", {"reason": "x"}, format="json").status_code == 404


def test_it_lists_audit_events_with_filters(operator_client: Any) -> None:
    operator_client.post("/api/v1/rules", RULE, format="json")
    body = operator_client.get("/api/v1/audit-events?action=rule.create").json()
    assert body["count"] == 1
    assert body["results"][0]["actor_label"] == f"user:{operator_client.user.username}"
    assert operator_client.get("/api/v1/audit-events?action=nothing").json()["count"] == 0
    assert operator_client.get("/api/v1/audit-events?since=nonsense").status_code == 400


def test_it_refuses_to_delete_a_built_in_rule(operator_client: Any) -> None:
    rule = ClassificationRule.objects.filter(builtin=True).first()
    assert rule is not None
    response = operator_client.delete(f"/api/v1/rules/{rule.pk}", {"reason": "cleanup"}, format="json")
    assert response.status_code == 409
    assert "disable it instead" in response.json()["detail"]
    assert ClassificationRule.objects.filter(pk=rule.pk).exists()
    assert not AuditEvent.objects.filter(action="rule.delete").exists()


def test_it_takes_the_delete_reason_from_the_query_too(operator_client: Any) -> None:
    rule = RuleFactory()
    assert operator_client.delete(f"/api/v1/rules/{rule.pk}?reason=dup").status_code == 204
    assert AuditEvent.objects.get(action="rule.delete").reason == "dup"

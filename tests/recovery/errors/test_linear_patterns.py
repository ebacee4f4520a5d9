"""Issue 11, item 2: operators' message patterns run in linear time (RE2); a pattern RE2 cannot take is refused
where it is written (API, admin) and skipped where it is read (a row stored some other way)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from recovery.errors import rules_cache
from recovery.errors.classification import ErrorReport, Verdict
from recovery.errors.models import ClassificationRule
from recovery.errors.services import classify_report
from tests.support.factories import RuleFactory

pytestmark = pytest.mark.django_db

RULE = {
    "name": "nested quantifiers",
    "priority": 1,
    "message_regex": "(a+)+$",
    "error_class": "resource",
    "severity": "medium",
    "retryable": True,
    "counts_toward_breaker": True,
    "reason": "an operator's pattern",
}


def _classify_within(report: ErrorReport, seconds: float) -> Verdict | None:
    """The verdict, or None if classifying took longer than `seconds` (a backtracking engine takes minutes)."""
    found: list[Verdict] = []
    rules_cache.active_rules()  # read here: the thread classifies from the cache, without a database session
    worker = threading.Thread(target=lambda: found.append(classify_report(report).verdict), daemon=True)
    worker.start()
    worker.join(seconds)
    return found[0] if found else None


def test_it_classifies_against_a_catastrophic_pattern_without_backtracking(operator_client: Any) -> None:
    assert operator_client.post("/api/v1/rules", RULE, format="json").status_code == 201
    # 30 characters that almost match: a backtracking engine tries 2**30 ways before it gives up.
    verdict = _classify_within(ErrorReport(message="a" * 30 + "!"), seconds=20)
    assert verdict is not None, "classification did not finish: the pattern backtracked"
    assert verdict.rule is None or verdict.rule.name != RULE["name"]
    matched = _classify_within(ErrorReport(message="x" + "A" * 30), seconds=20)
    assert matched is not None and matched.rule is not None and matched.rule.name == RULE["name"]


@pytest.mark.parametrize("pattern", [r"(a)\1", r"(?=quota)\w+", r"(?<!soft )limit", r"(?P<x>a)(?P=x)"])
def test_it_refuses_a_pattern_re2_cannot_take_naming_the_field(operator_client: Any, pattern: str) -> None:
    response = operator_client.post("/api/v1/rules", {**RULE, "message_regex": pattern}, format="json")
    assert response.status_code == 400, response.json()
    assert [e["field"] for e in response.json()["errors"]] == ["message_regex"]
    assert not ClassificationRule.objects.filter(name=RULE["name"]).exists()


def test_it_refuses_such_a_pattern_in_a_change_too(operator_client: Any) -> None:
    rule = RuleFactory(message_regex="overloaded")
    response = operator_client.patch(
        f"/api/v1/rules/{rule.pk}", {"message_regex": r"(over)\1loaded", "reason": "try"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "message_regex"
    rule.refresh_from_db()
    assert rule.message_regex == "overloaded"


def test_the_model_refuses_it_so_the_admin_form_does(db: Any) -> None:
    rule = ClassificationRule(
        name="backreference",
        message_regex=r"(a)\1",
        error_class="resource",
        severity="medium",
        retryable=True,
        counts_toward_breaker=True,
    )
    with pytest.raises(ValidationError) as raised:
        rule.full_clean()
    assert list(raised.value.message_dict) == ["message_regex"]


def test_a_stored_pattern_re2_cannot_take_is_skipped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    # A row written around the validation (SQL, an old release): classification goes on without it.
    rule = RuleFactory(priority=1, message_regex="placeholder")
    ClassificationRule.objects.filter(pk=rule.pk).update(message_regex=r"(?<=soft )limit")
    rules_cache.invalidate()
    with caplog.at_level(logging.ERROR, logger="recovery.errors.rules_cache"):
        verdict = classify_report(ErrorReport(message="soft limit reached")).verdict
    assert verdict.rule is None or verdict.rule.id != rule.pk
    assert any(rule.name in record.getMessage() for record in caplog.records)


def test_the_search_is_case_insensitive_as_documented(operator_client: Any) -> None:
    RuleFactory(priority=1, message_regex=r"index (is )?overloaded")
    verdict = classify_report(ErrorReport(message="Index Is OVERLOADED")).verdict
    assert verdict.rule is not None and verdict.why[-1].startswith("message contains 'Index Is OVERLOADED'")

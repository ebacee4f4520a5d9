"""The classifier remembers verdicts and templates per rule set (recovery/errors/classification.py): a repeat
costs a dictionary look-up, and a new rule set (rules_cache reloads, an operator's edit) is never answered from
the old one's verdicts."""

from __future__ import annotations

import pytest

from recovery.errors import classification
from recovery.errors.classification import ErrorReport, Rule, classify, message_template


def _rule(name: str, error_class: str, *, types: frozenset[str] = frozenset({"ratelimiterror"})) -> Rule:
    return Rule(
        id=None,
        name=name,
        priority=100,
        type_names=types,
        status_min=None,
        status_max=None,
        message_regex=None,
        service="",
        error_class=error_class,
        severity="medium",
        kind="rate_limit",
        retryable=True,
        counts_toward_breaker=True,
        needs_human=False,
    )


REPORT = ErrorReport(service="openai", type_name="RateLimitError", message="slow down 42", status_code=429)


def test_it_answers_a_repeat_from_the_memo_with_the_same_verdict() -> None:
    rules = (_rule("limits", "rate_limit"),)
    first = classify(REPORT, rules)
    assert classify(REPORT, rules) is first
    assert first.rule is rules[0]


def test_it_classifies_afresh_with_a_new_rule_set() -> None:
    before = (_rule("limits", "rate_limit"),)
    after = (_rule("limits, changed", "resource"),)
    assert classify(REPORT, before).error_class == "rate_limit"
    assert classify(REPORT, after).error_class == "resource"
    assert classify(REPORT, ()).error_class == classification.UNMATCHED.error_class


def test_it_tells_reports_apart_by_every_field_a_rule_reads() -> None:
    rules = (_rule("limits", "rate_limit"),)
    assert classify(REPORT, rules).rule is rules[0]
    other = ErrorReport(service="openai", type_name="Timeout", message="slow down 42", status_code=429)
    assert classify(other, rules).rule is None


def test_it_keeps_long_messages_out_of_the_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    rules = (_rule("limits", "rate_limit"),)
    long = ErrorReport(type_name="RateLimitError", message="x" * (classification.MEMO_MESSAGE_MAX + 1))
    assert classify(long, rules).rule is rules[0]
    assert message_template(long.message) == long.message
    assert all(len(key[3]) <= classification.MEMO_MESSAGE_MAX for key in classification._memo.verdicts)
    assert long.message not in classification._memo.templates


def test_it_bounds_the_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(classification, "MEMO_MAX", 3)
    rules = (_rule("limits", "rate_limit"),)
    for n in range(10):
        report = ErrorReport(type_name="RateLimitError", message=f"slow down {n}")
        classify(report, rules)
        message_template(report.message)
    assert len(classification._memo.verdicts) <= 3
    assert len(classification._memo.templates) <= 3
    assert message_template("slow down 9") == "slow down <n>"

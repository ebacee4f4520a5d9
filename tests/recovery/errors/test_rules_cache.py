"""Rules are data: an edit made by another process is in force within RULES_CACHE_SECONDS, no restart."""

from __future__ import annotations

import logging
import time

import pytest
from django.test import override_settings

from recovery.errors.classification import ErrorReport
from recovery.errors.models import ClassificationRule
from recovery.errors.services import classify_report
from tests.support.factories import rebound_settings

pytestmark = pytest.mark.django_db

FAST = rebound_settings(RULES_CACHE_SECONDS=0.3)


@override_settings(REBOUND=FAST)
def test_it_sees_another_processes_rule_edit_within_the_cache_time() -> None:
    report = ErrorReport(status_code=503)
    assert classify_report(report).verdict.error_class == "external_service"
    # As another process would: a write that sends no signal to this one.
    ClassificationRule.objects.filter(name="service unavailable (5xx)").update(error_class="resource")
    assert classify_report(report).verdict.error_class == "external_service"
    time.sleep(0.35)
    assert classify_report(report).verdict.error_class == "resource"


def test_it_sees_its_own_edit_at_once() -> None:
    report = ErrorReport(status_code=503)
    assert classify_report(report).verdict.error_class == "external_service"
    rule = ClassificationRule.objects.get(name="service unavailable (5xx)")
    rule.error_class = "resource"
    rule.save()
    assert classify_report(report).verdict.error_class == "resource"


def test_it_classifies_with_the_rules_read_before_while_the_database_cannot_be_read(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 11, item 23: the buffered intake rides out a database restart; the rules' cache expiring during it
    # must not turn every report into a 503.
    from django.db import OperationalError

    from recovery.errors import rules_cache

    report = ErrorReport(status_code=503)
    assert classify_report(report).verdict.error_class == "external_service"
    rules_cache.invalidate()

    def down(*args: object, **kwargs: object) -> None:
        raise OperationalError("the database system is shutting down")

    monkeypatch.setattr(ClassificationRule.objects, "filter", down)
    with caplog.at_level(logging.WARNING, logger="recovery.errors.rules_cache"):
        for _ in range(3):
            assert classify_report(report).verdict.error_class == "external_service"
            rules_cache.invalidate()
    assert len([r for r in caplog.records if "cannot be read" in r.getMessage()]) == 1
    monkeypatch.undo()
    ClassificationRule.objects.filter(name="service unavailable (5xx)").update(error_class="resource")
    assert classify_report(report).verdict.error_class == "resource"


def test_a_process_that_never_read_the_rules_cannot_classify_without_the_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django.db import OperationalError

    from recovery.errors import rules_cache

    def down(*args: object, **kwargs: object) -> None:
        raise OperationalError("could not connect")

    fresh = {"expires": 0.0, "rules": (), "loaded": False, "unreadable": False}
    monkeypatch.setattr(rules_cache, "_state", fresh)  # a process that has just started
    monkeypatch.setattr(ClassificationRule.objects, "filter", down)
    with pytest.raises(OperationalError):
        classify_report(ErrorReport(status_code=503))

"""Rules are data: an edit made by another process is in force within RULES_CACHE_SECONDS, no restart."""

from __future__ import annotations

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

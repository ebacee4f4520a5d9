"""The healing runs' feed of the error learning: a run whose action acted folds one result of
`healing:<action>` for its service, once, in the transaction that ended it (succeeded: acted and verified;
failed: the action failed, its verification failed or its worker was lost); a run that never acted (rejected,
expired, cancelled, skipped) folds nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from healing.actions import services
from healing.actions.models import HealingAction, HealingRun
from recovery.learning.models import Effectiveness
from tests.support import factories
from tests.support.healing_runs import ask, check_result, execute, health_check, operator_actor
from tests.support.http_target import Answer

pytestmark = pytest.mark.django_db


def learned() -> Effectiveness:
    """The one row the runs of restart-pods on web-search fold into."""
    [row] = Effectiveness.objects.all()
    assert (row.scope, row.service, row.error_class, row.fingerprint, row.action) == (
        "service",
        "web-search",
        "",
        "",
        "healing:restart-pods",
    )
    return row


def test_it_folds_one_success_for_a_run_that_acted_without_a_verify_check(
    webhook: Callable[..., HealingAction], target: Any, enqueued: list[int]
) -> None:
    webhook()
    run, _ = ask("restart-pods", "agent")

    assert execute(run, "task-1") == "succeeded"
    assert execute(run, "task-1") == "stale"  # a duplicate delivery folds nothing more

    row = learned()
    assert run.finished_at is not None and run.started_at is not None
    assert (row.total_tries, row.total_successes, row.tries, row.successes) == (1, 1, 1.0, 1.0)
    assert row.last_result_at == run.finished_at
    assert row.recover_s_sum == pytest.approx((run.finished_at - run.started_at).total_seconds())


def test_it_folds_one_failure_for_a_run_whose_webhook_failed(
    webhook: Callable[..., HealingAction], target: Any, enqueued: list[int]
) -> None:
    webhook()
    target.script(Answer(503, {"error": "deploy tool down"}))
    run, _ = ask("restart-pods", "agent")

    assert execute(run) == "failed"

    row = learned()
    assert (row.total_tries, row.total_successes, row.successes, row.recover_s_sum) == (1, 0, 0.0, 0.0)
    assert row.last_result_at == run.finished_at


def test_it_folds_a_verified_run_once_its_check_passed_and_not_before(
    webhook: Callable[..., HealingAction], target: Any, enqueued: list[int]
) -> None:
    check = health_check()
    webhook(verify_check=check, verify_within_s=60)
    run, _ = ask("restart-pods", "agent")

    assert execute(run) == "verifying"
    assert not Effectiveness.objects.exists()

    check_result(check, ok=True)
    assert services.maintain_runs()["verified"] == 1
    assert services.maintain_runs()["verified"] == 0

    run.refresh_from_db()
    row = learned()
    assert run.state == "succeeded"
    assert (row.total_tries, row.total_successes) == (1, 1)


def test_it_folds_a_failure_for_a_run_whose_verification_failed(
    webhook: Callable[..., HealingAction], target: Any, enqueued: list[int]
) -> None:
    check = health_check()
    webhook(verify_check=check, verify_within_s=30)
    run, _ = ask("restart-pods", "agent")
    execute(run)
    check_result(check, ok=False)
    assert run.verify_deadline is not None

    assert services.maintain_runs(run.verify_deadline + timedelta(seconds=1))["unverified"] == 1

    run.refresh_from_db()
    row = learned()
    assert run.state == "failed"
    assert (row.total_tries, row.total_successes) == (1, 0)


def test_it_folds_a_failure_for_a_run_whose_worker_was_lost(
    webhook: Callable[..., HealingAction], enqueued: list[int]
) -> None:
    webhook(timeout_s=10)
    run, _ = ask("restart-pods", "agent")
    started = timezone.now() - timedelta(seconds=75)
    HealingRun.objects.filter(pk=run.pk).update(state="running", task_id="lost-task", started_at=started)

    with override_settings(REBOUND=factories.rebound_settings(HEALING_REAPER_GRACE_SECONDS=60)):
        assert services.maintain_runs(started + timedelta(seconds=71))["reaped"] == 1
        assert services.maintain_runs(started + timedelta(seconds=72))["reaped"] == 0

    row = learned()
    assert (row.total_tries, row.total_successes) == (1, 0)


def test_it_folds_nothing_for_runs_that_never_acted(
    webhook: Callable[..., HealingAction], enqueued: list[int]
) -> None:
    webhook(risk="medium")
    rejected, _ = ask("restart-pods", "agent")
    services.reject(run_id=rejected.pk, actor=operator_actor(), reason="their outage, not ours")
    cancelled, _ = ask("restart-pods", "agent")
    services.cancel(run_id=cancelled.pk, actor=operator_actor(), reason="not now")
    with override_settings(REBOUND=factories.rebound_settings(HEALING_APPROVAL_TIMEOUT_SECONDS=60)):
        expired, _ = ask("restart-pods", "agent")
        assert expired.approval_deadline is not None
        assert services.maintain_runs(expired.approval_deadline + timedelta(seconds=1))["expired"] == 1

    states = set(HealingRun.objects.values_list("state", flat=True))
    assert states == {"rejected", "cancelled", "expired"}
    assert not Effectiveness.objects.exists()

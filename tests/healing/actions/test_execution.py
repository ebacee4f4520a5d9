"""Executing a run once: the claim fences a duplicate delivery, the webhook carries the run's Idempotency-Key,
verification waits for the check without holding a worker, three failed verifications put a hold, and the
reaper fails a run whose worker vanished (never running it again)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from core.audit.models import AuditEvent
from healing.actions import services
from healing.actions.models import HealingAction, HealingHold, HealingRun
from tests.support import factories
from tests.support.healing_runs import ask, check_result, execute, health_check, operator_actor
from tests.support.http_target import Answer

pytestmark = pytest.mark.django_db


def test_it_runs_a_webhook_once_however_often_its_message_is_delivered(
    webhook: Callable[..., HealingAction], target: Any, enqueued: list[int]
) -> None:
    webhook()
    run, _ = ask("restart-pods", "agent", parameters={"replicas": 2})
    assert execute(run, "task-1") == "succeeded"
    assert execute(run, "task-1") == "stale"  # the same message again
    assert execute(run, "task-2") == "stale"  # a duplicate with another id
    assert len(target.seen) == 1
    assert (run.state, run.task_id) == ("succeeded", "task-1")
    assert run.started_at is not None and run.acted_at is not None and run.finished_at is not None
    assert list(run.transitions.values_list("from_state", "to_state")) == [
        ("", "approved"),
        ("approved", "running"),
        ("running", "succeeded"),
    ]


def test_it_sends_the_run_id_as_the_idempotency_key(
    webhook: Callable[..., HealingAction], target: Any, enqueued: list[int]
) -> None:
    webhook()
    run, _ = ask("restart-pods", "agent", parameters={"replicas": 4})
    execute(run)
    seen = target.seen[0]
    assert (seen.method, seen.path) == ("POST", "/heal")
    assert seen.headers["Idempotency-Key"] == str(run.pk)
    assert json.loads(seen.body) == {"service": "web-search", "replicas": 4, "run": run.pk}


def test_it_fails_a_run_whose_webhook_fails_with_the_error_and_the_answer(
    webhook: Callable[..., HealingAction], target: Any, enqueued: list[int]
) -> None:
    webhook()
    target.script(Answer(503, {"error": "deploy tool down", "api_key": "sk-live-1"}))
    run, _ = ask("restart-pods", "agent")
    assert execute(run) == "failed"
    assert "webhook failed: HTTP 503" in run.state_reason
    assert run.output["status_code"] == 503
    assert run.output["body"] == {"error": "deploy tool down", "api_key": "[redacted]"}
    assert run.finished_at is not None


def test_it_keeps_the_answer_with_secrets_hidden(
    webhook: Callable[..., HealingAction], target: Any, enqueued: list[int]
) -> None:
    webhook()
    target.script(Answer(200, {"ok": True, "data": {"token": "abc", "id": 7}, "note": "nul\u0000byte"}))
    run, _ = ask("restart-pods", "agent")
    execute(run)
    assert run.output["body"] == {
        "ok": True,
        "data": {"token": "[redacted]", "id": 7},
        "note": "nul\ufffdbyte",
    }


def test_it_fails_a_run_whose_webhook_host_was_removed_from_the_allowlist(
    webhook: Callable[..., HealingAction], target: Any, enqueued: list[int]
) -> None:
    webhook()
    run, _ = ask("restart-pods", "agent")
    with override_settings(REBOUND=factories.rebound_settings(OUTBOUND_ALLOWED_HOSTS=[])):
        assert execute(run) == "failed"
    assert "refused" in run.state_reason
    assert target.seen == []


def test_it_succeeds_once_the_verify_check_passes_after_the_action(
    webhook: Callable[..., HealingAction], target: Any, enqueued: list[int]
) -> None:
    check = health_check()
    webhook(verify_check=check, verify_within_s=60)
    run, _ = ask("restart-pods", "agent")
    assert execute(run) == "verifying"
    assert run.acted_at is not None and run.verify_deadline == run.acted_at + timedelta(seconds=60)
    assert run.finished_at is None
    check_result(check, ok=True, at=run.acted_at - timedelta(seconds=1))  # before the action: no proof
    assert services.maintain_runs()["verified"] == 0
    check_result(check, ok=True)
    assert services.maintain_runs()["verified"] == 1
    run.refresh_from_db()
    assert run.state == "succeeded"
    assert "passed" in run.state_reason
    assert list(run.transitions.values_list("to_state", flat=True)) == [
        "approved",
        "running",
        "verifying",
        "succeeded",
    ]


def test_it_fails_verification_past_the_deadline(
    webhook: Callable[..., HealingAction], target: Any, enqueued: list[int]
) -> None:
    check = health_check()
    webhook(verify_check=check, verify_within_s=30)
    run, _ = ask("restart-pods", "agent")
    execute(run)
    check_result(check, ok=False)
    assert run.verify_deadline is not None
    assert services.maintain_runs(run.verify_deadline - timedelta(seconds=1))["unverified"] == 0
    assert services.maintain_runs(run.verify_deadline + timedelta(seconds=1))["unverified"] == 1
    run.refresh_from_db()
    assert run.state == "failed"
    assert run.state_reason.startswith("verification_failed")


def _fail_verification(action: str, now: Any) -> HealingRun:
    run, _ = ask(action, "agent")
    execute(run)
    assert run.verify_deadline is not None
    services.maintain_runs(run.verify_deadline + timedelta(seconds=1))
    run.refresh_from_db()
    assert run.state == "failed"
    return run


def test_it_holds_an_action_after_three_failed_verifications_and_then_waits_for_a_human(
    webhook: Callable[..., HealingAction], target: Any, enqueued: list[int]
) -> None:
    check = health_check()
    webhook(verify_check=check, verify_within_s=1, risk="low")
    now = timezone.now()
    for _ in range(2):
        _fail_verification("restart-pods", now)
    assert not HealingHold.objects.exists()
    last = _fail_verification("restart-pods", now)
    hold = HealingHold.objects.get()
    assert (hold.service, hold.cleared_at) == ("web-search", None)
    assert f"run {last.pk}" in hold.reason
    assert AuditEvent.objects.filter(action="healing_hold.create", target_id=str(hold.pk)).count() == 1

    held, _ = ask("restart-pods", "agent")
    assert (held.state, held.approvals_required) == ("pending_approval", 1)

    services.clear_hold(hold_id=hold.pk, actor=operator_actor(), reason="resized the cluster")
    hold.refresh_from_db()
    assert hold.cleared_at is not None and hold.cleared_reason == "resized the cluster"
    assert AuditEvent.objects.filter(action="healing_hold.clear", target_id=str(hold.pk)).count() == 1


def test_it_does_not_hold_for_failures_of_another_target(
    webhook: Callable[..., HealingAction], target: Any, enqueued: list[int]
) -> None:
    check = health_check()
    webhook(verify_check=check, verify_within_s=1)
    for service in ("web-search", "billing", "mail"):
        run, _ = ask("restart-pods", "agent", service=service)
        execute(run)
        assert run.verify_deadline is not None
        services.maintain_runs(run.verify_deadline + timedelta(seconds=1))
    assert not HealingHold.objects.exists()


def test_the_reaper_fails_a_run_whose_worker_was_lost_and_never_runs_it_again(
    webhook: Callable[..., HealingAction], target: Any, enqueued: list[int]
) -> None:
    webhook(timeout_s=10)
    run, _ = ask("restart-pods", "agent")
    started = timezone.now() - timedelta(seconds=75)
    # What a worker killed mid-call leaves: the run claimed by its task, running.
    HealingRun.objects.filter(pk=run.pk).update(state="running", task_id="lost-task", started_at=started)
    with override_settings(REBOUND=factories.rebound_settings(HEALING_REAPER_GRACE_SECONDS=60)):
        assert services.maintain_runs(started + timedelta(seconds=69))["reaped"] == 0
        assert services.maintain_runs(started + timedelta(seconds=71))["reaped"] == 1
    run.refresh_from_db()
    assert run.state == "failed"
    assert run.state_reason.startswith("worker_lost")
    # The lost task's message delivered again, or its late end: the run stays as the reaper left it.
    assert execute(run, "lost-task") == "stale"
    assert services._after_action(run, "lost-task", {}, None) == "stale"
    run.refresh_from_db()
    assert run.state == "failed"
    assert target.seen == []


def test_it_sends_again_an_approved_run_whose_message_was_lost(
    webhook: Callable[..., HealingAction], enqueued: list[int]
) -> None:
    webhook()
    ask("restart-pods", "agent")
    assert services.maintain_runs(timezone.now() + timedelta(seconds=10))["requeued"] == 0
    later = timezone.now() + timedelta(seconds=services.REQUEUE_APPROVED_AFTER_S + 1)
    assert services.maintain_runs(later)["requeued"] == 1
    assert services.maintain_runs(later)["requeued"] == 0  # once per wait, not once per pass


def test_it_fails_an_action_that_outlives_its_soft_time_limit(
    webhook: Callable[..., HealingAction], monkeypatch: pytest.MonkeyPatch, enqueued: list[int]
) -> None:
    from celery.exceptions import SoftTimeLimitExceeded

    from healing.actions import webhook as webhook_module

    def too_slow(run: HealingRun) -> dict[str, Any]:
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(webhook_module, "call", too_slow)
    webhook(timeout_s=5)
    run, _ = ask("restart-pods", "agent")
    assert execute(run) == "failed"
    assert "did not finish within its timeout (5 s)" in run.state_reason

"""The built-in actions, each run for real against the room it heals (Redis and PostgreSQL, nothing mocked)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.cache.backends.locmem import LocMemCache
from django.utils import timezone

from core.audit.models import AuditEvent
from core.audit.services import Actor
from core.infra import redisconn
from healing.actions import builtins
from healing.actions.models import HealingAction, HealingRun
from recovery.breakers.models import Service
from recovery.decisions import fallbacks
from recovery.degradation import selectors as degradation_selectors
from recovery.degradation import services as degradation_services
from recovery.errors import intake
from recovery.retries import services as retry_services
from recovery.retries.models import RetryJob
from tests.support.healing_runs import execute, run_row

pytestmark = pytest.mark.django_db

BUILTINS = {
    "reset_breaker": "medium",
    "clear_degradation": "medium",
    "flush_fallback_cache": "low",
    "replay_dead_letters": "medium",
    "requeue_stuck_retries": "low",
    "restart_worker_pool": "high",
}


def approved(name: str, service: str = "web-search", **parameters: Any) -> HealingRun:
    """A run of the built-in, approved (as if its operators had said yes), ready for its worker."""
    return run_row(HealingAction.objects.get(name=name), "approved", service=service, parameters=parameters)


def test_the_migration_creates_every_builtin_with_its_risk_and_a_registered_function() -> None:
    rows = dict(HealingAction.objects.filter(kind="builtin").values_list("name", "risk"))
    assert rows == BUILTINS
    assert set(BUILTINS) <= set(builtins.names())


@pytest.mark.redis
def test_reset_breaker_closes_the_targets_breaker() -> None:
    Service.objects.create(name="web-search")
    run = approved("reset_breaker")
    assert execute(run) == "succeeded", run.state_reason
    assert run.output["service"] == "web-search"
    assert "closed" in run.output["breaker"]
    event = AuditEvent.objects.get(action="breaker.reset")
    assert f"healing run {run.pk}" in event.reason


def test_reset_breaker_fails_for_an_unknown_service() -> None:
    run = approved("reset_breaker", service="nowhere")
    assert execute(run) == "failed"
    assert "nowhere" in run.state_reason


def test_clear_degradation_clears_the_forced_level_of_the_target() -> None:
    Service.objects.create(name="web-search")
    degradation_services.force(
        scope="web-search", level="minimal", reason="drill", expires_at=None, actor=Actor()
    )
    run = approved("clear_degradation")
    assert execute(run) == "succeeded", run.state_reason
    assert run.output["cleared"] is True
    assert (run.output["scope"], run.output["level_before"], run.output["level_after"]) == (
        "web-search",
        "minimal",
        "normal",
    )
    assert degradation_selectors.scope_state("web-search").state.forced_level == ""  # type: ignore[union-attr]


def test_clear_degradation_clears_the_fleets_level_with_the_fleet_parameter() -> None:
    degradation_services.force(scope="*", level="degraded", reason="drill", expires_at=None, actor=Actor())
    run = approved("clear_degradation", fleet=True)
    assert execute(run) == "succeeded", run.state_reason
    assert (run.output["scope"], run.output["cleared"]) == ("*", True)


@pytest.mark.redis
def test_flush_fallback_cache_forgets_only_the_targets_results() -> None:
    fallbacks.store_results([("web-search", "search", "q1", [1]), ("web-search", "search", "q2", [2])])
    fallbacks.store_results([("billing", "invoice", "", {"id": 1})])
    run = approved("flush_fallback_cache")
    assert execute(run) == "succeeded", run.state_reason
    assert run.output == {"service": "web-search", "forgotten": 2}
    assert fallbacks.results().get("web-search", "search", "q1") is None
    assert fallbacks.results().get("billing", "invoice", "") is not None


@pytest.mark.redis
def test_replay_dead_letters_queues_them_again_up_to_the_limit() -> None:
    client = redisconn.client()
    for n in range(3):
        client.xadd(intake.DEAD, {"v": '{"patterns": []}', "k": f"{n}-0", "error": "refused", "at": "now"})
    run = approved("replay_dead_letters", limit=2)
    assert execute(run) == "succeeded", run.state_reason
    assert run.output == {"dead_letters_before": 3, "replayed": 2, "left": 1}
    assert client.xlen(intake.DEAD) == 1


def test_requeue_stuck_retries_sends_the_targets_overdue_attempts_again(
    django_capture_on_commit_callbacks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[Any, int, str]] = []
    monkeypatch.setattr(
        retry_services,
        "enqueue",
        lambda job_id, number, fence, countdown=0.0: sent.append((job_id, number, fence)),
    )
    mine = _job("web-search", "k1")
    other = _job("billing", "k2")
    stale = timezone.now() - timedelta(minutes=5)
    RetryJob.objects.filter(pk__in=[mine.pk, other.pk]).update(next_attempt_at=stale)
    run = approved("requeue_stuck_retries")
    with django_capture_on_commit_callbacks(execute=True):
        assert execute(run) == "succeeded", run.state_reason
    assert run.output == {"service": "web-search", "requeued": 1}
    mine.refresh_from_db()
    other.refresh_from_db()
    assert [(job_id, number) for job_id, number, _ in sent] == [(mine.pk, 1)]
    assert sent[0][2] == mine.fence


def _job(service: str, key: str) -> RetryJob:
    new = retry_services.NewJob(
        service=service,
        operation="rebuild",
        kind="task",
        idempotency_key=key,
        task={"name": "recovery.demo_tasks.flaky", "args": [], "kwargs": {"key": key, "failures": 0}},
    )
    job, _ = retry_services.create_job(new, actor=Actor())
    return job


@pytest.mark.redis
@pytest.mark.slow  # waits the action's whole 1 s timeout for a worker that never answers
def test_restart_worker_pool_fails_when_no_worker_answers() -> None:
    HealingAction.objects.filter(name="restart_worker_pool").update(timeout_s=1)
    run = approved("restart_worker_pool", destination=["nobody@nowhere"])
    assert execute(run) == "failed"
    assert "no worker answered pool_restart" in run.state_reason
    assert run.output["destination"] == ["nobody@nowhere"]


def test_flush_fallback_cache_forgets_results_in_the_embedded_modes_local_cache() -> None:
    local = fallbacks.ResultCache(backend=LocMemCache("healing-flush", {}))
    local.put_many([("web-search", "search", "q1", [1]), ("billing", "invoice", "", {"id": 1})])
    assert local.forget_service("web-search") == 1
    assert local.get("web-search", "search", "q1") is None
    assert local.get("billing", "invoice", "") is not None

"""Scheduling: the dispatcher claims each due run once (compare-and-set on next_due_at), even with dispatchers
racing in threads against PostgreSQL; runs go to Celery one task each, with time limits from the check's
timeout; healing runs ask for verification runs on commit; old results are purged in batches."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from healing.checks import selectors, services, tasks
from healing.checks.models import HealthCheck, HealthCheckResult, HealthCheckTransition
from healing.checks.probes import Outcome
from tests.healing.checks.conftest import Sends
from tests.support.factories import rebound_settings
from tests.support.health_checks import make_check
from tests.support.races import at_once, raised


def due(check: HealthCheck, at: datetime) -> HealthCheck:
    HealthCheck.objects.filter(pk=check.pk).update(next_due_at=at)
    check.refresh_from_db()
    return check


def celery_check(name: str, **fields: Any) -> HealthCheck:
    return make_check(name, kind="celery", queue="celery", **fields)


# --- claims -----------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_sends_each_due_check_once_and_moves_it_an_interval_on(sends: Sends) -> None:
    now = timezone.now()
    first = due(celery_check("first", interval_s=30, timeout_s=4), now - timedelta(seconds=5))
    due(celery_check("later"), now + timedelta(seconds=5))
    due(celery_check("off", enabled=False), now - timedelta(seconds=5))

    assert services.dispatch_due(now) == 1
    assert services.dispatch_due(now) == 0  # claimed: the next pass finds nothing due

    [sent] = sends
    assert (sent.check_id, sent.due_at, sent.source, sent.timeout_s) == (
        first.pk,
        first.next_due_at,
        "scheduled",
        4,
    )
    first.refresh_from_db()
    assert first.next_due_at == sent.due_at + timedelta(seconds=30)
    assert sent.expires == first.next_due_at  # a run still queued when the next is due is dropped


@pytest.mark.django_db
def test_it_claims_a_check_due_within_two_seconds_and_sends_it_to_start_when_due(sends: Sends) -> None:
    now = timezone.now()
    soon = due(celery_check("soon"), now + timedelta(milliseconds=400))
    due(celery_check("later"), now + timedelta(seconds=3))

    assert services.dispatch_due(now) == 1

    [sent] = sends
    assert (sent.check_id, sent.due_at, sent.eta) == (soon.pk, soon.next_due_at, soon.next_due_at)
    soon.refresh_from_db()
    assert soon.next_due_at == sent.due_at + timedelta(seconds=30)


@pytest.mark.django_db
def test_it_sends_an_overdue_run_to_start_at_once(sends: Sends) -> None:
    now = timezone.now()
    due(celery_check("late"), now - timedelta(seconds=1))
    services.dispatch_due(now)
    [sent] = sends
    assert sent.eta is None


@pytest.mark.django_db
def test_a_check_far_behind_runs_once_and_then_an_interval_from_now(sends: Sends) -> None:
    now = timezone.now()
    check = due(celery_check("late", interval_s=10), now - timedelta(hours=1))
    assert services.dispatch_due(now) == 1
    check.refresh_from_db()
    assert check.next_due_at == now + timedelta(seconds=10)
    assert len(sends) == 1


@pytest.mark.django_db
def test_a_pass_claims_at_most_a_batch_the_most_overdue_first(sends: Sends) -> None:
    now = timezone.now()
    checks = [due(celery_check(f"c{n}"), now - timedelta(seconds=n + 1)) for n in range(3)]
    with override_settings(REBOUND=rebound_settings(HEALTH_DISPATCH_BATCH=2)):
        assert services.dispatch_due(now) == 2
    assert [s.check_id for s in sends] == [checks[2].pk, checks[1].pk]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_racing_dispatchers_send_each_due_run_exactly_once(sends: Sends) -> None:
    now = timezone.now()
    checks = [due(celery_check(f"c{n}"), now - timedelta(milliseconds=n)) for n in range(60)]

    assert raised(at_once(4, lambda _: services.dispatch_due(now))) == []
    assert sorted(s.check_id for s in sends) == sorted(c.pk for c in checks)
    for check in checks:
        [sent] = sends.for_check(check.pk)
        assert sent.due_at == check.next_due_at
        check.refresh_from_db()
        assert check.next_due_at == sent.due_at + timedelta(seconds=30)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_results_are_all_counted() -> None:
    check = make_check("beat", rise=100, fall=100)

    def report(_thread: int) -> None:
        for _ in range(5):
            services.record(check.pk, Outcome(False, error="x"), source="manual")

    assert raised(at_once(8, report)) == []
    check.refresh_from_db()
    assert check.consecutive_failures == 40  # the row lock: no lost update
    assert HealthCheckResult.objects.filter(health_check=check).count() == 40


# --- sending ----------------------------------------------------------------------------------------------------


class FakeApp:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.fail = fail

    def send_task(self, name: str, **options: Any) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.append((name, options))


@pytest.mark.django_db
def test_a_run_is_one_task_with_json_arguments_and_time_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    app = FakeApp()
    monkeypatch.setattr(services, "current_app", app)
    at = timezone.now()
    assert services.send_run(7, at, "scheduled", 5.0, expires=at + timedelta(seconds=30))
    [(name, options)] = app.sent
    assert name == "healing.checks.tasks.run_check" == tasks.run_check.name
    assert options == {
        "args": [7, at.isoformat(), "scheduled"],
        "soft_time_limit": 15.0,
        "time_limit": 25.0,
        "expires": at + timedelta(seconds=30),
        "eta": None,
    }
    monkeypatch.setattr(services, "current_app", FakeApp(fail=True))
    assert services.send_run(7, at, "scheduled", 5.0) is False  # logged, not raised


@pytest.mark.django_db
def test_the_task_reads_its_json_arguments() -> None:
    check = make_check("beat", interval_s=60, grace_s=30)
    at = timezone.now() - timedelta(seconds=1)
    assert tasks.run_check(check.pk, at.isoformat(), "scheduled") == "fail"
    assert HealthCheckResult.objects.get().due_at == at


@pytest.mark.django_db
def test_a_verification_run_is_sent_once_the_caller_commits(
    sends: Sends, django_capture_on_commit_callbacks: Any
) -> None:
    check = celery_check("queue", timeout_s=3)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.enqueue_run(check.pk, source="verification")
        assert sends == []
    for callback in callbacks:
        callback()
    [sent] = sends
    assert (sent.check_id, sent.source, sent.timeout_s, sent.expires) == (check.pk, "verification", 3, None)
    with pytest.raises(ValueError):
        services.enqueue_run(check.pk, source="scheduled")


@pytest.mark.django_db
def test_a_verification_run_is_recorded_with_its_source(monkeypatch: pytest.MonkeyPatch) -> None:
    check = make_check("beat", interval_s=60, rise=1)
    services.ping(check_id=check.pk, ok=True, message="", actor=services.Actor())
    at = timezone.now()
    assert services.run_check(check.pk, at, "verification") == "ok"
    result = selectors.results(check).first()
    assert result is not None and (result.source, result.due_at) == ("verification", at)
    assert selectors.passed_since(check.pk, at - timedelta(seconds=1))
    assert not selectors.passed_since(check.pk, timezone.now() + timedelta(seconds=1))


@pytest.mark.django_db
def test_passed_since_needs_the_check_healthy() -> None:
    check = make_check("beat", rise=2)
    since = timezone.now()
    services.record(check.pk, Outcome(True), source="manual")
    assert not selectors.passed_since(check.pk, since)  # one pass: not healthy yet
    services.record(check.pk, Outcome(True), source="manual")
    assert selectors.passed_since(check.pk, since)
    assert not selectors.passed_since(check.pk + 1000, since)


@pytest.mark.django_db
def test_get_check_answers_404_for_an_unknown_name() -> None:
    make_check("beat")
    assert selectors.get_check("beat").name == "beat"
    for name in ["nope", "Bad Name", "a\x00b"]:
        with pytest.raises(services.NotFound):
            selectors.get_check(name)


# --- purging ----------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_purges_old_results_keeping_each_checks_newest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, "PURGE_BATCH", 3)
    old_only = make_check("old-only", fall=1)
    busy = make_check("busy", fall=1)
    quiet = make_check("quiet")
    for check in (old_only, busy):
        for _ in range(4):
            services.record(check.pk, Outcome(False, error="x"), source="manual")
    now = timezone.now()
    HealthCheckResult.objects.update(created_at=now - timedelta(days=8))
    services.record(busy.pk, Outcome(True), source="manual")  # fresh

    with override_settings(REBOUND=rebound_settings(HEALTH_RESULT_RETENTION_DAYS=7)):
        assert tasks.purge_check_results() == 7

    kept = dict(HealthCheckResult.objects.values_list("health_check__name", "ok"))
    assert HealthCheckResult.objects.filter(health_check=old_only).count() == 1  # its newest, old as it is
    assert kept == {"old-only": False, "busy": True}
    assert not HealthCheckResult.objects.filter(health_check=quiet).exists()
    # Transitions stay (each check's first failure made it unhealthy); the purged result's link becomes null.
    assert HealthCheckTransition.objects.count() == 2
    assert HealthCheckTransition.objects.filter(result__isnull=True).count() == 2

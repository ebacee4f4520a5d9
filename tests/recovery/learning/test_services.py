"""Writes of error learning (recovery/learning/services.py) against PostgreSQL: folding results into their rows
by compare-and-set, concurrent folds, taking a success back, and the audited reset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import transaction
from prometheus_client import REGISTRY

from core.api.errors import InvalidInput
from core.audit.models import AuditEvent
from core.audit.services import Actor
from recovery.breakers.models import Service
from recovery.learning import selectors, services
from recovery.learning.models import Effectiveness
from recovery.learning.services import Result
from tests.support import factories
from tests.support.races import at_once, raised

pytestmark = pytest.mark.django_db

FP = "f" * 40
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def at(seconds: float = 0.0) -> datetime:
    return T0 + timedelta(seconds=seconds)


def result(outcome: str = "succeeded", **fields: Any) -> Result:
    values: dict[str, Any] = {
        "action": "fallback:cache",
        "service": "search",
        "error_class": "external_service",
        "fingerprint": FP,
        "outcome": outcome,
        "at": at(),
        "recover_s": 2.0 if outcome == "succeeded" else None,
        "source": "plan",
    }
    values.update(fields)
    return Result(**values)


def pattern_row(fingerprint: str = FP, action: str = "fallback:cache") -> Effectiveness:
    return Effectiveness.objects.get(scope="pattern", fingerprint=fingerprint, action=action)


def service_row(
    service: str = "search", error_class: str = "external_service", action: str = "fallback:cache"
) -> Effectiveness:
    return Effectiveness.objects.get(scope="service", service=service, error_class=error_class, action=action)


def operator() -> Actor:
    return Actor(user=factories.operator())


# --- record ------------------------------------------------------------------------------------------------


def test_it_creates_a_pattern_row_and_a_service_row_for_a_first_result() -> None:
    services.record([result(recovered_after_s=1.5)])

    pattern, service = pattern_row(), service_row()
    for row in (pattern, service):
        assert (row.tries, row.successes, row.recover_s_sum, row.delay_s_sum, row.delay_weight) == (
            1.0,
            1.0,
            2.0,
            1.5,
            1.0,
        )
        assert (row.total_tries, row.total_successes, row.total_unknown, row.version) == (1, 1, 0, 0)
        assert (row.first_result_at, row.last_result_at, row.as_of_s) == (at(), at(), at().timestamp())
    assert (pattern.service, pattern.error_class, pattern.action) == (
        "search",
        "external_service",
        "fallback:cache",
    )
    assert service.fingerprint == ""
    assert Effectiveness.objects.count() == 2


def test_it_folds_a_second_result_into_the_same_rows() -> None:
    services.record([result()])
    services.record([result("failed", at=at(60))])

    for row in (pattern_row(), service_row()):
        row.refresh_from_db()
        assert (row.total_tries, row.total_successes, row.version) == (2, 1, 1)
        assert row.tries == pytest.approx(2.0, rel=1e-4) and row.successes == pytest.approx(1.0, rel=1e-4)
        assert row.recover_s_sum == pytest.approx(2.0, rel=1e-4)
        assert (row.first_result_at, row.last_result_at) == (at(), at(60))
    assert Effectiveness.objects.count() == 2


def test_it_touches_only_the_service_row_without_a_fingerprint() -> None:
    services.record([result(fingerprint="", error_class="", action="healing:restart", source="healing_run")])

    [row] = Effectiveness.objects.all()
    assert (row.scope, row.service, row.error_class, row.action, row.total_tries) == (
        "service",
        "search",
        "",
        "healing:restart",
        1,
    )


def test_it_counts_an_unknown_as_a_try_without_a_success() -> None:
    services.record([result("unknown")])

    row = service_row()
    assert (row.tries, row.successes, row.total_tries, row.total_successes, row.total_unknown) == (
        1.0,
        0.0,
        1,
        0,
        1,
    )
    assert row.recover_s_sum == 0.0


def test_it_folds_a_batch_of_one_key_in_order() -> None:
    services.record([result(), result("failed", at=at(1)), result("unknown", at=at(2))])

    row = pattern_row()
    assert (row.total_tries, row.total_successes, row.total_unknown, row.version) == (3, 1, 1, 2)
    assert row.last_result_at == at(2)


def test_it_counts_each_committed_result_into_the_metric(django_capture_on_commit_callbacks: Any) -> None:
    labels = {"source": "retry_job", "outcome": "failed"}
    before = REGISTRY.get_sample_value("learning_results_total", labels) or 0.0
    with django_capture_on_commit_callbacks(execute=True):
        services.record([result("failed", source="retry_job"), result("failed", source="retry_job")])

    assert REGISTRY.get_sample_value("learning_results_total", labels) == before + 2


def test_it_writes_nothing_of_a_batch_whose_transaction_rolls_back() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        services.record([result()])
        raise RuntimeError("the plan's transaction failed")

    assert not Effectiveness.objects.exists()


def test_it_refuses_a_result_with_an_unknown_outcome() -> None:
    with pytest.raises(ValueError):
        services.record([result("maybe")])
    assert not Effectiveness.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_loses_no_result_when_threads_fold_the_same_rows_at_once() -> None:
    def work(i: int) -> None:
        for n in range(5):
            services.record([result("succeeded" if (i + n) % 2 else "failed", at=at(i + n))])

    outcomes = at_once(8, work)

    assert raised(outcomes) == []
    for row in (pattern_row(), service_row()):
        assert (row.total_tries, row.total_successes, row.version) == (40, 20, 39)
        assert row.tries == pytest.approx(40.0, rel=1e-3)
        assert row.successes == pytest.approx(20.0, rel=1e-3)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_folds_batches_of_several_rows_at_once_without_a_deadlock() -> None:
    # Each thread names the same two keys in its own order, inside one transaction: a fold in the order given
    # could deadlock; the stable order makes them wait for each other instead.
    def work(i: int) -> None:
        keys = ["fallback:cache", "retry"] if i % 2 else ["retry", "fallback:cache"]
        for n in range(3):
            with transaction.atomic():
                services.record([result(action=key, at=at(n)) for key in keys])

    outcomes = at_once(6, work)

    assert raised(outcomes) == []
    for action in ("fallback:cache", "retry"):
        assert pattern_row(action=action).total_tries == 18
        assert service_row(action=action).total_tries == 18


# --- retract_success -------------------------------------------------------------------------------------


def test_it_takes_back_a_success_in_both_scopes() -> None:
    services.record([result(), result(at=at(1))])

    services.retract_success(result("failed", at=at(2)), originally_at=at(1))

    for row in (pattern_row(), service_row()):
        assert (row.total_tries, row.total_successes, row.version) == (2, 1, 2)
        assert row.tries == pytest.approx(2.0, rel=1e-4)
        assert row.successes == pytest.approx(1.0, rel=1e-4)
        assert row.last_result_at == at(2)


def test_it_never_takes_total_successes_below_zero() -> None:
    services.record([result("failed")])

    services.retract_success(result("failed", at=at(1)), originally_at=at())

    row = service_row()
    assert (row.total_successes, row.successes, row.total_tries) == (0, 0.0, 1)


def test_it_retracts_nothing_where_nothing_was_learned() -> None:
    services.retract_success(result("failed"), originally_at=at())

    assert not Effectiveness.objects.exists()


# --- reset -----------------------------------------------------------------------------------------------


def _learn_two_services() -> None:
    services.record(
        [
            result(),
            result(action="retry"),
            result(service="billing", fingerprint="b" * 40),
            result(service="billing", fingerprint=""),
        ]
    )


def test_it_forgets_a_service_in_both_scopes_and_audits_it_once() -> None:
    _learn_two_services()
    search = Service.objects.create(name="search")
    actor = operator()

    gone = services.reset(service="search", actor=actor, reason="fixed the cache")

    assert gone == 4
    assert set(Effectiveness.objects.values_list("service", flat=True)) == {"billing"}
    [event] = AuditEvent.objects.filter(action="learning.reset")
    assert (event.target_type, event.target_id, event.reason, event.actor_user) == (
        "recovery.service",
        str(search.pk),
        "fixed the cache",
        actor.user,
    )
    assert event.after == {"service": "search", "fingerprint": None, "deleted": 4}


def test_it_forgets_a_pattern_only() -> None:
    _learn_two_services()

    gone = services.reset(fingerprint=FP, actor=operator(), reason="new release")

    assert gone == 2
    assert not Effectiveness.objects.filter(fingerprint=FP).exists()
    assert Effectiveness.objects.filter(scope="service", service="search").count() == 2
    [event] = AuditEvent.objects.filter(action="learning.reset")
    assert event.after == {"service": None, "fingerprint": FP, "deleted": 2}


def test_it_refuses_a_reset_naming_neither_a_service_nor_a_pattern() -> None:
    _learn_two_services()

    with pytest.raises(InvalidInput) as refused:
        services.reset(service=" ", actor=operator(), reason="everything")

    assert refused.value.errors[0]["field"] == "service"
    assert Effectiveness.objects.count() == 6
    assert not AuditEvent.objects.filter(action="learning.reset").exists()


def test_it_refuses_a_reset_without_a_reason() -> None:
    _learn_two_services()

    with pytest.raises(InvalidInput):
        services.reset(service="search", actor=operator(), reason="")

    assert Effectiveness.objects.count() == 6


def test_it_drops_the_planner_cache_on_a_reset() -> None:
    services.record([result()])
    assert "fallback:cache" in selectors.for_planner(
        fingerprint=FP, service="search", error_class="external_service"
    )

    services.reset(service="search", actor=operator(), reason="fixed")

    assert selectors.for_planner(fingerprint=FP, service="search", error_class="external_service") == {}

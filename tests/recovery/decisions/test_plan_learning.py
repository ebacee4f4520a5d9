"""Plans and error learning, against PostgreSQL and Redis: every plan's result folds once into the effectiveness
figures (as it is answered, from the outcome naming it, or as unknown), a later failure of a value handed over
is taken back, and what was learned reaches the next plan for the same error."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any, cast

import pytest
from django.db import DatabaseError
from django.test import override_settings

from core.access.models import Agent
from core.audit.services import Actor
from recovery.breakers.models import Service
from recovery.decisions import budget, policies
from recovery.decisions import services as decision_services
from recovery.decisions.models import FallbackOption, RecoveryPlan
from recovery.errors.classification import ErrorReport
from recovery.errors.services import classify_report
from recovery.learning import selectors as learning_selectors
from recovery.learning.models import Effectiveness
from tests.support import factories, races
from tests.support.factories import rebound_settings

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

TIMEOUT = {"type_name": "TimeoutError", "message": "timed out"}
EXHAUSTED = 4  # the built-in "connection timeout" policy allows 4 attempts: the 4th failed, no retry is left


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    policies.forget()
    learning_selectors.forget()
    yield
    policies.forget()
    learning_selectors.forget()
    budget.use_store(None)


@pytest.fixture
def agent(db: Any) -> Any:
    return factories.AgentFactory()


def another_agent() -> Agent:
    return cast(Agent, factories.AgentFactory())


@pytest.fixture
def svc(db: Any) -> Service:
    # Budget enough for every retry the tests plan: the budget is not what they are about.
    return Service.objects.create(name="svc", retry_budget_min_retries=1000)


def plan(agent: Any, *, error: dict[str, Any] | None = None, **request: Any) -> RecoveryPlan:
    asked = decision_services.PlanRequest(service="svc", operation="chat", error=report(error), **request)
    return decision_services.make_plan(asked, actor=Actor(agent=agent)).plan


def report(error: dict[str, Any] | None) -> ErrorReport:
    return ErrorReport(service="svc", operation="chat", **(error or TIMEOUT))


def fingerprint(error: dict[str, Any] | None = None) -> str:
    return classify_report(report(error)).fingerprint


def rows(action: str) -> dict[str, Effectiveness]:
    return {row.scope: row for row in Effectiveness.objects.filter(action=action)}


def with_static_fallback(svc: Service) -> None:
    FallbackOption.objects.create(service=svc, position=1, kind="static", static_value={"answer": "later"})


# --- plans keep their pattern and what was learned --------------------------------------------------------


def test_it_stores_the_fingerprint_and_the_learned_inputs(agent: Any, svc: Service) -> None:
    made = plan(agent, elapsed_s=0.5)

    made.refresh_from_db()
    assert made.fingerprint == fingerprint() != ""
    assert (made.inputs["learned"], made.inputs["half_life_days"]) == ([], 7.0)
    assert made.inputs["policy"]["base_delay_s"] is not None
    assert made.inputs["policy"]["max_delay_s"] is not None


def test_it_plans_without_learned_figures_it_cannot_read(
    agent: Any, svc: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(**_: Any) -> dict[str, Any]:
        raise DatabaseError("relation does not exist")

    monkeypatch.setattr(learning_selectors, "for_planner", unreadable)

    made = plan(agent)

    made.refresh_from_db()
    assert (made.action, made.inputs["learned"]) == ("retry", [])


# --- results fold once ----------------------------------------------------------------------------------------


def test_it_folds_a_success_named_by_an_outcome_into_both_scopes(agent: Any, svc: Service) -> None:
    made = plan(agent, elapsed_s=2.5)

    assert decision_services.record_results([(str(made.pk), True)], actor=Actor(agent=agent)) == 1

    made.refresh_from_db()
    assert made.result == "succeeded"
    found = rows("retry")
    assert set(found) == {"pattern", "service"}
    assert found["pattern"].fingerprint == made.fingerprint
    assert (found["service"].service, found["service"].error_class) == ("svc", "transient")
    for row in found.values():
        assert (row.total_tries, row.total_successes, row.total_unknown) == (1, 1, 0)
        # It worked elapsed_s + delay_s after the first failure: what the next retry's timing learns from.
        assert (row.delay_weight, row.delay_s_sum) == (
            pytest.approx(1.0),
            pytest.approx(2.5 + (made.delay_s or 0.0)),
        )


def test_it_folds_a_failure_named_by_an_outcome(agent: Any, svc: Service) -> None:
    made = plan(agent)

    decision_services.record_results([(str(made.pk), False)], actor=Actor(agent=agent))

    made.refresh_from_db()
    assert made.result == "failed"
    for row in rows("retry").values():
        assert (row.total_tries, row.total_successes, row.successes) == (1, 0, 0.0)


def test_it_folds_each_plans_result_once(agent: Any, svc: Service) -> None:
    made = plan(agent)
    actor = Actor(agent=agent)
    decision_services.record_results([(str(made.pk), True), (str(made.pk), False)], actor=actor)

    assert decision_services.record_results([(str(made.pk), False)], actor=actor) == 0

    made.refresh_from_db()
    assert made.result == "succeeded"
    for row in rows("retry").values():
        assert (row.total_tries, row.total_successes, row.version) == (1, 1, 0)


def test_it_ignores_another_agents_outcome(agent: Any, svc: Service) -> None:
    made = plan(agent)

    decision_services.record_results([(str(made.pk), True)], actor=Actor(agent=another_agent()))

    made.refresh_from_db()
    assert made.result == "pending"
    assert not Effectiveness.objects.exists()


def test_it_costs_nothing_when_no_outcome_names_a_plan(agent: Any, django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(0):
        assert decision_services.record_results([], actor=Actor(agent=agent)) == 0


def test_it_folds_a_plan_resolved_as_it_is_answered_at_once(agent: Any, svc: Service) -> None:
    with_static_fallback(svc)

    made = plan(agent, attempt=EXHAUSTED)

    made.refresh_from_db()
    assert (made.action, made.result) == ("fallback", "succeeded")
    found = rows("fallback:static")
    assert set(found) == {"pattern", "service"}
    for row in found.values():
        assert (row.total_tries, row.total_successes, row.recover_s_sum) == (1, 1, 0.0)


def test_it_folds_an_abort_as_a_failure_as_it_is_answered(agent: Any, svc: Service) -> None:
    made = plan(agent, error={"status_code": 400, "message": "bad field"})

    made.refresh_from_db()
    assert (made.action, made.result) == ("abort", "failed")
    for row in rows("abort").values():
        assert (row.error_class, row.total_tries, row.total_successes) == ("validation", 1, 0)


def test_it_folds_an_expired_plan_as_unknown(agent: Any, svc: Service) -> None:
    made = plan(agent)
    RecoveryPlan.objects.filter(pk=made.pk).update(created_at=made.created_at - timedelta(hours=1))

    assert decision_services.expire_plans() == 1

    made.refresh_from_db()
    assert made.result == "unknown"
    for row in rows("retry").values():
        assert (row.total_tries, row.total_successes, row.total_unknown) == (1, 0, 1)
    assert decision_services.expire_plans() == 0
    assert all(row.total_tries == 1 for row in Effectiveness.objects.all())


# --- a value handed over that did not do ----------------------------------------------------------------------


def test_it_takes_back_the_success_of_a_fallback_whose_recovery_failed(agent: Any, svc: Service) -> None:
    with_static_fallback(svc)
    made = plan(agent, attempt=EXHAUSTED)

    changed = decision_services.record_results([(str(made.pk), False)], actor=Actor(agent=agent))

    made.refresh_from_db()
    assert (changed, made.result) == (1, "failed")
    for row in rows("fallback:static").values():
        assert (row.total_tries, row.total_successes, row.version) == (1, 0, 1)
        assert row.successes == pytest.approx(0.0, abs=1e-6)


def test_it_takes_a_success_back_only_once(agent: Any, svc: Service) -> None:
    with_static_fallback(svc)
    made = plan(agent, attempt=EXHAUSTED)
    actor = Actor(agent=agent)
    decision_services.record_results([(str(made.pk), False)], actor=actor)

    assert decision_services.record_results([(str(made.pk), False)], actor=actor) == 0

    for row in rows("fallback:static").values():
        assert (row.total_successes, row.version) == (0, 1)


def test_it_takes_no_success_back_for_another_agent(agent: Any, svc: Service) -> None:
    with_static_fallback(svc)
    made = plan(agent, attempt=EXHAUSTED)

    decision_services.record_results([(str(made.pk), False)], actor=Actor(agent=another_agent()))

    made.refresh_from_db()
    assert made.result == "succeeded"
    assert all(row.total_successes == 1 for row in Effectiveness.objects.all())


# --- what was learned reaches the next plan --------------------------------------------------------------------


@override_settings(REBOUND=rebound_settings(LEARNING_CACHE_SECONDS=0))
def test_it_switches_a_pattern_to_what_has_proven_better(agent: Any, svc: Service) -> None:
    with_static_fallback(svc)
    actor = Actor(agent=agent)
    for _ in range(12):  # retries of this pattern keep failing...
        decision_services.record_results([(str(plan(agent).pk), False)], actor=actor)
    # ...while the static default, used once retries ran out, always did (11: decayed a little since, 10 results
    # weigh just under LEARNING_MIN_TRIES)
    for _ in range(11):
        plan(agent, attempt=EXHAUSTED)

    made = plan(agent)

    made.refresh_from_db()
    assert (made.action, (made.fallback or {})["kind"], made.result) == ("fallback", "static", "succeeded")
    assert "learned for this pattern, fallback to static recovered 11 of 11 and retry 0 of 12" in made.reason
    learned = {item["action"]: item for item in made.inputs["learned"]}
    assert (learned["retry"]["tries"], learned["retry"]["trusted"]) == (pytest.approx(12.0, rel=1e-3), True)
    assert learned["fallback:static"]["scope"] == "pattern"


@override_settings(REBOUND=rebound_settings(LEARNING_CACHE_SECONDS=0))
def test_it_shows_the_figures_among_the_options(agent: Any, svc: Service) -> None:
    decision_services.record_results([(str(plan(agent).pk), True)], actor=Actor(agent=agent))

    listed = decision_services.list_options(service=svc, operation="chat", error_class="transient")

    retry = next(o for o in listed.options if o.action == "retry")
    assert retry.why.endswith(
        "; learned: 1 of 1 recovered for this service and error class, too few to trust yet"
    )


# --- races ----------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_folds_a_plan_once_when_outcomes_race(agent: Any, svc: Service) -> None:
    made = plan(agent)
    actor = Actor(agent=agent)

    results = races.at_once(
        6, lambda i: decision_services.record_results([(str(made.pk), i % 2 == 0)], actor=actor)
    )

    assert races.raised(results) == []
    assert sorted(results) == [0, 0, 0, 0, 0, 1]
    made.refresh_from_db()
    expected = 1 if made.result == "succeeded" else 0
    for row in rows("retry").values():
        assert (row.total_tries, row.total_successes, row.version) == (1, expected, 0)

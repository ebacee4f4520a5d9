"""The beat sweep (healing/escalations/sweeps.py): an essential service's breaker open past the trigger's
duration, tripped for real through the API with time moved by passing `now` or by the trigger's duration_s;
idempotent, once per outage; and what it resolves: breakers closed unheard, tasks no longer stale."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from core.audit.services import Actor
from healing.escalations import selectors, sweeps
from healing.escalations import services as escalation_services
from healing.escalations.models import Escalation, EscalationTrigger
from recovery.breakers.models import BreakerTransition, Service
from recovery.checkpoints import services as checkpoint_services
from recovery.checkpoints.models import Task
from tests.support import factories
from tests.support.escalation_receivers import escalation_receivers  # noqa: F401  (a fixture)

pytestmark = pytest.mark.django_db

KEY = "breaker_open_too_long:svc"
FAIL_503 = {"service": "svc", "success": False, "error": {"status_code": 503}}
OK = {"service": "svc", "success": True, "duration_ms": 12}


@pytest.fixture(autouse=True)
def fresh_triggers() -> Any:
    selectors.clear_trigger_cache()
    yield
    selectors.clear_trigger_cache()


def small_breaker(name: str = "svc", criticality: str = "essential") -> Service:
    return Service.objects.create(
        name=name,
        criticality=criticality,
        minimum_calls=4,
        window_size=10,
        consecutive_failures=0,
        wait_duration_s=0.2,
        max_wait_s=1,
        half_open_max_calls=2,
        success_threshold=2,
    )


def trip(client: Any, name: str = "svc") -> BreakerTransition:
    response = client.post("/api/v1/outcomes", [{**FAIL_503, "service": name}] * 4, format="json")
    assert response.status_code == 200, response.json()
    return BreakerTransition.objects.filter(service__name=name, to_state="open").latest("id")


def permits(client: Any, n: int) -> list[dict[str, Any]]:
    time.sleep(0.25)  # the breaker's wait is over: trial calls
    given = [client.post("/api/v1/breakers/svc/permit").json() for _ in range(n)]
    assert all(p["allowed"] for p in given), given
    return given


def close(client: Any) -> None:
    outcomes = [{**OK, "permit_id": p["permit_id"]} for p in permits(client, 2)]
    assert client.post("/api/v1/outcomes", outcomes, format="json").json()["results"][-1]["state"] == "closed"


def after(opened: BreakerTransition, seconds: float) -> Any:
    return opened.created_at + timedelta(seconds=seconds)


# --- 11: breakers open too long ------------------------------------------------------------------------------


@pytest.mark.redis
def test_it_raises_a_critical_escalation_for_an_essential_breaker_open_past_the_limit(
    agent_client: Any,
) -> None:
    small_breaker()
    opened = trip(agent_client)

    done = sweeps.sweep(after(opened, 601))

    assert done["breakers_raised"] == 1
    row = Escalation.objects.get(dedup_key=KEY)
    assert (row.trigger, row.level, row.state, row.service) == (
        "breaker_open_too_long",
        "critical",
        "open",
        "svc",
    )
    assert row.breaker_transition == opened
    assert row.title == "The breaker of essential service svc has been open for 10 minutes"
    assert row.context["open_since"] == opened.created_at.isoformat()
    assert opened.reason in row.summary
    assert row.runbook is not None and row.runbook.name == "breaker-open"


@pytest.mark.redis
def test_it_raises_nothing_before_the_limit(agent_client: Any) -> None:
    small_breaker()
    opened = trip(agent_client)
    assert sweeps.sweep(after(opened, 599))["breakers_raised"] == 0
    assert not Escalation.objects.exists()


@pytest.mark.redis
def test_it_takes_the_limit_from_the_triggers_duration(agent_client: Any) -> None:
    EscalationTrigger.objects.filter(kind="breaker_open_too_long").update(duration_s=5)
    small_breaker()
    opened = trip(agent_client)
    assert sweeps.sweep(after(opened, 4))["breakers_raised"] == 0
    assert sweeps.sweep(after(opened, 6))["breakers_raised"] == 1


@pytest.mark.redis
def test_it_is_idempotent(agent_client: Any) -> None:
    small_breaker()
    opened = trip(agent_client)
    sweeps.sweep(after(opened, 601))
    again = sweeps.sweep(after(opened, 700))

    assert again["breakers_raised"] == 0
    row = Escalation.objects.get(dedup_key=KEY)
    assert (row.occurrences, row.state) == (1, "open")


@pytest.mark.redis
def test_it_leaves_non_essential_services_alone(agent_client: Any) -> None:
    small_breaker(criticality="non_critical")
    opened = trip(agent_client)
    assert sweeps.sweep(after(opened, 3600))["breakers_raised"] == 0


@pytest.mark.redis
def test_it_counts_an_outage_from_when_the_breaker_left_closed(agent_client: Any) -> None:
    small_breaker()
    opened = trip(agent_client)
    [trial] = permits(agent_client, 1)  # half-open; the trial call fails: open again, a new wait
    failed = agent_client.post(
        "/api/v1/outcomes", [{**FAIL_503, "permit_id": trial["permit_id"]}], format="json"
    )
    assert failed.json()["results"][0]["state"] == "open"
    reopened = BreakerTransition.objects.filter(from_state="half_open", to_state="open").get()
    assert reopened.created_at > opened.created_at

    # 10 minutes after the breaker left closed, though less since it last opened.
    assert sweeps.sweep(after(opened, 600.1))["breakers_raised"] == 1
    assert Escalation.objects.get(dedup_key=KEY).breaker_transition == opened


@pytest.mark.redis
def test_it_does_not_raise_again_an_outage_a_human_resolved(agent_client: Any) -> None:
    small_breaker()
    opened = trip(agent_client)
    sweeps.sweep(after(opened, 601))
    row = Escalation.objects.get(dedup_key=KEY)
    escalation_services.resolve(
        escalation_id=row.pk, resolution="the vendor is on it", actor=Actor(user=factories.operator())
    )

    assert sweeps.sweep(after(opened, 900))["breakers_raised"] == 0
    row.refresh_from_db()
    assert (row.state, row.occurrences) == ("resolved", 1)
    assert Escalation.objects.count() == 1


@pytest.mark.redis
def test_it_resolves_an_escalation_whose_breaker_closed_unheard(agent_client: Any) -> None:
    small_breaker()
    opened = trip(agent_client)
    sweeps.sweep(after(opened, 601))
    close(agent_client)  # its on-commit signal never runs here: the sweep is the net
    assert Escalation.objects.get(dedup_key=KEY).state == "open"

    assert sweeps.sweep()["breakers_resolved"] == 1
    row = Escalation.objects.get(dedup_key=KEY)
    assert (row.state, row.auto_resolved, row.resolution) == (
        "resolved",
        True,
        "the breaker of svc is closed",
    )


@pytest.mark.redis
def test_it_leaves_an_escalation_whose_breaker_is_still_open(agent_client: Any) -> None:
    small_breaker()
    opened = trip(agent_client)
    sweeps.sweep(after(opened, 601))
    assert sweeps.sweep(after(opened, 660))["breakers_resolved"] == 0
    assert Escalation.objects.get(dedup_key=KEY).state == "open"


# --- heartbeats ------------------------------------------------------------------------------------------------


@pytest.fixture
def stale_tasks(
    escalation_receivers: None,  # noqa: F811
    django_capture_on_commit_callbacks: Any,
) -> Callable[[int], list[Task]]:
    """n running tasks marked stale by the real sweep, each with its heartbeat_missed escalation."""

    def make(n: int) -> list[Task]:
        agent = factories.AgentFactory()
        tasks = [checkpoint_services.create_task(agent=agent, task_id=f"crawl-{i}")[0] for i in range(n)]
        later = timezone.now() + timedelta(seconds=float(settings.REBOUND["TASK_STALE_SECONDS"]) + 5)
        with django_capture_on_commit_callbacks(execute=True):
            assert checkpoint_services.mark_stale(now=later) == n
        assert Escalation.objects.filter(trigger="heartbeat_missed", state="open").count() == n
        return tasks

    return make


def test_it_resolves_a_missed_heartbeat_once_the_task_is_alive_or_ended(
    stale_tasks: Callable[[int], list[Task]],
) -> None:
    alive, ended, quiet = stale_tasks(3)
    checkpoint_services.heartbeat(agent=alive.agent, task_id=alive.task_id)
    checkpoint_services.complete(task=ended, status=Task.Status.FAILED, actor=Actor(agent=ended.agent))

    assert sweeps.sweep()["heartbeats_resolved"] == 2

    states = dict(Escalation.objects.filter(trigger="heartbeat_missed").values_list("task_id", "state"))
    assert states == {alive.pk: "resolved", ended.pk: "resolved", quiet.pk: "open"}
    row = Escalation.objects.get(task=alive)
    assert (row.auto_resolved, row.resolution) == (
        True,
        "the task is no longer stale: it sent a heartbeat or a checkpoint, or it ended",
    )
    assert sweeps.sweep()["heartbeats_resolved"] == 0


# --- the error triggers' sweep -----------------------------------------------------------------------------------


def test_it_runs_the_error_triggers_sweep_too() -> None:
    assert sweeps.sweep() == {
        "breakers_raised": 0,
        "breakers_resolved": 0,
        "heartbeats_resolved": 0,
        "rates_resolved": 0,
    }

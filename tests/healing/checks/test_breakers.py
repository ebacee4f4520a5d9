"""Checks that drive their service's breaker: unhealthy opens it for the fleet, healthy half-opens it, an
operator's override wins and the verdict is recorded beside the transition; every committed transition is
signalled (state_changed) and shown in the metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from rest_framework.test import APIClient

from core.audit.services import Actor
from healing.checks import services, signals
from healing.checks.models import HealthCheck, HealthCheckTransition
from healing.checks.probes import Outcome
from recovery.breakers import selectors as breaker_selectors
from recovery.breakers import services as breaker_services
from recovery.breakers.models import BreakerTransition, Service
from tests.support.health_checks import make_check
from tests.support.http_target import Answer, Target

pytestmark = pytest.mark.django_db


@pytest.fixture
def committed(django_capture_on_commit_callbacks: Any) -> Any:
    """Run what a recording sets off on commit (the breaker's verdict, the signal), as in production."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def driving(**fields: Any) -> HealthCheck:
    Service.objects.get_or_create(name="svc")
    return make_check("svc-ping", drives_breaker=True, rise=1, fall=1, **fields)


def fail(check: HealthCheck, error: str = "HTTP 503 Service Unavailable: down") -> None:
    services.record(check.pk, Outcome(False, 3.0, 503, error), source="manual")


def ok(check: HealthCheck) -> None:
    services.record(check.pk, Outcome(True, 3.0, 200), source="manual")


def breaker_state() -> str:
    return breaker_selectors.effective_state(Service.objects.get(name="svc"))


def test_an_unhealthy_check_opens_its_services_breaker(committed: Any, agent_client: APIClient) -> None:
    check = driving()
    with committed():
        fail(check)
    transition = HealthCheckTransition.objects.get()
    assert (transition.to_state, transition.breaker_effect) == ("unhealthy", "opened")
    assert breaker_state() == "open"
    row = BreakerTransition.objects.get()
    assert (row.to_state, row.reason, row.actor_name) == (
        "open",
        "HTTP 503 Service Unavailable: down",
        "svc-ping",
    )
    permit = agent_client.post("/api/v1/breakers/svc/permit").json()
    assert (permit["allowed"], permit["state"]) == (False, "open")


def test_a_recovered_check_half_opens_the_breaker(committed: Any) -> None:
    check = driving()
    with committed():
        fail(check)
    with committed():
        ok(check)
    effects = list(HealthCheckTransition.objects.order_by("id").values_list("to_state", "breaker_effect"))
    assert effects == [("unhealthy", "opened"), ("healthy", "moved to half_open")]
    assert breaker_state() == "half_open"
    assert BreakerTransition.objects.order_by("id").last().reason == "passed 1 checks"  # type: ignore[union-attr]


def test_a_forced_closed_breaker_stays_closed_and_the_verdict_is_recorded(committed: Any) -> None:
    check = driving()
    breaker_services.set_override(
        name="svc", mode="forced_closed", reason="we know", expires_at=None, actor=Actor(source="api")
    )
    with committed():
        fail(check)
    transition = HealthCheckTransition.objects.get()
    assert transition.breaker_effect == "override forced_closed in force: verdict not applied"
    assert breaker_state() == "forced_closed"


def test_a_check_that_does_not_drive_leaves_the_breaker_alone(committed: Any) -> None:
    Service.objects.create(name="svc")
    check = make_check("svc-ping", fall=1)
    with committed():
        fail(check)
    assert HealthCheckTransition.objects.get().breaker_effect == ""
    assert breaker_state() == "closed"
    assert not BreakerTransition.objects.exists()


def test_a_verdict_that_cannot_be_applied_is_recorded_and_the_result_stands(
    committed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    check = driving()

    def broken(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("store on fire")

    monkeypatch.setattr(breaker_services, "health_verdict", broken)
    with committed():
        fail(check)
    assert HealthCheckTransition.objects.get().breaker_effect == "verdict not applied: store on fire"
    check.refresh_from_db()
    assert check.state == "unhealthy"


@pytest.fixture
def heard() -> Iterator[list[int]]:
    ids: list[int] = []

    def receiver(sender: Any, transition_id: int, **kwargs: Any) -> None:
        ids.append(transition_id)

    signals.state_changed.connect(receiver, dispatch_uid="test-heard")
    yield ids
    signals.state_changed.disconnect(dispatch_uid="test-heard")


def test_every_committed_transition_is_signalled(committed: Any, heard: list[int]) -> None:
    check = make_check("beat", rise=1, fall=2)
    with committed():
        fail(check)  # no change yet: no signal
        fail(check)
        ok(check)
    assert heard == list(HealthCheckTransition.objects.order_by("id").values_list("id", flat=True))
    assert len(heard) == 2


def test_no_signal_before_the_commit(heard: list[int], django_capture_on_commit_callbacks: Any) -> None:
    check = make_check("beat", fall=1)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        fail(check)
    assert heard == [] and len(callbacks) == 1


def test_a_failing_receiver_does_not_undo_the_result(committed: Any) -> None:
    def explode(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    signals.state_changed.connect(explode, dispatch_uid="test-explode")
    try:
        check = driving()
        with committed():
            fail(check)
    finally:
        signals.state_changed.disconnect(dispatch_uid="test-explode")
    assert HealthCheckTransition.objects.get().breaker_effect == "opened"


def test_it_exposes_the_checks_state_and_probe_durations(
    committed: Any, agent_client: APIClient, target: Target
) -> None:
    check = make_check("api-up", kind="http", url=target.url("/health"), service="billing", rise=1)
    beat = make_check("beat-up", service="digest")
    target.script(Answer(200))
    with committed():
        services.run_now(check_id=check.pk, actor=Actor())
    text = agent_client.get("/metrics").content.decode()
    assert 'health_check_up{check="api-up",service="billing"} 1.0' in text
    assert f'health_check_up{{check="{beat.name}",service="digest"}} -1.0' in text
    assert 'health_check_duration_seconds_count{check="api-up"}' in text
    with committed():
        services.record(check.pk, Outcome(False, error="x"), source="manual")
        services.record(check.pk, Outcome(False, error="x"), source="manual")
        services.record(check.pk, Outcome(False, error="x"), source="manual")
    assert (
        'health_check_up{check="api-up",service="billing"} 0.0'
        in agent_client.get("/metrics").content.decode()
    )


def test_it_opens_the_breaker_again_while_the_check_keeps_failing(committed: Any) -> None:
    check = driving()
    with committed():
        fail(check)
    breaker_services.reset_breaker("svc", reason="someone closed it", actor=Actor())
    assert breaker_state() == "closed"
    with committed():
        fail(check)  # no new transition of the check: it was unhealthy already
    assert HealthCheckTransition.objects.count() == 1
    assert breaker_state() == "open"


def test_it_half_opens_the_breaker_when_its_check_is_deleted(committed: Any, operator_user: Any) -> None:
    check = driving()
    with committed():
        fail(check)
    with committed():
        services.delete_check(check_id=check.pk, actor=Actor(user=operator_user), reason="retired")
    assert breaker_state() == "half_open"
    assert BreakerTransition.objects.order_by("id").last().reason == (  # type: ignore[union-attr]
        "health check svc-ping deleted: retired"
    )


def test_it_half_opens_the_breaker_when_its_check_is_disabled(committed: Any, operator_user: Any) -> None:
    check = driving()
    with committed():
        fail(check)
    with committed():
        services.update_check(
            check_id=check.pk, data={"enabled": False}, actor=Actor(user=operator_user), reason="maintenance"
        )
    assert breaker_state() == "half_open"


def test_it_leaves_the_breaker_alone_when_a_healthy_check_is_deleted(
    committed: Any, operator_user: Any
) -> None:
    check = driving()
    with committed():
        ok(check)
    with committed():
        services.delete_check(check_id=check.pk, actor=Actor(user=operator_user), reason="retired")
    assert breaker_state() == "closed"
    assert not BreakerTransition.objects.exists()

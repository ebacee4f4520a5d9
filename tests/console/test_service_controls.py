"""The operator's controls on a service's page: force the breaker, force or clear degradation, run a health check
now, ask for a healing action. Each changes exactly what its API would, through the same service, audited with
the console as the source; viewers and reviewers get a 403 and nothing changes; bad input is a 400 naming the
field, and nothing changes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from core.audit.models import AuditEvent
from healing.actions.models import HealingAction, HealingRun
from healing.checks.models import HealthCheck, HealthCheckResult
from recovery.breakers.models import BreakerTransition, Service
from recovery.degradation.models import DegradationEvent, DegradationState
from tests.support.admin_helpers import login
from tests.support.escalations import reviewer
from tests.support.healing_runs import health_check, make_webhook
from tests.support.health_checks import allow
from tests.support.http_target import Answer, Target, running_target

pytestmark = pytest.mark.django_db
NAME = "web-search"
HTMX = {"HX-Request": "true"}


@pytest.fixture
def service() -> Service:
    return Service.objects.create(name=NAME)


@pytest.fixture
def target() -> Iterator[Target]:
    with running_target() as server, allow(server.host):
        yield server


@pytest.fixture
def reviewer_client() -> Client:
    return login(reviewer())


def user(client: Client) -> Any:
    return client.user  # type: ignore[attr-defined]


def url(name: str, *args: Any) -> str:
    return reverse(f"console:{name}", args=[NAME, *args])


def console_audits(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, source=AuditEvent.Source.CONSOLE))


def assert_refused(response: Any, status: int, field: str) -> None:
    assert response.status_code == status, response.content[:300]
    assert f"{field}: " in response.content.decode()


# --- the breaker -------------------------------------------------------------------------------------------------


def test_it_forces_the_breaker_open_as_the_api_does(operator: Client, service: Service) -> None:
    response = operator.post(
        url("breaker-override"),
        {"mode": "forced_open", "reason": "INC-42", "expires_in_minutes": "30", "next": url("service")},
    )
    assert response.status_code == 303 and response["Location"] == url("service")
    service.refresh_from_db()
    assert (service.override, service.override_reason) == ("forced_open", "INC-42")
    assert service.override_until is not None
    assert timedelta(minutes=29) < service.override_until - timezone.now() <= timedelta(minutes=30)
    (audit,) = console_audits("breaker.override")
    assert (audit.actor_user, audit.reason, (audit.after or {})["override"]) == (
        user(operator),
        "INC-42",
        "forced_open",
    )
    transition = BreakerTransition.objects.get(service=service)
    assert (transition.to_state, transition.actor_user) == ("forced_open", user(operator))


def test_it_forces_the_breaker_until_a_time(operator: Client, service: Service) -> None:
    until = (timezone.now() + timedelta(hours=2)).replace(second=0, microsecond=0)
    operator.post(
        url("breaker-override"),
        {"mode": "forced_closed", "reason": "known flaky", "until": until.strftime("%Y-%m-%dT%H:%M")},
    )
    service.refresh_from_db()
    assert (service.override, service.override_until) == ("forced_closed", until)


def test_it_returns_the_breaker_to_automatic(operator: Client, service: Service) -> None:
    operator.post(url("breaker-override"), {"mode": "forced_open", "reason": "INC-42"})
    operator.post(url("breaker-override"), {"mode": "auto", "reason": "resolved"})
    service.refresh_from_db()
    assert (service.override, service.override_reason, service.override_until) == ("auto", "", None)


def test_it_answers_htmx_with_the_refreshed_section(operator: Client, service: Service) -> None:
    response = operator.post(
        url("breaker-override"), {"mode": "forced_open", "reason": "INC-42"}, headers=HTMX
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert body.startswith(f'<section id="service" data-service="{NAME}" data-breaker="forced_open">')
    assert '<ol id="timeline"' in body and 'hx-swap-oob="innerHTML"' in body


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"mode": "forced_open"}, "reason"),
        ({"mode": "forced_open", "reason": "   "}, "reason"),
        ({"mode": "forced_open", "reason": "x" * 2001}, "reason"),
        ({"mode": "sideways", "reason": "x"}, "mode"),
        ({"reason": "x"}, "mode"),
        ({"mode": "forced_open", "reason": "x", "expires_in_minutes": "soon"}, "expires_in_minutes"),
        ({"mode": "forced_open", "reason": "x", "expires_in_minutes": "-5"}, "expires_in_minutes"),
        ({"mode": "forced_open", "reason": "x", "expires_in_minutes": "nan"}, "expires_in_minutes"),
        ({"mode": "forced_open", "reason": "x", "until": "2001-01-01T00:00"}, "until"),
        ({"mode": "forced_open", "reason": "x", "until": "tomorrow"}, "until"),
        ({"mode": "forced_open", "reason": "x", "until": "2999-13-45T00:00"}, "until"),
        (
            {"mode": "forced_open", "reason": "x", "until": "2999-01-01T00:00", "expires_in_minutes": "5"},
            "until",
        ),
    ],
)
def test_it_refuses_a_bad_override_naming_the_field(
    operator: Client, service: Service, form: dict[str, str], field: str
) -> None:
    assert_refused(operator.post(url("breaker-override"), form), 400, field)
    service.refresh_from_db()
    assert service.override == "auto"
    assert not AuditEvent.objects.filter(action="breaker.override").exists()


@pytest.mark.parametrize("who", ["viewer", "reviewer_client"])
def test_it_refuses_an_override_to_who_may_not_operate(
    request: pytest.FixtureRequest, service: Service, who: str
) -> None:
    client: Client = request.getfixturevalue(who)
    response = client.post(url("breaker-override"), {"mode": "forced_open", "reason": "INC-42"})
    assert response.status_code == 403
    service.refresh_from_db()
    assert service.override == "auto"
    assert not AuditEvent.objects.exists() and not BreakerTransition.objects.exists()


def test_it_answers_404_for_an_unknown_service(operator: Client) -> None:
    response = operator.post(url("breaker-override"), {"mode": "forced_open", "reason": "x"})
    assert_refused(response, 404, "service")


def test_it_answers_400_for_a_name_that_is_no_slug(operator: Client) -> None:
    response = operator.post(
        reverse("console:breaker-override", args=["No Slug"]), {"mode": "forced_open", "reason": "x"}
    )
    assert_refused(response, 400, "service")


def test_it_retargets_a_refusal_through_htmx_to_the_flash(operator: Client, service: Service) -> None:
    response = operator.post(url("breaker-override"), {"mode": "forced_open"}, headers=HTMX)
    assert response.status_code == 400
    assert response["HX-Retarget"] == "#flash"
    assert "reason: " in response.content.decode()


def test_it_takes_no_get(operator: Client, service: Service) -> None:
    assert operator.get(url("breaker-override")).status_code == 405


# --- degradation -------------------------------------------------------------------------------------------------


def test_it_forces_a_degradation_level_as_the_api_does(operator: Client, service: Service) -> None:
    response = operator.post(
        url("degradation"),
        {"mode": "force", "level": "minimal", "reason": "INC-42", "expires_in_minutes": "120"},
    )
    assert response.status_code == 303
    state = DegradationState.objects.get(scope=NAME)
    assert (state.forced_level, state.forced_reason, state.forced_by) == ("minimal", "INC-42", user(operator))
    assert state.forced_until is not None and state.forced_until > timezone.now() + timedelta(minutes=119)
    event = DegradationEvent.objects.get(scope=NAME)
    assert (event.from_level, event.to_level, event.source, event.actor_user) == (
        "normal",
        "minimal",
        "operator",
        user(operator),
    )
    (audit,) = console_audits("degradation.force")
    assert audit.reason == "INC-42"


def test_it_clears_a_forced_level(operator: Client, service: Service) -> None:
    operator.post(url("degradation"), {"level": "emergency", "reason": "INC-42"})
    response = operator.post(url("degradation"), {"mode": "clear", "reason": "INC-42 resolved"}, headers=HTMX)
    assert response.status_code == 200 and response.content.decode().startswith('<section id="service"')
    state = DegradationState.objects.get(scope=NAME)
    assert (state.forced_level, state.forced_reason, state.forced_until, state.forced_by) == (
        "",
        "",
        None,
        None,
    )
    assert [e.to_level for e in DegradationEvent.objects.filter(scope=NAME)] == ["normal", "emergency"]
    (audit,) = console_audits("degradation.clear")
    assert audit.reason == "INC-42 resolved"


def test_it_clears_with_the_level_auto(operator: Client, service: Service) -> None:
    operator.post(url("degradation"), {"level": "degraded", "reason": "INC-42"})
    operator.post(url("degradation"), {"level": "auto", "reason": "over"})
    assert DegradationState.objects.get(scope=NAME).forced_level == ""


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"level": "minimal"}, "reason"),
        ({"level": "awful", "reason": "x"}, "level"),
        ({"reason": "x"}, "level"),
        ({"mode": "maybe", "level": "minimal", "reason": "x"}, "mode"),
        ({"level": "minimal", "reason": "x", "until": "2001-01-01T00:00"}, "until"),
        ({"level": "minimal", "reason": "x", "expires_in_minutes": "99999999"}, "expires_in_minutes"),
        ({"mode": "clear"}, "reason"),
    ],
)
def test_it_refuses_a_bad_level_naming_the_field(
    operator: Client, service: Service, form: dict[str, str], field: str
) -> None:
    assert_refused(operator.post(url("degradation"), form), 400, field)
    assert not DegradationState.objects.filter(scope=NAME).exclude(forced_level="").exists()
    assert not DegradationEvent.objects.exists() and not AuditEvent.objects.exists()


@pytest.mark.parametrize("who", ["viewer", "reviewer_client"])
def test_it_refuses_degradation_to_who_may_not_operate(
    request: pytest.FixtureRequest, service: Service, who: str
) -> None:
    client: Client = request.getfixturevalue(who)
    assert client.post(url("degradation"), {"level": "minimal", "reason": "x"}).status_code == 403
    assert not DegradationState.objects.filter(scope=NAME).exists()
    assert not AuditEvent.objects.exists()


# --- health checks -----------------------------------------------------------------------------------------------


def test_it_runs_a_heartbeat_check_now(operator: Client, service: Service) -> None:
    check = health_check("search-beat", service=NAME, kind="heartbeat", url="")
    response = operator.post(url("run-check", check.pk), headers=HTMX)
    assert response.status_code == 200
    result = HealthCheckResult.objects.get(health_check=check)
    assert (result.source, result.ok) == ("manual", False)  # never pinged: silence is a failure
    (audit,) = console_audits("health_check.run")
    assert (audit.actor_user, audit.target_id, (audit.after or {})["result"]) == (
        user(operator),
        str(check.pk),
        result.pk,
    )


def test_it_runs_an_http_check_against_a_real_target(
    operator: Client, service: Service, target: Target
) -> None:
    target.script(Answer(200))
    check = health_check(service=NAME, url=target.url("/health"))
    response = operator.post(url("run-check", check.pk))
    assert response.status_code == 303
    result = HealthCheckResult.objects.get(health_check=check)
    assert (result.source, result.ok, result.status_code) == ("manual", True, 200)
    assert [seen.path for seen in target.seen] == ["/health"]
    assert len(console_audits("health_check.run")) == 1


def test_it_does_not_run_another_services_check(operator: Client, service: Service) -> None:
    Service.objects.create(name="other")
    check = health_check("other-beat", service="other", kind="heartbeat", url="")
    assert_refused(operator.post(url("run-check", check.pk)), 404, "check_id")
    assert not HealthCheckResult.objects.exists() and not AuditEvent.objects.exists()


def test_it_refuses_to_run_a_disabled_check(operator: Client, service: Service) -> None:
    check = health_check("search-beat", service=NAME, kind="heartbeat", url="", enabled=False)
    assert_refused(operator.post(url("run-check", check.pk)), 409, "name")
    assert not HealthCheckResult.objects.exists()


@pytest.mark.parametrize("who", ["viewer", "reviewer_client"])
def test_it_refuses_a_run_to_who_may_not_operate(
    request: pytest.FixtureRequest, service: Service, who: str
) -> None:
    check = health_check("search-beat", service=NAME, kind="heartbeat", url="")
    client: Client = request.getfixturevalue(who)
    assert client.post(url("run-check", check.pk)).status_code == 403
    assert not HealthCheckResult.objects.exists() and not AuditEvent.objects.exists()


# --- healing -----------------------------------------------------------------------------------------------------


@pytest.fixture
def webhook(target: Target) -> HealingAction:
    return make_webhook(target, risk="medium")


def test_it_asks_for_a_healing_run_as_an_operator(
    operator: Client, service: Service, webhook: HealingAction
) -> None:
    response = operator.post(
        url("heal"), {"action": webhook.name, "parameters": '{"replicas": 3}', "reason": "503s for 5 minutes"}
    )
    assert response.status_code == 303
    run = HealingRun.objects.get()
    assert (run.action, run.service, run.parameters, run.reason) == (
        webhook,
        NAME,
        {"replicas": 3},
        "503s for 5 minutes",
    )
    assert (run.trigger, run.requested_by_user, run.state) == ("operator", user(operator), "approved")
    assert run.requested_by == f"user:{user(operator).username}"
    audits = AuditEvent.objects.filter(target_id=str(run.pk))
    assert audits.exists() and {a.source for a in audits} == {"console"}


def test_it_answers_htmx_heal_with_the_run_in_the_timeline(
    operator: Client, service: Service, webhook: HealingAction
) -> None:
    response = operator.post(url("heal"), {"action": webhook.name, "reason": "503s"}, headers=HTMX)
    run = HealingRun.objects.get()
    assert response.status_code == 200
    assert f"#{run.pk} {webhook.name}: approved" in response.content.decode()


@pytest.mark.parametrize(
    ("form", "field", "status"),
    [
        ({"parameters": "{}", "reason": "x"}, "action", 400),
        ({"action": "restart-pods", "parameters": "{nope", "reason": "x"}, "parameters", 400),
        ({"action": "restart-pods", "parameters": "[1, 2]", "reason": "x"}, "parameters", 400),
        ({"action": "restart-pods", "parameters": '{"replicas": NaN}', "reason": "x"}, "parameters", 400),
        ({"action": "restart-pods", "parameters": '{"replicas": 1e400}', "reason": "x"}, "parameters", 400),
        ({"action": "restart-pods", "parameters": "[" * 5000 + "]" * 5000, "reason": "x"}, "parameters", 400),
        (
            {"action": "restart-pods", "parameters": '{"replicas": 99}', "reason": "x"},
            "parameters.replicas",
            400,
        ),
        ({"action": "restart-pods"}, "reason", 400),
        ({"action": "nope", "reason": "x"}, "action", 404),
    ],
)
def test_it_refuses_a_bad_heal_naming_the_field(
    operator: Client, service: Service, webhook: HealingAction, form: dict[str, str], field: str, status: int
) -> None:
    assert_refused(operator.post(url("heal"), form), status, field)
    assert not HealingRun.objects.exists() and not AuditEvent.objects.filter(source="console").exists()


def test_it_refuses_a_disabled_action(operator: Client, service: Service, webhook: HealingAction) -> None:
    HealingAction.objects.filter(pk=webhook.pk).update(enabled=False)
    assert_refused(operator.post(url("heal"), {"action": webhook.name, "reason": "x"}), 409, "action")
    assert not HealingRun.objects.exists()


@pytest.mark.parametrize("who", ["viewer", "reviewer_client"])
def test_it_refuses_a_heal_to_who_may_not_operate(
    request: pytest.FixtureRequest, service: Service, webhook: HealingAction, who: str
) -> None:
    client: Client = request.getfixturevalue(who)
    assert client.post(url("heal"), {"action": webhook.name, "reason": "x"}).status_code == 403
    assert not HealingRun.objects.exists() and not AuditEvent.objects.filter(source="console").exists()


def test_it_sends_an_anonymous_post_nowhere(service: Service) -> None:
    response = Client().post(url("breaker-override"), {"mode": "forced_open", "reason": "x"})
    assert response.status_code == 403
    service.refresh_from_db()
    assert service.override == "auto"


def test_it_shows_the_healthcheck_kinds_button(operator: Client, service: Service) -> None:
    check = health_check("search-beat", service=NAME, kind="heartbeat", url="")
    body = operator.get(url("service")).content.decode()
    assert f'action="{url("run-check", check.pk)}"' in body
    assert HealthCheck.objects.count() == 1

"""The admin of services and breakers: live state, settings changed only with a reason, audited overrides."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from core.api.errors import InvalidInput
from core.audit.models import AuditEvent
from core.audit.services import Actor
from recovery.breakers import services as breaker_services
from recovery.breakers import store as breaker_store
from recovery.breakers.admin import BREAKER_FIELDS, TRANSITIONS_SHOWN
from recovery.breakers.models import BreakerTransition, Service
from recovery.breakers.services import OutcomeReport
from recovery.breakers.store import DatabaseStore
from recovery.errors.classification import ErrorReport
from recovery.errors.models import ErrorPattern
from tests.support import factories
from tests.support.admin_helpers import confirmed, login, url
from tests.support.admin_helpers import run_action as post_action

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def database_store() -> Iterator[None]:
    # Explicit: without it the store follows settings.REDIS_URL, which the test settings set when Redis answers.
    breaker_store.use_store(DatabaseStore())
    yield
    breaker_store.use_store(None)


def make_service(name: str = "openai", **fields: Any) -> Service:
    return Service.objects.create(name=name, **fields)


def trip(service: Service, failures: int = 2) -> None:
    """Open the breaker as agents would: failed calls, each with a timeout that counts toward it."""
    agent = factories.AgentFactory()
    error = ErrorReport(
        service=service.name, type_name="httpx.ConnectTimeout", message="timed out after 30 s"
    )
    report = OutcomeReport(
        service=service.name, operation="chat", success=False, duration_ms=30_000, error=error, permit_id=""
    )
    breaker_services.record_outcomes([report] * failures, actor=Actor(agent=agent, source="api"))


def force(service: Service, mode: str = "forced_open", reason: str = "provider outage") -> None:
    breaker_services.set_override(name=service.name, mode=mode, reason=reason, expires_at=None, actor=Actor())


def run_action(client: Client, action: str, pks: list[int], **extra: str) -> Any:
    return post_action(client, "recovery_service_changelist", action, pks, **extra)


def settings_data(service: Service, **changes: Any) -> dict[str, Any]:
    """The service's change form as a browser posts it, with the read-only transitions inline's management form."""
    values = {
        name: getattr(service, name) for name in ["kind", "criticality", "description", *BREAKER_FIELDS]
    }
    return {
        **values,
        "transitions-TOTAL_FORMS": "0",
        "transitions-INITIAL_FORMS": "0",
        **changes,
    }


def audit_events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


# --- the list and the page -------------------------------------------------------------------------------


def test_it_lists_services_with_their_breaker_as_a_badge(operator: Client) -> None:
    make_service("openai")
    forced = make_service("pinecone")
    force(forced)
    tripped = make_service("search", minimum_calls=2, consecutive_failures=2)
    trip(tripped)

    response = operator.get(url("recovery_service_changelist"))

    assert response.status_code == 200
    page = response.content.decode()
    assert "rebound-breaker-closed" in page
    assert "rebound-breaker-forced_open" in page
    assert "rebound-breaker-open" in page
    assert "#7f0000" in page  # forced open is dark red
    assert "forced_open" in page  # the override column
    assert "0/0 failed (0%)" in page
    assert "2/2 failed (100%)" not in page  # the window starts afresh when the breaker opens


def test_it_shows_the_live_window_in_the_list(operator: Client) -> None:
    service = make_service("openai", minimum_calls=10, consecutive_failures=0)
    trip(service, failures=3)

    page = operator.get(url("recovery_service_changelist")).content.decode()

    assert "3/3 failed (100%); 3 in a row" in page
    assert "rebound-breaker-closed" in page


@pytest.mark.parametrize(
    "query",
    [
        {"kind__exact": "http_api"},
        {"criticality__exact": "essential"},
        {"override__exact": "forced_open"},
        {"auto_registered__exact": "0"},
        {"q": "openai"},
        {"q": "language models"},
    ],
)
def test_it_filters_and_searches_services(operator: Client, query: dict[str, str]) -> None:
    service = make_service("openai", kind="http_api", criticality="essential", description="language models")
    force(service)
    make_service("other", auto_registered=True)

    response = operator.get(url("recovery_service_changelist"), query)

    assert response.status_code == 200
    assert [s.name for s in response.context["cl"].result_list] == ["openai"]


def test_it_shows_the_live_breaker_and_why_on_a_services_page(operator: Client) -> None:
    service = make_service("openai", minimum_calls=2, consecutive_failures=2)
    trip(service)
    pattern = ErrorPattern.objects.get()

    response = operator.get(url("recovery_service_change", service.pk))

    assert response.status_code == 200
    page = response.content.decode()
    assert "rebound-breaker-panel" in page
    assert "rebound-breaker-open" in page
    transition = BreakerTransition.objects.get(service=service)
    assert transition.reason in page  # why: the last transition's reason
    assert "The window then: 2/2 failed (100%)" in page
    assert url("recovery_errorpattern_change", pattern.pk) in page  # the pattern behind the trip
    assert f"service__id__exact={service.pk}" in page  # every transition
    assert "Why are you changing this service?" in page


def test_it_renders_the_add_page_and_a_viewers_page(operator: Client, viewer: Client) -> None:
    service = make_service("openai")
    assert operator.get(url("recovery_service_add")).status_code == 200
    page = viewer.get(url("recovery_service_change", service.pk))
    assert page.status_code == 200
    assert "rebound-breaker-panel" in page.content.decode()
    assert "Why are you changing this service?" not in page.content.decode()


def test_it_shows_only_the_latest_transitions_inline(operator: Client) -> None:
    service = make_service("openai")
    now = timezone.now()
    BreakerTransition.objects.bulk_create(
        BreakerTransition(
            service=service,
            from_state="closed",
            to_state="open",
            reason=f"transition {i}",
            created_at=now - timedelta(minutes=100 - i),
        )
        for i in range(TRANSITIONS_SHOWN + 5)
    )

    page = operator.get(url("recovery_service_change", service.pk)).content.decode()

    assert f"transition {TRANSITIONS_SHOWN + 4}" in page  # the newest
    assert "transition 5<" in page  # the oldest of the latest 20
    assert "transition 4<" not in page


# --- settings --------------------------------------------------------------------------------------------


def test_it_refuses_a_settings_change_without_a_reason(operator: Client) -> None:
    service = make_service("openai")

    response = operator.post(
        url("recovery_service_change", service.pk), settings_data(service, failure_rate_threshold=25)
    )

    assert response.status_code == 200
    assert "This field is required" in response.content.decode()
    service.refresh_from_db()
    assert service.failure_rate_threshold == 50
    assert audit_events("service.update") == []


def test_it_changes_settings_with_a_reason(operator: Client) -> None:
    service = make_service("openai")
    data = settings_data(
        service, failure_rate_threshold=25, criticality="essential", audit_reason="flaky since Monday"
    )

    response = operator.post(url("recovery_service_change", service.pk), data)

    assert response.status_code == 302
    service.refresh_from_db()
    assert (service.failure_rate_threshold, service.criticality) == (25, "essential")
    [event] = audit_events("service.update")
    assert (event.reason, event.source, event.actor_user) == ("flaky since Monday", "admin", operator.user)  # type: ignore[attr-defined]
    assert (event.before["failure_rate_threshold"], event.after["failure_rate_threshold"]) == (50, 25)  # type: ignore[index]
    assert (event.before["criticality"], event.after["criticality"]) == ("non_critical", "essential")  # type: ignore[index]


def test_it_keeps_the_name_of_a_service(operator: Client) -> None:
    service = make_service("openai")
    data = settings_data(service, name="renamed", audit_reason="try")

    assert operator.post(url("recovery_service_change", service.pk), data).status_code == 302

    service.refresh_from_db()
    assert service.name == "openai"


def test_it_shows_invalid_settings_as_form_errors(operator: Client) -> None:
    service = make_service("openai")
    data = settings_data(service, wait_duration_s=600, max_wait_s=60, audit_reason="longer waits")

    response = operator.post(url("recovery_service_change", service.pk), data)

    assert response.status_code == 200
    service.refresh_from_db()
    assert (service.wait_duration_s, service.max_wait_s) == (30, 300)
    assert audit_events("service.update") == []


def test_it_shows_a_refusal_of_the_service_as_a_form_error(operator: Client, monkeypatch: Any) -> None:
    service = make_service("openai")

    def refuse(**_: Any) -> None:
        raise InvalidInput("Thresholds are frozen during the incident.", field="failure_rate_threshold")

    monkeypatch.setattr(breaker_services, "update_service", refuse)
    data = settings_data(service, failure_rate_threshold=25, audit_reason="try")

    response = operator.post(url("recovery_service_change", service.pk), data)

    assert response.status_code == 200
    assert "Thresholds are frozen during the incident." in response.content.decode()
    service.refresh_from_db()
    assert service.failure_rate_threshold == 50


def test_it_registers_a_service_with_an_audit_event(operator: Client) -> None:
    data = {**settings_data(Service(name="x")), "name": "pinecone", "kind": "database"}
    data.update(failure_rate_threshold=30, audit_reason="new vector store")

    response = operator.post(url("recovery_service_add"), data)

    assert response.status_code == 302
    service = Service.objects.get(name="pinecone")
    assert (service.kind, service.failure_rate_threshold, service.auto_registered) == ("database", 30, False)
    [event] = audit_events("service.create")
    assert (event.target_id, event.reason, event.source) == (str(service.pk), "new vector store", "admin")
    assert event.after["name"] == "pinecone"  # type: ignore[index]
    assert event.after["failure_rate_threshold"] == 30  # type: ignore[index]


# --- overrides -------------------------------------------------------------------------------------------


def test_it_asks_for_a_reason_and_an_expiry_before_forcing_a_breaker_open(operator: Client) -> None:
    service = make_service("openai")

    asked = run_action(operator, "force_open", [service.pk])
    assert asked.status_code == 200
    assert 'name="reason"' in asked.content.decode()
    assert 'name="expires_at"' in asked.content.decode()
    service.refresh_from_db()
    assert service.override == "auto"


def test_it_forces_a_breaker_open_with_a_reason(operator: Client) -> None:
    service = make_service("openai")

    response = run_action(operator, "force_open", [service.pk], **confirmed("provider outage"))

    assert response.status_code == 302
    service.refresh_from_db()
    assert (service.override, service.override_reason, service.override_until) == (
        "forced_open",
        "provider outage",
        None,
    )


def test_it_audits_forcing_a_breaker_open(operator: Client) -> None:
    service = make_service("openai")
    run_action(operator, "force_open", [service.pk], **confirmed("provider outage"))
    [event] = audit_events("breaker.override")
    assert (event.reason, event.source, event.actor_user) == ("provider outage", "admin", operator.user)  # type: ignore[attr-defined]
    assert (event.before["override"], event.after["override"]) == ("auto", "forced_open")  # type: ignore[index]


def test_it_records_the_forced_opening_as_a_transition_by_the_user(operator: Client) -> None:
    service = make_service("openai")
    run_action(operator, "force_open", [service.pk], **confirmed("provider outage"))
    [transition] = BreakerTransition.objects.filter(service=service)
    assert (transition.from_state, transition.to_state, transition.actor) == ("closed", "forced_open", "user")
    assert transition.actor_user == operator.user  # type: ignore[attr-defined]
    assert "provider outage" in transition.reason


def test_it_forces_a_breaker_open_until_a_time(operator: Client) -> None:
    service = make_service("openai")
    until = timezone.localtime(timezone.now() + timedelta(hours=2)).replace(second=0, microsecond=0)

    run_action(
        operator,
        "force_open",
        [service.pk],
        **confirmed("maintenance window", expires_at=until.strftime("%Y-%m-%dT%H:%M")),
    )

    service.refresh_from_db()
    assert (service.override, service.override_until) == ("forced_open", until)


def test_it_refuses_an_expiry_in_the_past(operator: Client) -> None:
    service = make_service("openai")
    past = timezone.localtime(timezone.now() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")

    response = run_action(operator, "force_open", [service.pk], **confirmed("outage", expires_at=past))

    assert response.status_code == 200
    assert "Must be in the future." in response.content.decode()
    service.refresh_from_db()
    assert service.override == "auto"
    assert audit_events("breaker.override") == []


def test_it_refuses_to_force_open_without_a_reason(operator: Client) -> None:
    service = make_service("openai")

    response = run_action(operator, "force_open", [service.pk], **confirmed("  "))

    assert response.status_code == 200
    assert "This field is required" in response.content.decode()
    service.refresh_from_db()
    assert service.override == "auto"
    assert audit_events("breaker.override") == []
    assert not BreakerTransition.objects.exists()


@pytest.mark.parametrize(
    ("action", "mode"), [("force_close", "forced_closed"), ("disable_breakers", "disabled")]
)
def test_it_forces_closed_and_disables_with_a_reason(operator: Client, action: str, mode: str) -> None:
    service = make_service("openai")

    run_action(operator, action, [service.pk], **confirmed("false alarms"))

    service.refresh_from_db()
    assert (service.override, service.override_reason) == (mode, "false alarms")
    [transition] = BreakerTransition.objects.filter(service=service)
    assert (transition.to_state, transition.actor) == (mode, "user")


def test_it_returns_a_breaker_to_automatic(operator: Client) -> None:
    service = make_service("openai")
    untouched = make_service("other")
    force(service)

    response = run_action(
        operator, "back_to_automatic", [service.pk, untouched.pk], **confirmed("provider recovered")
    )

    assert response.status_code == 302
    service.refresh_from_db()
    assert (service.override, service.override_reason, service.override_until) == ("auto", "", None)
    latest = BreakerTransition.objects.filter(service=service).first()
    assert latest is not None
    assert (latest.from_state, latest.to_state, latest.actor) == ("forced_open", "closed", "user")
    # Only the overridden service changed: the other was automatic already, so nothing was recorded for it.
    [event] = [e for e in audit_events("breaker.override") if e.source == "admin"]
    assert (event.target_id, event.reason) == (str(service.pk), "provider recovered")
    page = operator.get(response.url).content.decode()
    assert "Returned 1 of 2 selected services to automatic" in page


def test_it_shows_a_refused_override_as_a_message(operator: Client, monkeypatch: Any) -> None:
    service = make_service("openai")

    def refuse(**_: Any) -> None:
        raise InvalidInput("Overrides are locked during the drill.", field="mode")

    monkeypatch.setattr(breaker_services, "set_override", refuse)

    response = run_action(operator, "force_open", [service.pk], **confirmed("outage"))

    assert response.status_code == 302
    assert "Overrides are locked during the drill." in operator.get(response.url).content.decode()
    service.refresh_from_db()
    assert service.override == "auto"


def test_it_offers_the_overrides_on_a_services_page(operator: Client, viewer: Client) -> None:
    service = make_service("openai")
    force(service)

    page = operator.get(url("recovery_service_change", service.pk)).content.decode()

    assert "Force close (asks for a reason)" in page
    assert "Return to automatic (asks for a reason)" in page
    assert "Force open (asks for a reason)" not in page  # it already is
    assert "Force close" not in viewer.get(url("recovery_service_change", service.pk)).content.decode()


# --- roles and read-only records -------------------------------------------------------------------------


def test_it_lets_a_viewer_look_but_not_act(viewer: Client) -> None:
    service = make_service("openai")

    changelist = viewer.get(url("recovery_service_changelist"))
    assert changelist.status_code == 200
    assert changelist.context["action_form"] is None  # no actions offered at all

    run_action(viewer, "force_open", [service.pk], **confirmed("x"))
    change = viewer.post(
        url("recovery_service_change", service.pk),
        settings_data(service, failure_rate_threshold=10, audit_reason="x"),
    )
    add = viewer.post(url("recovery_service_add"), {**settings_data(service), "name": "sneaky"})

    assert (change.status_code, add.status_code) == (403, 403)
    service.refresh_from_db()
    assert (service.override, service.failure_rate_threshold) == ("auto", 50)
    assert not Service.objects.filter(name="sneaky").exists()
    assert not BreakerTransition.objects.exists()
    assert AuditEvent.objects.filter(source="admin").count() == 0


def test_it_never_deletes_services(operator: Client) -> None:
    service = make_service("openai")
    assert operator.post(url("recovery_service_delete", service.pk), {"post": "yes"}).status_code == 403
    assert Service.objects.filter(pk=service.pk).exists()


def test_it_keeps_transitions_read_only(operator: Client) -> None:
    superuser = login(factories.UserFactory(is_superuser=True))
    service = make_service("openai")
    force(service)
    transition = BreakerTransition.objects.get()

    changelist = superuser.get(
        url("recovery_breakertransition_changelist"),
        {"to_state": "forced_open", "actor__exact": "automatic", "service__id__exact": str(service.pk)},
    )
    assert changelist.status_code == 200
    assert "rebound-breaker-forced_open" in changelist.content.decode()
    assert superuser.get(url("recovery_breakertransition_change", transition.pk)).status_code == 200
    assert superuser.get(url("recovery_breakertransition_add")).status_code == 403
    edit = superuser.post(url("recovery_breakertransition_change", transition.pk), {"reason": "rewritten"})
    delete = superuser.post(url("recovery_breakertransition_delete", transition.pk), {"post": "yes"})

    assert (edit.status_code, delete.status_code) == (403, 403)
    transition.refresh_from_db()
    assert transition.reason == "operator: provider outage"
    assert BreakerTransition.objects.count() == 1

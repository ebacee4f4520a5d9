"""A service's page in the console (/console/services/<name>/): who sees it, its header, ONE timeline of every
kind newest first, the timeline fragment the page polls, and a query count that does not grow with history."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from healing.actions.models import HealingAction
from healing.checks.models import HealthCheck, HealthCheckTransition
from healing.escalations.models import Escalation
from recovery.breakers.models import BreakerTransition, Service
from recovery.degradation.models import DegradationEvent
from recovery.errors.models import ErrorPattern
from tests.support.admin_helpers import login
from tests.support.escalations import raise_one, reviewer
from tests.support.healing_runs import health_check, run_row

pytestmark = pytest.mark.django_db
NAME = "web-search"
KINDS_NEWEST_FIRST = ["pattern", "breaker", "healing", "health", "escalation", "degradation"]
DATA_ACTIONS = ["force-breaker", "force-degradation", "run-check", "heal"]


def page_url(name: str = NAME) -> str:
    return reverse("console:service", args=[name])


def timeline_url(name: str = NAME) -> str:
    return reverse("console:timeline", args=[name])


@pytest.fixture
def service() -> Service:
    return Service.objects.create(name=NAME, criticality=Service.Criticality.ESSENTIAL)


def action() -> HealingAction:
    return HealingAction.objects.create(name="restart-pods", url="http://127.0.0.1:9/heal", risk="low")


def history(service: Service, start: datetime, n: int = 1) -> None:
    """n rows of each kind of history, the kinds at the times KINDS_NEWEST_FIRST orders them (newest first)."""
    at = {kind: start - timedelta(minutes=10 * i) for i, kind in enumerate(KINDS_NEWEST_FIRST)}
    check = HealthCheck.objects.filter(service=service.name).first() or health_check(service=service.name)
    runs = HealingAction.objects.filter(name="restart-pods").first() or action()
    for i in range(n):
        moment = {kind: when - timedelta(seconds=i) for kind, when in at.items()}
        BreakerTransition.objects.create(
            service=service, from_state="closed", to_state="open", reason=f"failure rate {i}",
            created_at=moment["breaker"],
        )  # fmt: skip
        HealthCheckTransition.objects.create(
            health_check=check, from_state="healthy", to_state="unhealthy", reason="3 failures",
            created_at=moment["health"],
        )  # fmt: skip
        DegradationEvent.objects.create(
            scope=service.name, from_level="normal", to_level="degraded", source="automatic",
            reason="rule service breaker open", created_at=moment["degradation"],
        )  # fmt: skip
        escalation = raise_one(f"key-{start.timestamp():.0f}-{i}", level="critical", service=service.name)
        Escalation.objects.filter(pk=escalation.pk).update(first_seen_at=moment["escalation"])
        run_row(runs, "failed", service=service.name, created_at=moment["healing"])
        ErrorPattern.objects.create(
            fingerprint=f"{start.timestamp():.0f}{i:04d}".ljust(64, "f"), service=service.name,
            error_class="external_service", severity="high", kind="service_unavailable",
            message_template="Service Unavailable <b>", first_seen_at=moment["pattern"],
            last_seen_at=moment["pattern"], total_count=1,
        )  # fmt: skip


def kinds(html: str) -> list[str]:
    return re.findall(r'<li data-kind="([a-z]+)"', html)


def test_it_sends_an_anonymous_visitor_to_the_login_page(service: Service) -> None:
    response = Client().get(page_url())
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=/console/services/web-search/")


def test_it_shows_a_viewer_every_kind_of_history_newest_first(viewer: Client, service: Service) -> None:
    history(service, timezone.now() - timedelta(minutes=1))
    response = viewer.get(page_url())
    assert response.status_code == 200
    assert kinds(response.content.decode()) == KINDS_NEWEST_FIRST


def test_it_draws_no_action_for_a_viewer(viewer: Client, service: Service) -> None:
    health_check(service=service.name)
    action()
    body = viewer.get(page_url()).content.decode()
    assert "data-action" not in body
    assert f'<section id="service" data-service="{NAME}" data-breaker="closed">' in body


def test_it_draws_no_action_for_a_reviewer(service: Service) -> None:
    health_check(service=service.name)
    body = login(reviewer()).get(page_url()).content.decode()
    assert "data-action" not in body


def test_it_draws_the_controls_for_an_operator(operator: Client, service: Service) -> None:
    health_check(service=service.name)
    action()
    body = operator.get(page_url()).content.decode()
    for verb in DATA_ACTIONS:
        assert f'data-action="{verb}"' in body
    assert 'data-action="clear-degradation"' not in body  # nothing forced: nothing to clear


def test_it_offers_to_clear_a_forced_level(operator: Client, service: Service) -> None:
    operator.post(reverse("console:degradation", args=[NAME]), {"level": "minimal", "reason": "INC-42"})
    body = operator.get(page_url()).content.decode()
    assert 'data-action="clear-degradation"' in body


def test_it_shows_the_header(viewer: Client, service: Service) -> None:
    health_check(service=service.name, state="unhealthy")
    body = viewer.get(page_url()).content.decode()
    assert '<span class="pill unhealthy">unhealthy</span>' in body
    assert '<span class="pill normal">normal</span>' in body
    assert "essential" in body


def test_it_escapes_what_it_shows(viewer: Client, service: Service) -> None:
    history(service, timezone.now())
    body = viewer.get(page_url()).content.decode()
    assert "Service Unavailable &lt;b&gt;" in body
    assert "Service Unavailable <b>" not in body


def test_it_links_escalations_to_the_queue_filtered_on_the_service(viewer: Client, service: Service) -> None:
    history(service, timezone.now())
    body = viewer.get(page_url()).content.decode()
    assert f'href="{reverse("console:queue")}?service={NAME}"' in body


def test_it_answers_404_for_an_unknown_service(viewer: Client) -> None:
    response = viewer.get(page_url("nobody"))
    assert response.status_code == 404
    assert "Unknown service" in response.content.decode()


def test_it_answers_400_for_a_name_that_is_no_slug(viewer: Client) -> None:
    response = viewer.get(page_url("Not A Slug"))
    assert response.status_code == 400


def test_it_answers_the_timeline_alone(viewer: Client, service: Service) -> None:
    history(service, timezone.now())
    response = viewer.get(timeline_url(), HTTP_HX_REQUEST="true")
    body = response.content.decode().strip()
    assert response.status_code == 200
    assert body.startswith('<ol id="timeline"') and body.endswith("</ol>")
    assert 'hx-trigger="every 5s"' in body
    assert kinds(body) == KINDS_NEWEST_FIRST


def test_it_answers_an_unknown_services_timeline_with_404(viewer: Client) -> None:
    assert viewer.get(timeline_url("nobody"), HTTP_HX_REQUEST="true").status_code == 404


def test_it_shows_an_override_that_changed_no_state(operator: Client, service: Service) -> None:
    # Forced open again (a new reason, a longer expiry) changes no state, so no transition: the audit trail tells.
    url = reverse("console:breaker-override", args=[NAME])
    operator.post(url, {"mode": "forced_open", "reason": "INC-42"})
    operator.post(url, {"mode": "forced_open", "reason": "INC-42 still", "expires_in_minutes": "60"})
    body = operator.get(timeline_url()).content.decode()
    assert kinds(body) == ["breaker", "breaker"]
    assert "override forced_open until " in body and ": INC-42 still" in body


def test_it_does_not_repeat_an_override_its_transition_tells(operator: Client, service: Service) -> None:
    operator.post(
        reverse("console:breaker-override", args=[NAME]), {"mode": "forced_open", "reason": "INC-42"}
    )
    body = operator.get(timeline_url()).content.decode()
    assert kinds(body) == ["breaker"]
    assert "closed → forced_open: operator: INC-42" in body


def _queries(client: Client) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(page_url()).status_code == 200
    return len(captured)


def test_it_reads_the_page_in_queries_that_do_not_grow_with_history(viewer: Client, service: Service) -> None:
    now = timezone.now()
    history(service, now, n=5)
    _queries(viewer)  # warm the per-process caches
    few = _queries(viewer)
    history(service, now - timedelta(hours=2), n=25)
    assert _queries(viewer) == few

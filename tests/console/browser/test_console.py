"""The console in real Chromium (Playwright), against the live server and a real Celery worker: an operator logs
in and sees the fleet; a breaker tripped through the API turns its row open without a reload; an escalation is
acknowledged and resolved from the queue; a medium-risk healing run is approved and the worker runs it to
success; a task id is found by the header's search box; a viewer finds no action button anywhere."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.test import override_settings
from playwright.sync_api import Page, expect

from core.audit.models import AuditEvent
from healing.actions.models import HealingRun
from healing.escalations.models import Escalation
from tests.support import factories
from tests.support.browser import Api, Worker, press
from tests.support.escalations import raise_one, reviewer
from tests.support.healing_runs import make_webhook, run_row
from tests.support.http_target import Target
from tests.support.processes import wait_for
from tests.support.sdk_server import service

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]

SignIn = Callable[[Any], Page]


def console_audit(action: str, target_id: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, target_id=str(target_id), source="console"))


# --- the fleet ---------------------------------------------------------------------------------------------------


def test_it_lands_an_operator_on_the_fleet_after_login(sign_in: SignIn) -> None:
    service("fleet-web")
    page = sign_in(factories.operator())

    assert re.search(r"/console/$", page.url)
    expect(page.locator("table#fleet")).to_be_visible()
    expect(page.locator('table#fleet tr[data-service="fleet-web"]')).to_be_visible()
    # The static files loaded: the vendored htmx runs, the stylesheet applies.
    assert page.evaluate("typeof window.htmx") == "object"
    assert page.evaluate(
        "[...document.styleSheets].some(s => s.href && s.href.includes('console.css') && s.cssRules.length)"
    )


def test_it_shows_a_tripped_breaker_open_within_5_s_without_a_reload(sign_in: SignIn, agent_api: Api) -> None:
    names = [f"live-{n:02}" for n in range(40)]  # enough rows for the page to scroll at 800 px
    for name in names:
        service(name)
    service("elsewhere")
    page = sign_in(factories.operator())
    page.locator("#fleet-filters input[name=q]").fill("live-")
    page.locator("#fleet-filters input[name=q]").press("Enter")
    expect(page.locator('tr[data-service="elsewhere"]')).to_have_count(0)
    row = page.locator('tr[data-service="live-39"]')
    expect(row).to_have_attribute("data-breaker", "closed")
    page.wait_for_load_state("load")
    page.evaluate("window.__marker = 1")
    navigations = page.evaluate("performance.getEntriesByType('navigation').length")
    page.evaluate("window.scrollTo(0, 300)")
    scrolled = page.evaluate("window.scrollY")
    assert scrolled > 0, "the fleet page should be taller than the window with 41 services"

    # Three consecutive failures trip it (tests.support.sdk_server.service's settings).
    answer = agent_api.post("/api/v1/outcomes", [{"service": "live-39", "success": False}] * 3)
    assert answer["results"][-1]["state"] == "open", answer

    expect(row).to_have_attribute("data-breaker", "open", timeout=5000)
    assert page.evaluate("window.__marker") == 1  # the same document: no reload
    assert page.evaluate("performance.getEntriesByType('navigation').length") == navigations
    expect(page.locator("#fleet-filters input[name=q]")).to_have_value("live-")
    expect(page.locator('tr[data-service="elsewhere"]')).to_have_count(0)  # the filter still applies
    assert abs(page.evaluate("window.scrollY") - scrolled) <= 1


# --- the review queue --------------------------------------------------------------------------------------------


def test_it_acknowledges_and_resolves_an_escalation_from_the_queue(sign_in: SignIn) -> None:
    service("queue-svc")
    escalation = raise_one("browser:ack", level="critical", service="queue-svc", title="Checkout answers 502")
    user = reviewer()
    page = sign_in(user)
    page.goto("/console/queue/")
    row = page.locator(f'#escalation-rows tr[data-escalation="{escalation.pk}"]')
    expect(row).to_have_attribute("data-state", "open")

    press(row, "acknowledge")
    expect(row).to_have_attribute("data-state", "acknowledged")
    resolution = row.locator('input[name="resolution"]')
    resolution.fill("Rolled back release 4.2")
    with page.expect_response(lambda r: r.request.method == "POST" and "/resolve/" in r.url) as answer:
        press(row, "resolve")
    assert answer.value.status == 200
    expect(row).to_have_attribute("data-state", "resolved")

    escalation.refresh_from_db()
    assert escalation.state == "resolved"
    assert escalation.acknowledged_by == user and escalation.resolved_by == user
    assert escalation.resolution == "Rolled back release 4.2"
    assert len(console_audit("escalation.acknowledge", escalation.pk)) == 1
    assert len(console_audit("escalation.resolve", escalation.pk)) == 1


def test_it_approves_a_medium_risk_run_that_the_worker_then_runs_to_success(
    sign_in: SignIn, agent_api: Api, loopback: Target, worker: Worker
) -> None:
    service("web-search")
    make_webhook(loopback, name="restart-pods", risk="medium")
    with override_settings(REBOUND=factories.rebound_settings(OUTBOUND_ALLOWED_HOSTS=["127.0.0.1"])):
        asked = agent_api.post(
            "/api/v1/healing/runs",
            {
                "action": "restart-pods",
                "service": "web-search",
                "parameters": {"replicas": 2},
                "reason": "503s",
            },
        )
        assert asked["state"] == "pending_approval", asked
        run_id = asked["id"]
        operator = factories.operator()
        page = sign_in(operator)
        page.goto("/console/queue/")
        row = page.locator(f'#approvals tr[data-run="{run_id}"]')
        expect(row).to_have_attribute("data-state", "pending_approval")

        press(row, "approve")

        def state() -> str:
            return HealingRun.objects.values_list("state", flat=True).get(pk=run_id)

        assert wait_for(lambda: state() == "succeeded", timeout=45), f"{state()}\n{worker.tail()}"
        assert [s.headers.get("Idempotency-Key") for s in loopback.seen].count(str(run_id)) == 1
        assert len(console_audit("healing_run.approve", run_id)) == 1
        # The service's timeline shows the run, succeeded.
        page.goto("/console/services/web-search/")
        entry = page.locator("ol#timeline li[data-kind=healing]").filter(has_text=f"#{run_id}")
        expect(entry.first).to_contain_text("succeeded")


# --- search ------------------------------------------------------------------------------------------------------


def test_it_finds_a_task_by_its_id_from_the_search_box(sign_in: SignIn, agent_api: Api) -> None:
    agent_api.post("/api/v1/tasks/invoice-run-7731/checkpoints", {"state": {"page": 3}})
    page = sign_in(factories.viewer())
    box = page.locator("form#search input[name=q]")
    box.fill("invoice-run-7731")
    box.press("Enter")
    page.wait_for_url(re.compile(r"/console/search/\?q=invoice-run-7731"))
    hit = page.locator('#results section[data-kind="task"] a[data-hit="task"]')
    expect(hit).to_have_count(1)
    expect(hit).to_contain_text("invoice-run-7731")


# --- a viewer ----------------------------------------------------------------------------------------------------


def test_it_draws_no_action_button_for_a_viewer(sign_in: SignIn, loopback: Target) -> None:
    service("web-search")
    escalation = raise_one("browser:viewer", level="warning", service="web-search", title="Search is slow")
    action = make_webhook(loopback, name="restart-pods", risk="medium")
    run = run_row(action, "pending_approval", trigger="agent", requested_by="agent:bot")
    page = sign_in(factories.viewer())

    expect(page.locator('tr[data-service="web-search"]')).to_be_visible()
    assert page.locator("[data-action]").count() == 0
    page.goto("/console/queue/")
    expect(page.locator(f'tr[data-escalation="{escalation.pk}"]')).to_be_visible()
    expect(page.locator(f'tr[data-run="{run.pk}"]')).to_be_visible()
    assert page.locator("[data-action]").count() == 0
    page.goto("/console/services/web-search/")
    expect(page.locator('section#service[data-service="web-search"]')).to_be_visible()
    assert page.locator("[data-action]").count() == 0
    assert Escalation.objects.get(pk=escalation.pk).state == "open"

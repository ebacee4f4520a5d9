"""The console's search (/console/search/?q=): one box, results grouped by kind, each group capped, queries
bounded; viewers may search; a query too long is a 400 naming `q`."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.access.models import Agent
from healing.actions.models import HealingAction, HealingRun
from recovery.breakers.models import Service
from recovery.errors.models import ErrorPattern
from tests.support import escalations, factories
from tests.support.admin_helpers import url

pytestmark = pytest.mark.django_db

SEARCH = "/console/search/"


def find(client: Client, q: str, htmx: bool = False) -> Any:
    return client.get(SEARCH, {"q": q}, headers={"HX-Request": "true"} if htmx else None)


def hits(response: Any, kind: str) -> list[str]:
    """The links of one kind's hits, in page order."""
    return re.findall(rf'<a data-hit="{kind}" href="([^"]+)"', response.content.decode())


def kinds(response: Any) -> list[str]:
    return re.findall(r'<section class="panel" data-kind="([a-z]+)"', response.content.decode())


def pattern(fingerprint: str = "a" * 64, **fields: Any) -> ErrorPattern:
    now = timezone.now()
    values: dict[str, Any] = {
        "service": "payments",
        "error_class": "transient",
        "severity": "medium",
        "kind": "timeout",
        "type_name": "httpx.ConnectTimeout",
        "message_template": "connect timed out after <n> s",
        "first_seen_at": now,
        "last_seen_at": now,
        "total_count": 3,
        **fields,
    }
    return ErrorPattern.objects.create(fingerprint=fingerprint, **values)


def healing_run(**fields: Any) -> HealingRun:
    action = HealingAction.objects.create(
        name="restart-pods", kind=HealingAction.Kind.WEBHOOK, risk="low", url="http://127.0.0.1:9/heal"
    )
    values: dict[str, Any] = {"service": "web-search", "risk": "low", "trigger": "operator", **fields}
    values.setdefault("created_at", timezone.now())
    return HealingRun.objects.create(action=action, state="succeeded", requested_by="user:alice", **values)


# --- who may search ----------------------------------------------------------------------------------------------


def test_it_sends_a_signed_out_visitor_to_the_login_page(client: Client) -> None:
    response = find(client, "payments")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=/console/search/")


def test_it_lets_a_viewer_search(viewer: Client) -> None:
    Service.objects.create(name="payments")

    response = find(viewer, "pay")

    assert response.status_code == 200
    assert hits(response, "service") == ["/console/services/payments/"]


def test_it_draws_no_action_for_a_viewer(viewer: Client) -> None:
    Service.objects.create(name="payments")

    assert "data-action" not in find(viewer, "payments").content.decode()


# --- the page --------------------------------------------------------------------------------------------------


def test_it_shows_a_hint_for_an_empty_query(viewer: Client) -> None:
    response = find(viewer, "  ")

    assert response.status_code == 200
    page = response.content.decode()
    assert '<div id="results">' in page
    assert "Type in the box above" in page
    assert kinds(response) == []


def test_it_says_when_nothing_matches(viewer: Client) -> None:
    response = find(viewer, "nothing-like-this")

    assert response.status_code == 200
    assert "No match for" in response.content.decode()
    assert kinds(response) == []


def test_it_refuses_a_query_over_200_characters_naming_q(viewer: Client) -> None:
    response = find(viewer, "x" * 201)

    assert response.status_code == 400
    assert 'data-field="q"' in response.content.decode()
    assert "q: at most 200 characters" in response.content.decode()


def test_it_keeps_the_query_in_the_box(viewer: Client) -> None:
    page = find(viewer, "payments").content.decode()

    assert 'name="q" value="payments"' in page


def test_it_answers_htmx_with_the_results_alone(viewer: Client) -> None:
    Service.objects.create(name="payments")

    response = find(viewer, "payments", htmx=True)

    page = response.content.decode().strip()
    assert page.startswith('<div id="results">')
    assert "<html" not in page
    assert hits(response, "service") == ["/console/services/payments/"]


def test_it_escapes_what_it_shows(viewer: Client) -> None:
    pattern(message_template="<script>alert(1)</script> failed")

    page = find(viewer, "alert").content.decode()

    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_it_groups_results_by_kind_in_a_fixed_order(viewer: Client) -> None:
    Service.objects.create(name="payments")
    pattern(service="payments", message_template="payments declined")
    Agent.objects.create(name="payments-bot")

    assert kinds(find(viewer, "payments")) == ["service", "pattern", "agent"]


# --- each kind -------------------------------------------------------------------------------------------------


def test_it_finds_a_service_by_part_of_its_name(viewer: Client) -> None:
    Service.objects.create(name="openai")
    Service.objects.create(name="payments")

    assert hits(find(viewer, "OPEN"), "service") == ["/console/services/openai/"]


def test_it_finds_a_pattern_by_its_message(viewer: Client) -> None:
    found = pattern(message_template="connect timed out after <n> s")

    assert hits(find(viewer, "timed out"), "pattern") == [url("recovery_errorpattern_change", found.pk)]


def test_it_finds_a_pattern_by_its_type_name(viewer: Client) -> None:
    found = pattern(type_name="httpx.ReadTimeout")

    assert hits(find(viewer, "ReadTimeout"), "pattern") == [url("recovery_errorpattern_change", found.pk)]


def test_it_finds_a_pattern_by_the_beginning_of_its_fingerprint(viewer: Client) -> None:
    found = pattern(fingerprint="9f3c" + "0" * 60)
    pattern(fingerprint="1234" + "0" * 60)

    assert hits(find(viewer, "9F3C0"), "pattern") == [url("recovery_errorpattern_change", found.pk)]


def test_it_finds_a_task_by_its_id_or_its_beginning(viewer: Client) -> None:
    agent = Agent.objects.create(name="worker")
    exact = factories.task(agent, task_id="job-42")
    longer = factories.task(agent, task_id="job-42-retry")
    factories.task(agent, task_id="other-job-42")

    assert hits(find(viewer, "job-42"), "task") == [
        url("recovery_task_change", exact.pk),
        url("recovery_task_change", longer.pk),
    ]


@pytest.mark.parametrize("typed", ["#{n}", "{n}", "esc-{n}", "E{n}", "esc {n}"])
def test_it_finds_an_escalation_by_its_number(viewer: Client, typed: str) -> None:
    escalation = escalations.raise_one("k1", title="disk full on db-1")

    assert hits(find(viewer, typed.format(n=escalation.pk)), "escalation") == [
        url("healing_escalation_change", escalation.pk)
    ]


def test_it_finds_escalations_by_their_title(viewer: Client) -> None:
    disk = escalations.raise_one("k1", title="disk full on db-1")
    escalations.raise_one("k2", title="search answers 503")

    assert hits(find(viewer, "disk full"), "escalation") == [url("healing_escalation_change", disk.pk)]


def test_it_finds_nothing_for_an_escalation_number_that_does_not_exist(viewer: Client) -> None:
    assert hits(find(viewer, "#999999"), "escalation") == []


@pytest.mark.parametrize("typed", ["run {n}", "run #{n}", "#{n}", "{n}"])
def test_it_finds_a_healing_run_by_its_number(viewer: Client, typed: str) -> None:
    run = healing_run()

    assert hits(find(viewer, typed.format(n=run.pk)), "run") == [url("healing_healingrun_change", run.pk)]


def test_it_finds_an_agent_by_part_of_its_name(viewer: Client) -> None:
    agent = Agent.objects.create(name="researcher-7")
    Agent.objects.create(name="crawler")

    assert hits(find(viewer, "search"), "agent") == [url("core_agent_change", agent.pk)]


# --- bounded ---------------------------------------------------------------------------------------------------


def test_it_caps_a_group_and_says_how_many_more(viewer: Client) -> None:
    Service.objects.bulk_create([Service(name=f"svc-{n:02}") for n in range(25)])

    response = find(viewer, "svc-")

    assert len(hits(response, "service")) == 20
    assert "and 5 more" in response.content.decode()


def _queries_for(client: Client, q: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert find(client, q).status_code == 200
    return len(queries)


def test_it_reads_a_constant_number_of_queries_whatever_it_finds(viewer: Client) -> None:
    Service.objects.create(name="box-0")
    Agent.objects.create(name="box-agent-0")
    few = _queries_for(viewer, "box")

    Service.objects.bulk_create([Service(name=f"box-{n}") for n in range(1, 40)])
    Agent.objects.bulk_create([Agent(name=f"box-agent-{n}") for n in range(1, 40)])
    for n in range(30):
        pattern(fingerprint=f"{n:064}", message_template=f"box {n} broke")
        escalations.raise_one(f"box-{n}", title=f"box {n} is down")

    many = _queries_for(viewer, "box")
    # Full groups add one count each (services, patterns, escalations, agents); nothing grows with the rows.
    assert many <= few + 4
    assert _queries_for(viewer, "box") == many

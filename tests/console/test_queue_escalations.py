"""The review queue's escalations (/console/queue/): who sees the page, its filters and refresh, and every act on
an escalation in place, changing exactly what the API changes, with its history row and its audit event (source
console)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.audit.models import AuditEvent
from healing.escalations.models import Escalation, EscalationEvent, Runbook
from tests.support import factories
from tests.support.admin_helpers import login
from tests.support.escalations import raise_one, reviewer

pytestmark = pytest.mark.django_db

QUEUE = "/console/queue/"
ROWS = "/console/queue/rows/"
HTMX = {"HX-Request": "true"}


def act(escalation: Escalation | int, verb: str) -> str:
    pk = escalation if isinstance(escalation, int) else escalation.pk
    return f"/console/escalations/{pk}/{verb}/"


@pytest.fixture
def reviewing() -> Client:
    """A client logged in as a reviewer (works the queue, is no operator)."""
    return login(reviewer())


def audits(escalation: Escalation, action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, target_id=str(escalation.pk)))


def kinds(escalation: Escalation) -> list[str]:
    return list(EscalationEvent.objects.filter(escalation=escalation).values_list("kind", flat=True))


def row_of(html: str, escalation: Escalation) -> str:
    start = html.index(f'data-escalation="{escalation.pk}"')
    return html[start : html.index("</tr>", start)]


def rows_in(html: str) -> list[str]:
    return re.findall(r'data-escalation="(\d+)"', html)


# --- the page ------------------------------------------------------------------------------------------------------


def test_it_sends_a_signed_out_visitor_to_the_login_page() -> None:
    response = Client().get(QUEUE)
    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=/console/queue/"


def test_it_sends_a_signed_out_refresh_to_the_login_page() -> None:
    response = Client().get(ROWS)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=/console/queue/rows/")


def test_it_shows_a_viewer_the_tables_without_any_action(viewer: Client) -> None:
    escalation = raise_one("k1", "critical", title="Payments down", service="billing")
    response = viewer.get(QUEUE)
    html = response.content.decode()
    assert response.status_code == 200
    assert '<table id="escalations">' in html and '<tbody id="escalation-rows"' in html
    assert '<table id="approvals">' in html
    assert f'<tr id="escalation-{escalation.pk}" data-escalation="{escalation.pk}" data-state="open">' in html
    assert "Payments down" in html and 'href="/console/services/billing/"' in html
    assert "data-action" not in html


def test_it_shows_a_reviewer_the_escalation_acts_but_no_decision_on_runs(reviewing: Client) -> None:
    raise_one("k1")
    html = reviewing.get(QUEUE).content.decode()
    for verb in ("acknowledge", "assign", "comment", "snooze", "resolve"):
        assert html.count(f'data-action="{verb}"') == 1, verb
    for name in ("resolution", "text", "minutes", "username"):
        assert f'name="{name}"' in html
    assert 'data-action="approve"' not in html and 'data-action="reject"' not in html


def test_it_lists_escalations_not_resolved_by_level_then_oldest_first(viewer: Client) -> None:
    old_warning = raise_one("a", "warning")
    critical = raise_one("b", "critical")
    new_warning = raise_one("c", "warning")
    Escalation.objects.filter(pk=old_warning.pk).update(first_seen_at=timezone.now() - timedelta(hours=2))
    gone = raise_one("d", "emergency")
    Escalation.objects.filter(pk=gone.pk).update(state="resolved", resolved_at=timezone.now(), resolution="x")
    html = viewer.get(QUEUE).content.decode()
    assert rows_in(html) == [str(critical.pk), str(old_warning.pk), str(new_warning.pk)]


def test_it_shows_what_the_api_shows_of_an_escalation(viewer: Client) -> None:
    escalation = raise_one(
        "k1",
        "critical",
        title="Rollback failed",
        summary="Step charge-card not compensated",
        service="billing",
    )
    runbook = Runbook.objects.create(name="refunds", steps="1. Refund by hand\n2. Tell the customer")
    Escalation.objects.filter(pk=escalation.pk).update(
        occurrences=7, recommended_action=runbook.steps, runbook=runbook
    )
    row = row_of(viewer.get(QUEUE).content.decode(), escalation)
    assert "Rollback failed" in row and "Step charge-card not compensated" in row
    assert "→ 1. Refund by hand<" in row and 'title="1. Refund by hand\n2. Tell the customer"' in row
    assert f'href="/admin/healing/runbook/{runbook.pk}/change/"' in row
    assert '<td class="num">7</td>' in row
    assert (
        '<span class="pill critical">critical</span>' in row and '<span class="pill open">open</span>' in row
    )


def test_it_links_what_is_behind_an_escalation(viewer: Client) -> None:
    task = factories.task()
    escalation = raise_one("k1", links={"task_id": task.pk})
    row = row_of(viewer.get(QUEUE).content.decode(), escalation)
    assert f'href="/admin/healing/escalation/{escalation.pk}/change/"' in row
    assert f'href="/admin/recovery/task/{task.pk}/change/">task {task.pk}</a>' in row


def test_it_filters_by_level(viewer: Client) -> None:
    raise_one("a", "warning")
    critical = raise_one("b", "critical")
    html = viewer.get(QUEUE, {"level": "critical"}).content.decode()
    assert rows_in(html) == [str(critical.pk)]
    assert 'hx-get="/console/queue/rows/?level=critical"' in html
    assert 'name="next" value="/console/queue/?level=critical"' not in html  # a viewer has no forms at all


def test_it_answers_a_level_that_is_none_with_400_naming_it(viewer: Client) -> None:
    response = viewer.get(QUEUE, {"level": "loud"})
    assert response.status_code == 400
    assert "level:" in response.content.decode()


def test_it_filters_by_service(viewer: Client) -> None:
    raise_one("a", service="search")
    billing = raise_one("b", service="billing")
    assert rows_in(viewer.get(QUEUE, {"service": "billing"}).content.decode()) == [str(billing.pk)]


def test_it_filters_the_escalations_assigned_to_me(reviewing: Client) -> None:
    raise_one("a")
    mine = raise_one("b")
    Escalation.objects.filter(pk=mine.pk).update(assignee=reviewing.user)  # type: ignore[attr-defined]
    html = reviewing.get(QUEUE, {"mine": "1"}).content.decode()
    assert rows_in(html) == [str(mine.pk)]
    assert 'name="next" value="/console/queue/?mine=1"' in html


def test_it_refreshes_the_rows_alone_with_the_filters(viewer: Client) -> None:
    raise_one("a", "warning")
    critical = raise_one("b", "critical")
    response = viewer.get(ROWS, {"level": "critical"}, headers=HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html and '<table id="approvals">' not in html
    assert '<tbody id="escalation-rows"' in html and 'hx-trigger="every 5s' in html
    assert rows_in(html) == [str(critical.pk)]


def test_it_answers_a_refresh_with_a_bad_level_with_400(viewer: Client) -> None:
    response = viewer.get(ROWS, {"level": "loud"}, headers=HTMX)
    assert response.status_code == 400
    assert "level:" in response.content.decode()


def test_it_reads_the_page_in_a_bounded_number_of_queries(operator: Client) -> None:
    def queries(count: int) -> int:
        Escalation.objects.all().delete()
        for n in range(count):
            escalation = raise_one(f"k{n}", ["info", "warning", "critical"][n % 3])
            Escalation.objects.filter(pk=escalation.pk).update(
                assignee=operator.user,  # type: ignore[attr-defined]
                acknowledged_by=operator.user,  # type: ignore[attr-defined]
            )
        with CaptureQueriesContext(connection) as captured:
            assert operator.get(QUEUE).status_code == 200
        return len(captured.captured_queries)

    assert queries(5) == queries(30)


# --- the acts: who may --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verb", "data"),
    [
        ("acknowledge", {}),
        ("assign", {"username": ""}),
        ("comment", {"text": "looking"}),
        ("snooze", {"minutes": "30", "reason": "vendor"}),
        ("resolve", {"resolution": "fixed"}),
    ],
)
def test_it_refuses_a_viewer_with_403_and_changes_nothing(
    viewer: Client, verb: str, data: dict[str, str]
) -> None:
    escalation = raise_one("k1")
    before = Escalation.objects.values().get(pk=escalation.pk)
    events = kinds(escalation)
    response = viewer.post(act(escalation, verb), data)
    assert response.status_code == 403
    assert Escalation.objects.values().get(pk=escalation.pk) == before
    assert kinds(escalation) == events
    assert not AuditEvent.objects.filter(target_id=str(escalation.pk), source="console").exists()


def test_it_refuses_a_signed_out_act_and_changes_nothing() -> None:
    escalation = raise_one("k1")
    response = Client().post(act(escalation, "acknowledge"))
    assert response.status_code == 403
    escalation.refresh_from_db()
    assert escalation.state == "open"


def test_it_answers_get_on_an_act_with_405(reviewing: Client) -> None:
    escalation = raise_one("k1")
    assert reviewing.get(act(escalation, "acknowledge")).status_code == 405


def test_it_answers_an_unknown_escalation_with_404(reviewing: Client) -> None:
    assert reviewing.post(act(987654, "acknowledge")).status_code == 404


def test_it_answers_an_id_past_a_bigint_with_404(reviewing: Client) -> None:
    assert reviewing.post(act(10**20, "acknowledge")).status_code == 404


def test_it_answers_an_unknown_act_with_404(reviewing: Client) -> None:
    escalation = raise_one("k1")
    assert reviewing.post(act(escalation, "reopen")).status_code == 404
    escalation.refresh_from_db()
    assert escalation.state == "open"


# --- the acts: what each changes ------------------------------------------------------------------------------------


def test_it_acknowledges_as_the_api_does(reviewing: Client) -> None:
    escalation = raise_one("k1")
    response = reviewing.post(act(escalation, "acknowledge"), {"next": "/console/queue/?level=warning"})
    assert response.status_code == 303
    assert response["Location"] == "/console/queue/?level=warning"
    escalation.refresh_from_db()
    assert escalation.state == "acknowledged"
    assert escalation.acknowledged_by == reviewing.user  # type: ignore[attr-defined]
    assert escalation.acknowledged_at is not None
    assert kinds(escalation)[-1] == "acknowledged"
    (event,) = audits(escalation, "escalation.acknowledge")
    assert (event.source, event.actor_user) == ("console", reviewing.user)  # type: ignore[attr-defined]
    assert (event.before, event.after) == ({"state": "open"}, {"state": "acknowledged"})


def test_it_answers_an_htmx_act_with_the_row_as_it_is_now(reviewing: Client) -> None:
    escalation = raise_one("k1")
    response = reviewing.post(act(escalation, "acknowledge"), {"next": QUEUE}, headers=HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert html.startswith(f'<tr id="escalation-{escalation.pk}" data-escalation="{escalation.pk}"')
    assert 'data-state="acknowledged"' in html
    assert 'data-action="acknowledge"' not in html  # done: the button is gone
    assert 'hx-swap-oob="innerHTML"' in html and f"Escalation #{escalation.pk} acknowledged." in html


def test_it_assigns_to_me_when_no_name_is_given(reviewing: Client) -> None:
    escalation = raise_one("k1")
    response = reviewing.post(act(escalation, "assign"), {"username": ""})
    assert response.status_code == 303
    escalation.refresh_from_db()
    assert escalation.assignee == reviewing.user  # type: ignore[attr-defined]
    assert escalation.state == "open"
    assert kinds(escalation)[-1] == "assigned"
    (event,) = audits(escalation, "escalation.assign")
    assert event.source == "console"
    assert event.after == {"assignee": reviewing.user.username}  # type: ignore[attr-defined]


def test_it_assigns_to_the_user_named(reviewing: Client) -> None:
    other = factories.operator()
    escalation = raise_one("k1")
    response = reviewing.post(act(escalation, "assign"), {"username": f" {other.username} "}, headers=HTMX)
    assert response.status_code == 200
    assert other.username in response.content.decode()
    escalation.refresh_from_db()
    assert escalation.assignee == other


def test_it_refuses_to_assign_to_someone_who_does_not_work_the_queue(reviewing: Client) -> None:
    outsider = factories.viewer()
    escalation = raise_one("k1")
    response = reviewing.post(act(escalation, "assign"), {"username": outsider.username})
    assert response.status_code == 400
    assert "username:" in response.content.decode()
    escalation.refresh_from_db()
    assert escalation.assignee is None
    assert not audits(escalation, "escalation.assign")


def test_it_comments(reviewing: Client) -> None:
    escalation = raise_one("k1")
    response = reviewing.post(act(escalation, "comment"), {"text": "  refund 4411 done by hand  "})
    assert response.status_code == 303
    event = EscalationEvent.objects.filter(escalation=escalation).latest("id")
    assert (event.kind, event.text, event.user) == ("commented", "refund 4411 done by hand", reviewing.user)  # type: ignore[attr-defined]
    (audit,) = audits(escalation, "escalation.comment")
    assert (audit.source, audit.reason) == ("console", "refund 4411 done by hand")


def test_it_refuses_an_empty_comment_naming_text(reviewing: Client) -> None:
    escalation = raise_one("k1")
    response = reviewing.post(act(escalation, "comment"), {"text": "   "})
    assert response.status_code == 400
    assert "text:" in response.content.decode()
    assert "commented" not in kinds(escalation)


def test_it_snoozes_for_minutes(reviewing: Client) -> None:
    escalation = raise_one("k1")
    before = timezone.now()
    response = reviewing.post(
        act(escalation, "snooze"), {"minutes": "90", "reason": "vendor fixes it at 13:00"}
    )
    assert response.status_code == 303
    escalation.refresh_from_db()
    assert escalation.state == "snoozed"
    assert escalation.snoozed_until is not None
    assert (
        before + timedelta(minutes=90) <= escalation.snoozed_until <= timezone.now() + timedelta(minutes=90)
    )
    event = EscalationEvent.objects.filter(escalation=escalation).latest("id")
    assert (event.kind, event.text) == ("snoozed", "vendor fixes it at 13:00")
    (audit,) = audits(escalation, "escalation.snooze")
    assert (audit.source, (audit.after or {}).get("state")) == ("console", "snoozed")


def test_it_snoozes_until_a_moment(reviewing: Client) -> None:
    escalation = raise_one("k1")
    until = (timezone.now() + timedelta(hours=3)).replace(microsecond=0)
    response = reviewing.post(act(escalation, "snooze"), {"until": until.isoformat(), "reason": "later"})
    assert response.status_code == 303
    escalation.refresh_from_db()
    assert (escalation.state, escalation.snoozed_until) == ("snoozed", until)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"minutes": "soon", "reason": "x"}, "minutes"),
        ({"minutes": "0", "reason": "x"}, "minutes"),
        ({"minutes": "50000", "reason": "x"}, "minutes"),
        ({"reason": "x"}, "minutes"),
        ({"minutes": "30", "reason": " "}, "reason"),
        ({"until": "yesterday", "reason": "x"}, "until"),
        ({"until": "2001-01-01T00:00:00Z", "reason": "x"}, "until"),
    ],
)
def test_it_refuses_a_bad_snooze_naming_the_field(
    reviewing: Client, data: dict[str, str], field: str
) -> None:
    escalation = raise_one("k1")
    response = reviewing.post(act(escalation, "snooze"), data)
    assert response.status_code == 400
    assert f"{field}:" in response.content.decode()
    escalation.refresh_from_db()
    assert (escalation.state, escalation.snoozed_until) == ("open", None)


def test_it_resolves_as_the_api_does(reviewing: Client) -> None:
    escalation = raise_one("k1")
    response = reviewing.post(act(escalation, "resolve"), {"resolution": "Refunds issued (CHG-88)"})
    assert response.status_code == 303
    escalation.refresh_from_db()
    assert escalation.state == "resolved"
    assert (escalation.resolved_by, escalation.resolution) == (reviewing.user, "Refunds issued (CHG-88)")  # type: ignore[attr-defined]
    assert escalation.resolved_at is not None and escalation.auto_resolved is False
    assert kinds(escalation)[-1] == "resolved"
    (audit,) = audits(escalation, "escalation.resolve")
    assert (audit.source, audit.after) == ("console", {"state": "resolved"})


def test_it_answers_an_htmx_resolve_with_the_resolved_row(reviewing: Client) -> None:
    escalation = raise_one("k1")
    response = reviewing.post(act(escalation, "resolve"), {"resolution": "done"}, headers=HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert f'data-escalation="{escalation.pk}" data-state="resolved"' in html
    assert "data-action" not in html.split('<div id="flash"')[0]  # nothing left to do on it


def test_it_refuses_a_resolution_without_words_naming_it(reviewing: Client) -> None:
    escalation = raise_one("k1")
    response = reviewing.post(act(escalation, "resolve"), {"resolution": ""})
    assert response.status_code == 400
    assert "resolution:" in response.content.decode()
    escalation.refresh_from_db()
    assert escalation.state == "open"


def test_it_answers_resolving_twice_with_409(reviewing: Client) -> None:
    escalation = raise_one("k1")
    assert reviewing.post(act(escalation, "resolve"), {"resolution": "done"}).status_code == 303
    response = reviewing.post(act(escalation, "resolve"), {"resolution": "again"})
    assert response.status_code == 409
    escalation.refresh_from_db()
    assert escalation.resolution == "done"
    assert len(audits(escalation, "escalation.resolve")) == 1


def test_it_answers_an_htmx_refusal_in_the_flash_area(reviewing: Client) -> None:
    escalation = raise_one("k1")
    response = reviewing.post(act(escalation, "resolve"), {"resolution": ""}, headers=HTMX)
    assert response.status_code == 400
    assert response["HX-Retarget"] == "#flash"
    assert "resolution:" in response.content.decode()


def test_it_lets_an_operator_work_the_queue_too(operator: Client) -> None:
    escalation = raise_one("k1")
    assert operator.post(act(escalation, "acknowledge")).status_code == 303
    escalation.refresh_from_db()
    assert escalation.acknowledged_by == operator.user  # type: ignore[attr-defined]

"""The fleet page (/console/) and its polled fragment (/console/fleet/rows/): rows worst first, the banner of
everything forced, filters, and a query count that does not grow with the fleet."""

from __future__ import annotations

import copy
import re
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.audit.services import Actor
from healing.escalations.models import Escalation
from recovery.breakers import services as breaker_services
from recovery.breakers import traffic
from recovery.breakers.models import Service
from recovery.degradation import services as degradation_services
from tests.support import factories, run_redis
from tests.support.escalations import raise_one
from tests.support.healing_runs import health_check

pytestmark = pytest.mark.django_db

FLEET = "/console/"
ROWS = "/console/fleet/rows/"
FAIL_503 = {"service": "svc", "success": False, "error": {"status_code": 503}}


def service(name: str, **fields: Any) -> Service:
    values = {"minimum_calls": 4, "window_size": 10, "consecutive_failures": 0, **fields}
    return Service.objects.create(name=name, **values)


def trip(agent_client: Any, name: str) -> None:
    response = agent_client.post("/api/v1/outcomes", [{**FAIL_503, "service": name}] * 4, format="json")
    assert response.status_code == 200, response.content[:300]


def user(client: Client) -> Any:
    return client.user  # type: ignore[attr-defined]


def rows(html: str) -> list[tuple[str, str]]:
    """(service, data-breaker) of each row, in page order."""
    return re.findall(r'<tr data-service="([^"]+)" data-breaker="([^"]+)">', html)


def test_it_sends_anonymous_visitors_to_the_login_page() -> None:
    response = Client().get(FLEET)
    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=/console/"


def test_it_shows_a_viewer_one_row_per_service(viewer: Client) -> None:
    service("alpha")
    service("beta")
    response = viewer.get(FLEET)
    assert response.status_code == 200
    html = response.content.decode()
    assert rows(html) == [("alpha", "closed"), ("beta", "closed")]
    assert '<table id="fleet">' in html
    assert '<form id="fleet-filters"' in html
    assert 'class="pill closed breaker-state"' in html
    assert "data-action" not in html
    assert "forced-banner" not in html


def test_it_sorts_a_service_with_an_open_breaker_first(viewer: Client, agent_client: Any) -> None:
    service("alpha")
    service("zulu")
    trip(agent_client, "zulu")
    assert rows(viewer.get(FLEET).content.decode()) == [("zulu", "open"), ("alpha", "closed")]


def test_it_ranks_health_degradation_and_escalations_below_breakers(
    viewer: Client, agent_client: Any
) -> None:
    for name in ("a-fine", "b-escalated", "c-unhealthy", "d-open"):
        service(name)
    raise_one("k1", level="critical", service="b-escalated")
    health_check("c-check", service="c-unhealthy", state="unhealthy")
    trip(agent_client, "d-open")
    html = viewer.get(FLEET).content.decode()
    assert [name for name, _ in rows(html)] == ["d-open", "c-unhealthy", "b-escalated", "a-fine"]
    assert '<span class="pill unhealthy">unhealthy</span>' in html
    assert ">1 critical</a>" in html


def test_it_shows_the_banner_for_a_breaker_override_with_who_why_and_until(operator: Client) -> None:
    service("alpha")
    until = timezone.now() + timedelta(hours=2)
    breaker_services.set_override(
        name="alpha",
        mode="forced_open",
        reason="vendor outage",
        expires_at=until,
        actor=Actor(user=user(operator)),
    )
    html = operator.get(FLEET).content.decode()
    banner = html[html.index('<div id="forced-banner" class="banner"') :]
    banner = banner[: banner.index("</div>")]
    assert "alpha" in banner and "forced_open" in banner
    assert f"user {user(operator).username}" in banner
    assert "vendor outage" in banner
    assert timezone.localtime(until).strftime("%Y-%m-%d %H:%M") in banner
    assert rows(html) == [("alpha", "forced_open")]


def test_it_shows_the_banner_for_a_forced_degradation_with_who_why_and_until(operator: Client) -> None:
    service("alpha")
    until = timezone.now() + timedelta(hours=1)
    degradation_services.force(
        scope="*",
        level="minimal",
        reason="load shedding drill",
        expires_at=until,
        actor=Actor(user=user(operator)),
    )
    html = operator.get(FLEET).content.decode()
    banner = html[html.index('<div id="forced-banner" class="banner"') :]
    banner = banner[: banner.index("</div>")]
    assert "the fleet" in banner and "minimal" in banner
    assert user(operator).username in banner
    assert "load shedding drill" in banner
    assert timezone.localtime(until).strftime("%Y-%m-%d %H:%M") in banner
    assert '<span class="pill minimal">minimal</span>' in html  # the row shows the fleet's level


def test_it_filters_by_name_state_and_problem(viewer: Client, agent_client: Any) -> None:
    service("search-api")
    service("search-db")
    service("mail")
    trip(agent_client, "search-db")
    assert [n for n, _ in rows(viewer.get(FLEET, {"q": "search"}).content.decode())] == [
        "search-db",
        "search-api",
    ]
    assert [n for n, _ in rows(viewer.get(FLEET, {"state": "open"}).content.decode())] == ["search-db"]
    assert [n for n, _ in rows(viewer.get(FLEET, {"problem": "1"}).content.decode())] == ["search-db"]
    html = viewer.get(FLEET, {"q": "search", "state": "closed"}).content.decode()
    assert [n for n, _ in rows(html)] == ["search-api"]
    assert 'value="search"' in html and '<option value="closed" selected>' in html


@pytest.mark.parametrize(
    ("params", "field"), [({"state": "exploded"}, "state"), ({"problem": "yes"}, "problem")]
)
def test_it_answers_a_bad_filter_with_400_naming_the_field(
    viewer: Client, params: dict[str, str], field: str
) -> None:
    response = viewer.get(FLEET, params)
    assert response.status_code == 400
    assert f"{field}: must be" in response.content.decode()


def test_it_answers_a_bad_filter_of_the_fragment_with_400_naming_the_field(viewer: Client) -> None:
    response = viewer.get(ROWS, {"state": "exploded"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 400
    assert "state: must be" in response.content.decode()
    assert response["HX-Retarget"] == "#flash"


def test_it_answers_the_polled_fragment_with_the_tbody_and_the_banner_out_of_band(
    viewer: Client, agent_client: Any
) -> None:
    service("alpha")
    service("zulu")
    trip(agent_client, "zulu")
    response = viewer.get(ROWS, {"q": "", "state": "", "problem": "1"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<tbody id="fleet-rows"')
    assert 'hx-trigger="every 3s"' in html and 'hx-include="#fleet-filters"' in html
    assert rows(html) == [("zulu", "open")]
    assert '<div id="banner-slot" hx-swap-oob="innerHTML">' in html
    assert 'id="fleet-summary"' in html and 'hx-swap-oob="outerHTML"' in html
    assert "<html" not in html


def test_it_polls_the_fragment_from_the_page(viewer: Client) -> None:
    html = viewer.get(FLEET).content.decode()
    assert '<tbody id="fleet-rows" hx-get="/console/fleet/rows/" hx-trigger="every 3s"' in html


def test_it_draws_the_sparkline_from_the_traffic_counts(viewer: Client) -> None:
    service("alpha")
    traffic.count([("alpha", False)] * 9 + [("alpha", True)])
    html = viewer.get(FLEET).content.decode()
    assert 'aria-label="10 calls, 10% errors in 60 min"' in html
    assert "10.0% of 10" in html
    assert html.count("<polyline") == 2  # calls and failure rate


def test_it_shows_the_top_pattern_of_the_last_hour_with_a_link(viewer: Client) -> None:
    service("alpha")
    factories.pattern_with_events("alpha", "quiet timeout", 1)
    busy = factories.pattern_with_events("alpha", "connection reset by peer", 3)
    html = viewer.get(FLEET).content.decode()
    assert f'href="/admin/recovery/errorpattern/{busy.pk}/change/"' in html
    assert "connection reset by peer" in html and "&times;3" in html
    assert "quiet timeout" not in html


def test_it_counts_open_escalations_by_level_in_the_summary(viewer: Client) -> None:
    service("alpha")
    raise_one("k1", level="critical", service="alpha")
    raise_one("k2", level="warning", service="alpha")
    raise_one("k3", level="warning", service="alpha")
    html = viewer.get(FLEET).content.decode()
    assert ">1 critical</span>" in html and ">2 warning</span>" in html
    assert ">2 warning</a>" in html


def _fleet_of(count: int, start: int) -> None:
    """`count` services, each with an open escalation, a health check, a pattern of the last hour and traffic
    (in bulk: copies of one of each, so that the test stays fast)."""
    names = [f"svc-{i:03d}" for i in range(start, start + count)]
    Service.objects.bulk_create(Service(name=name) for name in names)
    first = raise_one(f"k-{names[0]}", level="warning", service=names[0])
    copies = []
    for name in names[1:]:
        first.pk, first.id = None, None
        first.dedup_key, first.service = f"k-{name}", name
        copies.append(copy.copy(first))
    Escalation.objects.bulk_create(copies)
    check = health_check(f"check-{names[0]}", service=names[0], state="healthy")
    for name in names[1:]:
        check.pk, check.id, check.name, check.service = None, None, f"check-{name}", name
        check.save()
    for name in names:
        factories.pattern_with_events(name, f"timeout {name}", 1)
    traffic.count([(name, i % 2 == 0) for i, name in enumerate(names)])


def _queries(client: Client) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(FLEET).status_code == 200
    return len(captured)


def test_it_costs_the_same_queries_for_5_services_as_for_50(operator: Client) -> None:
    _fleet_of(5, 0)
    breaker_services.set_override(
        name="svc-000",
        mode="forced_closed",
        reason="pinned",
        expires_at=None,
        actor=Actor(user=user(operator)),
    )
    operator.get(
        FLEET
    )  # the breaker states of new services are rebuilt on the first look: warm like production
    small = _queries(operator)
    _fleet_of(45, 5)
    operator.get(FLEET)
    large = _queries(operator)
    assert large == small, (small, large)
    assert small <= 15, small


def test_it_costs_the_same_queries_when_every_breaker_state_must_be_rebuilt(operator: Client) -> None:
    _fleet_of(5, 0)
    small = _queries(operator)
    _fleet_of(45, 5)
    run_redis.flush()  # every breaker's state lost (a Redis restart): all 50 rebuilt from their history at once
    large = _queries(operator)
    assert large == small


def test_it_shows_unknown_breakers_when_the_store_is_down(
    viewer: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    from recovery.breakers import store as breaker_store

    service("alpha")

    class Down:
        def peek_many(self, services: Any, cfgs: Any) -> Any:
            raise redis.ConnectionError("down")

    monkeypatch.setattr(breaker_store, "_store", Down())
    html = viewer.get(FLEET).content.decode()
    assert rows(html) == [("alpha", "unknown")]


def test_it_lets_an_operator_see_the_page_too(operator: Client) -> None:
    assert operator.get(FLEET).status_code == 200


def test_it_refuses_a_user_without_a_role() -> None:
    from tests.support.admin_helpers import login

    assert login(factories.UserFactory(is_staff=False)).get(FLEET).status_code == 403

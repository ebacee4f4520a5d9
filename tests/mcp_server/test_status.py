"""get_error_status, called as a plain function with a verified caller: each part of the answer against state
made through the services and the REST API, the REST API's GET /status for the same counts, and the fleet's
answer in the same number of queries whatever the number of services."""

from __future__ import annotations

import inspect
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from pydantic import TypeAdapter, ValidationError

from core.api.errors import Forbidden, InvalidInput, NotFound
from core.audit.services import Actor
from healing.escalations.models import Escalation
from mcp_server import callers
from mcp_server.tools import status
from mcp_server.tools.status import get_error_status
from recovery.breakers import services as breaker_services
from recovery.breakers.models import BreakerTransition, Service
from recovery.degradation import services as degradation_services
from recovery.errors.models import ErrorEvent, ErrorPattern
from tests.support import factories
from tests.support.escalations import raise_one

pytestmark = pytest.mark.django_db
FAIL_503 = {"success": False, "error": {"status_code": 503}}


def small(name: str, criticality: str = "non_critical") -> Service:
    return Service.objects.create(
        name=name, criticality=criticality, minimum_calls=4, window_size=10, consecutive_failures=0
    )


def trip(agent_client: Any, name: str) -> None:
    response = agent_client.post("/api/v1/outcomes", [{**FAIL_503, "service": name}] * 4, format="json")
    assert response.status_code == 200, response.content[:300]


def force(name: str, mode: str = "forced_open", reason: str = "maintenance", **kw: Any) -> None:
    user = kw.pop("user", None) or factories.operator()
    breaker_services.set_override(
        name=name, mode=mode, reason=reason, expires_at=kw.get("until"), actor=Actor(user=user)
    )


def errors(
    service: str, n: int, *, error_class: str = "transient", severity: str = "medium", **kw: Any
) -> ErrorPattern:
    """A pattern with n events, `minutes_ago` old (0: now)."""
    at = timezone.now() - timedelta(minutes=kw.get("minutes_ago", 0))
    pattern = ErrorPattern.objects.create(
        fingerprint=uuid.uuid4().hex,
        service=service,
        error_class=error_class,
        severity=severity,
        kind="connection_timeout",
        message_template=kw.get("message", f"{service} failed"),
        first_seen_at=at,
        last_seen_at=at,
        total_count=kw.get("total", n),
    )
    ErrorEvent.objects.bulk_create(
        ErrorEvent(
            pattern=pattern, occurred_at=at, service=service, error_class=error_class, severity=severity
        )
        for _ in range(n)
    )
    return pattern


# --- who may call it -------------------------------------------------------------------------------------------


def test_it_answers_an_agents_key(agent_caller: callers.Caller) -> None:
    answer = get_error_status(agent_caller)
    assert (answer.scope, answer.breakers.listed, answer.errors.total) == ("fleet", [], 0)


def test_it_answers_a_viewers_key(viewer_caller: callers.Caller) -> None:
    assert get_error_status(viewer_caller).scope == "fleet"


def test_it_refuses_the_key_of_a_user_without_a_role() -> None:
    caller = callers.authenticate(factories.user_key(factories.UserFactory(is_staff=False)))
    with pytest.raises(Forbidden, match="get_error_status"):
        get_error_status(caller)


# --- the service named -----------------------------------------------------------------------------------------


def test_it_answers_not_found_naming_service_for_an_unknown_service(agent_caller: callers.Caller) -> None:
    with pytest.raises(NotFound) as raised:
        get_error_status(agent_caller, service="nobody")
    assert raised.value.field == "service"


def test_it_refuses_a_service_that_is_no_slug_naming_service(agent_caller: callers.Caller) -> None:
    with pytest.raises(InvalidInput) as raised:
        get_error_status(agent_caller, service="Not A Slug")
    assert raised.value.field == "service"


def test_its_window_is_bounded_in_the_schema() -> None:
    annotation: Any = (
        inspect.signature(get_error_status, eval_str=True).parameters["since_minutes"].annotation
    )
    window: TypeAdapter[int] = TypeAdapter(annotation)
    assert window.validate_python(1) == 1 and window.validate_python(1440) == 1440
    for bad in (0, 1441):
        with pytest.raises(ValidationError):
            window.validate_python(bad)


def test_it_counts_over_the_window_it_was_given(agent_caller: callers.Caller) -> None:
    errors("a", 2, minutes_ago=10)
    errors("a", 3, minutes_ago=0)

    answer = get_error_status(agent_caller, since_minutes=5)

    assert answer.errors.total == 3
    assert answer.since == pytest.approx(answer.now - timedelta(minutes=5), abs=timedelta(seconds=1))


# --- breakers --------------------------------------------------------------------------------------------------


def test_it_lists_the_fleets_breakers_not_closed_worst_first(
    agent_client: Any, agent_caller: callers.Caller
) -> None:
    small("a-quiet")
    small("b-open")
    small("c-pinned")
    small("d-essential-open", criticality="essential")
    trip(agent_client, "b-open")
    trip(agent_client, "d-essential-open")
    force("c-pinned", mode="forced_closed")

    listed = get_error_status(agent_caller).breakers.listed

    assert [(b.service, b.state) for b in listed] == [
        ("d-essential-open", "open"),
        ("b-open", "open"),
        ("c-pinned", "forced_closed"),
    ]


def test_it_says_why_an_open_breaker_is_open_and_until_when(
    agent_client: Any, agent_caller: callers.Caller
) -> None:
    small("svc")
    trip(agent_client, "svc")
    last = BreakerTransition.objects.filter(service__name="svc").latest("created_at")

    (breaker,) = get_error_status(agent_caller).breakers.listed

    assert (breaker.state, breaker.automatic_state, breaker.override) == ("open", "open", None)
    assert (breaker.why, breaker.since) == (last.reason, last.created_at)
    assert breaker.until is not None and breaker.until > timezone.now()


def test_it_says_who_forced_a_breaker_why_and_until_when(agent_caller: callers.Caller) -> None:
    small("svc")
    until = timezone.now() + timedelta(hours=2)
    force("svc", reason="vendor maintenance", user=factories.operator(username="alice"), until=until)

    (breaker,) = get_error_status(agent_caller).breakers.listed

    assert (breaker.state, breaker.automatic_state) == ("forced_open", "closed")
    assert (breaker.why, breaker.until) == ("vendor maintenance", until)
    assert breaker.override is not None
    assert breaker.override.model_dump() == {
        "mode": "forced_open",
        "reason": "vendor maintenance",
        "until": until,
        "set_by": "user alice",
    }


def test_it_counts_every_breaker_of_the_fleet_by_state(
    agent_client: Any, agent_caller: callers.Caller
) -> None:
    for name in ("a", "b", "c", "d"):
        small(name)
    trip(agent_client, "a")
    force("b")

    assert get_error_status(agent_caller).breakers.by_state == {"open": 1, "forced_open": 1, "closed": 2}


def test_it_lists_at_most_so_many_breakers_and_counts_the_rest(
    agent_caller: callers.Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(status, "MAX_LISTED", 2)
    for name in ("a", "b", "c"):
        small(name)
        force(name)

    breakers = get_error_status(agent_caller).breakers

    assert ([b.service for b in breakers.listed], breakers.more) == (["a", "b"], 1)


def test_it_answers_one_services_breaker_even_closed(agent_client: Any, agent_caller: callers.Caller) -> None:
    small("svc")
    small("other")
    trip(agent_client, "other")

    breakers = get_error_status(agent_caller, service="svc").breakers

    assert (breakers.by_state, breakers.more) == ({"closed": 1}, 0)
    assert [(b.service, b.state, b.why, b.since, b.until) for b in breakers.listed] == [
        ("svc", "closed", None, None, None)
    ]


def test_one_services_breaker_says_what_the_rest_api_says(
    agent_client: Any, agent_caller: callers.Caller
) -> None:
    small("svc")
    trip(agent_client, "svc")
    rest = agent_client.get("/api/v1/breakers/svc").json()

    (breaker,) = get_error_status(agent_caller, service="svc").breakers.listed

    assert (breaker.state, breaker.automatic_state, breaker.why) == (
        rest["state"],
        rest["automatic_state"],
        rest["why"]["reason"],
    )
    assert breaker.until == parse_datetime(rest["open_until"])


# --- errors and patterns ---------------------------------------------------------------------------------------


def test_it_counts_the_fleets_errors_by_class_and_severity(agent_caller: callers.Caller) -> None:
    errors("a", 3, error_class="transient", severity="medium")
    errors("b", 2, error_class="transient", severity="high")
    errors("b", 1, error_class="rate_limit", severity="medium")
    errors("a", 9, minutes_ago=90)  # before the window

    counted = get_error_status(agent_caller).errors

    assert counted.total == 6
    assert counted.by_class == {"transient": 5, "rate_limit": 1}
    assert counted.by_severity == {"medium": 4, "high": 2}
    assert [(r.error_class, r.severity, r.count) for r in counted.by_class_and_severity] == [
        ("transient", "medium", 3),
        ("transient", "high", 2),
        ("rate_limit", "medium", 1),
    ]


def test_it_counts_only_the_services_errors_for_a_service(agent_caller: callers.Caller) -> None:
    small("a")
    errors("a", 3)
    errors("b", 2)

    counted = get_error_status(agent_caller, service="a").errors

    assert (counted.total, counted.by_class) == (3, {"transient": 3})


def test_it_lists_the_busiest_patterns_of_the_window(agent_caller: callers.Caller) -> None:
    quiet = errors("a", 1, message="quiet")
    busy = errors("b", 4, message="busy", total=40)
    errors("a", 9, message="busy long ago", minutes_ago=120)

    top = get_error_status(agent_caller).top_patterns

    assert [(p.id, p.count_in_window, p.total_count) for p in top] == [(busy.pk, 4, 40), (quiet.pk, 1, 1)]
    assert (top[0].service, top[0].message_template, top[0].last_seen_at) == ("b", "busy", busy.last_seen_at)


def test_it_lists_only_the_services_patterns_for_a_service(agent_caller: callers.Caller) -> None:
    small("a")
    mine = errors("a", 1)
    errors("b", 5)

    assert [p.id for p in get_error_status(agent_caller, service="a").top_patterns] == [mine.pk]


def test_it_agrees_with_the_rest_status_on_errors_and_breakers(
    agent_client: Any, agent_caller: callers.Caller
) -> None:
    small("a")
    small("b")
    trip(agent_client, "a")
    for body in (
        {"service": "a", "type": "TimeoutError", "message": "timed out"},
        {"service": "b", "type": "RateLimitError", "message": "slow down", "status_code": 429},
        {"service": "b", "type": "RateLimitError", "message": "slow down", "status_code": 429},
    ):
        assert agent_client.post("/api/v1/errors", body, format="json").status_code == 201
    rest = agent_client.get("/api/v1/status").json()

    answer = get_error_status(agent_caller, since_minutes=60)

    assert answer.errors.by_class == rest["errors_last_60m"]
    assert answer.breakers.by_state == rest["breakers"]


# --- escalations and degradation -------------------------------------------------------------------------------


def test_it_counts_the_open_escalations_and_lists_the_newest(agent_caller: callers.Caller) -> None:
    raise_one("k1", level="critical", service="a")
    newest = raise_one("k2", level="warning", service="b")
    resolved = raise_one("k3", level="emergency", service="a")
    Escalation.objects.filter(pk=resolved.pk).update(state="resolved")

    escalations = get_error_status(agent_caller).escalations

    assert escalations.open == 2
    assert escalations.by_level == {"info": 0, "warning": 1, "critical": 1, "emergency": 0}
    first = escalations.newest[0]
    assert (first.id, first.level, first.state, first.service, first.trigger, first.occurrences) == (
        newest.pk,
        "warning",
        "open",
        "b",
        "agent",
        1,
    )
    assert (first.title, first.opened_at) == (newest.title, newest.first_seen_at)
    assert len(escalations.newest) == 2


def test_it_counts_only_the_services_escalations_for_a_service(agent_caller: callers.Caller) -> None:
    small("a")
    mine = raise_one("k1", level="critical", service="a")
    raise_one("k2", level="warning", service="b")

    escalations = get_error_status(agent_caller, service="a").escalations

    assert (escalations.open, escalations.by_level["critical"], [e.id for e in escalations.newest]) == (
        1,
        1,
        [mine.pk],
    )


def test_it_shows_the_fleets_degradation_level_in_force(agent_caller: callers.Caller) -> None:
    until = timezone.now() + timedelta(hours=1)
    degradation_services.force(
        scope="*", level="degraded", reason="drill", expires_at=until, actor=Actor(user=factories.operator())
    )

    level = get_error_status(agent_caller).degradation

    assert (level.scope, level.level, level.source, level.reason, level.until, level.forced) == (
        "*",
        "degraded",
        "operator",
        "drill",
        until,
        True,
    )
    assert level.since is not None


def test_it_shows_the_worse_of_the_fleets_and_the_services_own_level(agent_caller: callers.Caller) -> None:
    small("a")
    actor = Actor(user=factories.operator())
    degradation_services.force(scope="*", level="degraded", reason="drill", expires_at=None, actor=actor)
    degradation_services.force(scope="a", level="emergency", reason="fire", expires_at=None, actor=actor)

    level = get_error_status(agent_caller, service="a").degradation

    assert (level.scope, level.level, level.reason, level.until) == ("a", "emergency", "fire", None)


def test_the_fleet_is_normal_when_nothing_degraded_it(agent_caller: callers.Caller) -> None:
    level = get_error_status(agent_caller).degradation
    assert (level.scope, level.level, level.source, level.forced) == ("*", "normal", "automatic", False)


# --- cost --------------------------------------------------------------------------------------------------------


def test_the_fleets_answer_costs_the_same_queries_for_3_and_30_services(
    agent_client: Any, agent_caller: callers.Caller
) -> None:
    def fleet_with(n: int) -> int:
        for i in range(Service.objects.count(), n):
            small(f"svc-{i:02}")
            errors(f"svc-{i:02}", 1)
            raise_one(f"k{i}", service=f"svc-{i:02}")
        trip(agent_client, f"svc-{n - 1:02}")
        force(f"svc-{n - 2:02}")
        get_error_status(agent_caller)  # warm the per-process caches (breaker settings)
        with CaptureQueriesContext(connection) as captured:
            answer = get_error_status(agent_caller)
        assert sum(answer.breakers.by_state.values()) == n
        return len(captured)

    three = fleet_with(3)
    thirty = fleet_with(30)

    assert thirty <= three

"""The MCP resources as plain functions of a caller: rebound://services (one row per service, its queries not
growing with the fleet), rebound://services/{name} (the REST API's answers for that service), and
rebound://escalations/open (not resolved, most urgent first, an agent seeing its own). The SDK's wiring of
them (the key checked, the errors it answers) is in test_server.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from mcp.shared.exceptions import MCPError

from core.access import services as access
from core.audit.services import Actor
from mcp_server import callers, resources
from recovery.breakers import services as breaker_services
from recovery.breakers.models import Service
from recovery.decisions.models import FallbackOption
from recovery.degradation import services as degradation_services
from tests.support import factories
from tests.support.escalations import raise_one

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def in_the_test_transaction(monkeypatch: pytest.MonkeyPatch) -> None:
    """read_as runs on the SDK's worker thread and closes the connection it finds out of autocommit; here it runs
    in the test's thread, inside the test's transaction, which must stay open (test_server.py runs it for real)."""
    monkeypatch.setattr(resources, "close_old_connections", lambda: None)


@pytest.fixture
def process_key() -> Iterator[Callable[[str], None]]:
    """Set the key a read without an HTTP request acts with (the stdio process's key); unset after the test."""
    yield callers.use_process_key
    callers.use_process_key(None)


def service(name: str, **fields: Any) -> Service:
    return Service.objects.create(name=name, **fields)


def operator_actor() -> Actor:
    return Actor(user=factories.operator())


def row(index: resources.ServicesOut, name: str) -> resources.ServiceRowOut:
    [found] = [r for r in index.services if r.name == name]
    return found


# --- rebound://services ---------------------------------------------------------------------------------------


def test_it_lists_every_service_by_name(agent_caller: callers.Caller) -> None:
    service("zulu")
    service("alpha", criticality="essential")
    index = resources.services_index(agent_caller)
    assert index.count == 2
    assert [(r.name, r.criticality, r.state) for r in index.services] == [
        ("alpha", "essential", "closed"),
        ("zulu", "non_critical", "closed"),
    ]
    assert row(index, "alpha").degradation.level == "normal"
    assert row(index, "alpha").open_escalations == 0
    assert row(index, "alpha").top_pattern is None


def test_it_shows_a_forced_breaker_and_when_it_changed(agent_caller: callers.Caller) -> None:
    service("alpha")
    breaker_services.set_override(
        name="alpha", mode="forced_open", reason="provider outage", expires_at=None, actor=operator_actor()
    )
    alpha = row(resources.services_index(agent_caller), "alpha")
    assert alpha.state == "forced_open"
    assert alpha.state_since is not None
    assert timezone.now() - alpha.state_since < timedelta(seconds=30)


def test_it_shows_the_level_in_force_the_worse_of_the_fleets_and_its_own(
    agent_caller: callers.Caller,
) -> None:
    service("alpha")
    service("beta")
    degradation_services.force(
        scope="beta", level="minimal", reason="quota", expires_at=None, actor=operator_actor()
    )
    degradation_services.force(
        scope="*", level="degraded", reason="incident", expires_at=None, actor=operator_actor()
    )
    index = resources.services_index(agent_caller)
    assert (row(index, "alpha").degradation.level, row(index, "alpha").degradation.scope) == ("degraded", "*")
    beta = row(index, "beta").degradation
    assert (beta.level, beta.scope, beta.source, beta.reason) == ("minimal", "beta", "operator", "quota")


def test_it_counts_open_escalations_by_level(agent_caller: callers.Caller) -> None:
    service("alpha")
    raise_one("k1", level="critical", service="alpha")
    raise_one("k2", level="warning", service="alpha")
    raise_one("k3", level="warning", service="alpha")
    alpha = row(resources.services_index(agent_caller), "alpha")
    assert alpha.open_escalations == 3
    assert alpha.escalations_by_level == {"critical": 1, "warning": 2}


def test_it_names_the_busiest_pattern_of_the_last_hour(agent_caller: callers.Caller) -> None:
    service("alpha")
    factories.pattern_with_events("alpha", "timeout after <n> ms", 2)
    busiest = factories.pattern_with_events("alpha", "connection reset", 5)
    top = row(resources.services_index(agent_caller), "alpha").top_pattern
    assert top is not None
    assert (top.id, top.message_template, top.count_last_hour) == (busiest.pk, "connection reset", 5)
    assert (top.error_class, top.severity) == ("transient", "medium")


def test_it_reads_the_fleet_in_the_same_queries_for_3_services_as_for_30(
    agent_caller: callers.Caller,
) -> None:
    def queries(n: int) -> int:
        for i in range(n):
            name = f"svc-{n}-{i}"
            service(name)
            raise_one(f"k-{name}", service=name)
            factories.pattern_with_events(name, f"boom {name}", 1)
        with CaptureQueriesContext(connection) as captured:
            index = resources.services_index(agent_caller)
        assert index.count >= n
        return len(captured)

    assert queries(3) == queries(30)


# --- rebound://services/{name} ---------------------------------------------------------------------------------


def test_it_answers_one_service_as_the_rest_api_does(agent_client: Any) -> None:
    caller = callers.authenticate(agent_client._credentials["HTTP_AUTHORIZATION"].split()[1])
    alpha = service("alpha", criticality="essential")
    FallbackOption.objects.create(service=alpha, position=1, kind="static", static_value={"answer": "later"})
    breaker_services.set_override(
        name="alpha", mode="forced_open", reason="provider outage", expires_at=None, actor=operator_actor()
    )
    degradation_services.force(
        scope="alpha", level="degraded", reason="slow", expires_at=None, actor=operator_actor()
    )

    detail = resources.service_detail(caller, "alpha")
    answer = detail.model_dump(mode="json")

    assert answer["service"] == agent_client.get("/api/v1/services/alpha").json()
    assert answer["breaker"] == agent_client.get("/api/v1/breakers/alpha").json()
    assert answer["degradation"] == agent_client.get("/api/v1/degradation?service=alpha").json()
    assert answer["fallbacks"] == agent_client.get("/api/v1/fallbacks/alpha").json()
    assert detail.breaker.state == "forced_open"
    assert detail.degradation.level == "degraded"
    assert [o.kind for o in detail.fallbacks.chain] == ["static"]


def test_it_refuses_an_unknown_service_naming_it(process_key: Callable[[str], None]) -> None:
    process_key(factories.agent_key()[1])
    with pytest.raises(ResourceNotFoundError, match="service: Unknown service 'nope'"):
        resources.read_as(None, "test", lambda caller: resources.service_detail(caller, "nope"))


def test_it_refuses_a_name_that_is_no_slug_as_invalid_params(process_key: Callable[[str], None]) -> None:
    process_key(factories.agent_key()[1])
    with pytest.raises(MCPError) as raised:
        resources.read_as(None, "test", lambda caller: resources.service_detail(caller, "Not A Slug"))
    assert raised.value.code == -32602
    assert "service: a service is a lower-case slug" in raised.value.message


# --- rebound://escalations/open --------------------------------------------------------------------------------


def test_it_lists_the_open_escalations_most_urgent_first(viewer_caller: callers.Caller) -> None:
    warning = raise_one("k1", level="warning", service="alpha")
    emergency = raise_one("k2", level="emergency", service="beta")
    critical = raise_one("k3", level="critical")
    resolved = raise_one("k4", level="emergency")
    resolved.state = "resolved"
    resolved.save(update_fields=["state"])

    answer = resources.open_escalations(viewer_caller)

    assert answer.count == 3
    assert [e.id for e in answer.escalations] == [emergency.pk, critical.pk, warning.pk]
    assert answer.escalations[0].service == "beta"


def test_it_shows_an_agent_only_the_escalations_it_raised(agent_caller: callers.Caller) -> None:
    assert agent_caller.agent is not None
    own = raise_one("mine", actor=Actor(agent=agent_caller.agent))
    raise_one("theirs")
    answer = resources.open_escalations(agent_caller)
    assert (answer.count, [e.id for e in answer.escalations]) == (1, [own.pk])


def test_it_counts_past_the_hundred_it_lists(viewer_caller: callers.Caller, monkeypatch: Any) -> None:
    monkeypatch.setattr(resources, "MAX_ESCALATIONS", 2)
    for i in range(3):
        raise_one(f"k{i}")
    answer = resources.open_escalations(viewer_caller)
    assert (answer.count, len(answer.escalations)) == (3, 2)


# --- who may read --------------------------------------------------------------------------------------------


def test_it_reads_as_the_process_key(process_key: Callable[[str], None]) -> None:
    service("alpha")
    process_key(factories.agent_key()[1])
    index = resources.read_as(None, "rebound://services", resources.services_index)
    assert [r.name for r in index.services] == ["alpha"]


def test_it_refuses_a_user_key_without_a_role(process_key: Callable[[str], None]) -> None:
    process_key(factories.user_key(factories.UserFactory(is_staff=False)))
    with pytest.raises(MCPError) as raised:
        resources.read_as(None, "rebound://services", resources.services_index)
    assert raised.value.code == -32600
    assert "rebound://services needs an agent key" in raised.value.message


def test_it_refuses_a_revoked_key(process_key: Callable[[str], None]) -> None:
    _, key = factories.agent_key()
    process_key(key)
    access.revoke_key(api_key=callers.authenticate(key).api_key, actor=Actor(), reason="leaked")
    with pytest.raises(MCPError, match="Unknown or revoked API key") as raised:
        resources.read_as(None, "rebound://services", resources.services_index)
    assert raised.value.code == -32600


def test_it_refuses_a_read_without_a_key() -> None:
    with pytest.raises(MCPError, match="No API key"):
        resources.read_as(None, "rebound://services", resources.services_index)

"""force_degradation, called as the plain tool function with a verified caller: an operator's key forces the level
as POST /api/v1/degradation does (the same rows, audited with the key's user through MCP), an agent's key is
refused before anything is written, and the errors name the tool's arguments (`service`, not the API's
`scope`)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from core.api.errors import Forbidden, InvalidInput, NotFound
from core.audit.models import AuditEvent
from mcp_server import callers
from mcp_server.tools.degradation import force_degradation
from recovery.breakers.models import Service
from recovery.degradation.models import DegradationEvent, DegradationState
from tests.support.mcp_calls import through_sdk

pytestmark = [pytest.mark.django_db, pytest.mark.redis]

REASON = "provider incident INC-42"


def rows() -> tuple[int, int, int]:
    return DegradationState.objects.count(), DegradationEvent.objects.count(), AuditEvent.objects.count()


def test_it_forces_the_fleets_level_for_an_operator(operator_caller: callers.Caller) -> None:
    out = force_degradation(operator_caller, service="*", level="degraded", reason=REASON)

    state = DegradationState.objects.get(scope="*")
    assert (state.forced_level, state.forced_reason, state.forced_by) == (
        "degraded",
        REASON,
        operator_caller.user,
    )
    assert (out.scope, out.level, out.source) == ("*", "degraded", "operator")
    assert out.forced is not None and out.forced.by == operator_caller.label


def test_it_audits_the_force_with_the_keys_user_through_mcp(operator_caller: callers.Caller) -> None:
    force_degradation(operator_caller, service="*", level="degraded", reason=REASON)

    event = AuditEvent.objects.get(action="degradation.force")
    assert (event.source, event.actor_user, event.actor_agent, event.reason) == (
        "mcp",
        operator_caller.user,
        None,
        REASON,
    )


def test_it_shows_the_rest_api_the_level_it_forced(
    operator_caller: callers.Caller, agent_client: APIClient
) -> None:
    out = force_degradation(operator_caller, service="*", level="minimal", reason=REASON)

    fleet = agent_client.get("/api/v1/degradation").json()
    assert (fleet["level"], fleet["source"], fleet["reason"]) == (out.level, out.source, out.reason)
    assert fleet["level"] == "minimal"


def test_it_forces_a_services_level_until_a_time(operator_caller: callers.Caller) -> None:
    Service.objects.create(name="web-search")
    until = timezone.now() + timedelta(hours=2)

    out = force_degradation(
        operator_caller, service="web-search", level="emergency", reason=REASON, expires_at=until
    )

    state = DegradationState.objects.get(scope="web-search")
    assert (state.forced_level, state.forced_until) == ("emergency", until)
    assert (out.scope, out.until) == ("web-search", until)


def test_it_refuses_an_agent_and_writes_nothing(agent_caller: callers.Caller) -> None:
    before = rows()

    with pytest.raises(Forbidden) as refused:
        force_degradation(agent_caller, service="*", level="emergency", reason=REASON)

    assert refused.value.message == "force_degradation needs an operator's key; an agent key may not do it."
    assert rows() == before


def test_it_refuses_a_viewer(viewer_caller: callers.Caller) -> None:
    before = rows()
    with pytest.raises(Forbidden):
        force_degradation(viewer_caller, service="*", level="emergency", reason=REASON)
    assert rows() == before


def test_it_names_level_for_a_bad_level(operator_caller: callers.Caller) -> None:
    before = rows()
    with pytest.raises(InvalidInput) as refused:
        force_degradation(operator_caller, service="*", level="panic", reason=REASON)
    assert [e["field"] for e in refused.value.errors] == ["level"]
    assert rows() == before


def test_it_names_service_for_an_unknown_service(operator_caller: callers.Caller) -> None:
    before = rows()
    with pytest.raises(NotFound) as refused:
        force_degradation(operator_caller, service="nowhere", level="degraded", reason=REASON)
    assert refused.value.field == "service"
    assert rows() == before


def test_it_names_service_for_a_name_that_is_no_scope(operator_caller: callers.Caller) -> None:
    with pytest.raises(InvalidInput) as refused:
        force_degradation(operator_caller, service="Not A Slug", level="degraded", reason=REASON)
    assert [e["field"] for e in refused.value.errors] == ["service"]
    assert refused.value.message.startswith("Invalid input: service: ")


def test_it_names_expires_at_for_a_time_in_the_past(operator_caller: callers.Caller) -> None:
    before = rows()
    past = timezone.now() - timedelta(minutes=1)
    with pytest.raises(InvalidInput) as refused:
        force_degradation(operator_caller, service="*", level="degraded", reason=REASON, expires_at=past)
    assert refused.value.field == "expires_at"
    assert rows() == before


def test_it_names_ttl_s_when_given_with_expires_at(operator_caller: callers.Caller) -> None:
    until = timezone.now() + timedelta(hours=1)
    with pytest.raises(InvalidInput) as refused:
        force_degradation(
            operator_caller, service="*", level="degraded", reason=REASON, expires_at=until, ttl_s=60.0
        )
    assert refused.value.field == "ttl_s"


def test_it_takes_json_arguments_as_the_sdk_validates_them(operator_caller: callers.Caller) -> None:
    until = (timezone.now() + timedelta(hours=1)).replace(microsecond=0)
    arguments = {"service": "*", "level": "degraded", "reason": REASON, "expires_at": until.isoformat()}
    content = through_sdk(operator_caller, "force_degradation", arguments)

    assert (content["level"], content["source"]) == ("degraded", "operator")
    assert DegradationState.objects.get(scope="*").forced_until == until

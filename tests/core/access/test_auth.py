from __future__ import annotations

import time
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from core.access import keys
from core.access import services as access
from core.access.models import Agent, ApiKey
from core.audit.models import AuditEvent
from core.audit.services import Actor
from tests.support import factories
from tests.support.factories import rebound_settings

pytestmark = pytest.mark.django_db


def _client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def test_it_stores_only_a_prefix_and_a_hash() -> None:
    agent, plaintext = factories.agent_key()
    api_key = ApiKey.objects.get(agent=agent)
    assert plaintext.startswith(f"rb_{api_key.prefix}_")
    assert api_key.key_hash == keys.hash_key(plaintext)
    assert plaintext not in {api_key.prefix, api_key.key_hash, api_key.name}


def test_it_marks_last_use_of_the_key_and_the_agent() -> None:
    agent, plaintext = factories.agent_key()
    assert _client(plaintext).get("/api/v1/me").status_code == 200
    api_key = ApiKey.objects.get(agent=agent)
    agent.refresh_from_db()
    assert api_key.last_used_at is not None
    assert agent.last_seen_at is not None


@pytest.mark.parametrize(
    "header", ["Bearer rb_deadbeef_nope", "Bearer not-a-key", "Bearer ", "Token rb_x_y", "Basic Zm9vOmJhcg=="]
)
def test_it_answers_401_for_bad_or_missing_keys(header: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    assert client.get("/api/v1/patterns").status_code in (401, 403)
    assert APIClient().get("/api/v1/patterns").status_code == 401
    if header.startswith("Bearer"):
        assert client.get("/api/v1/patterns").status_code == 401


def test_it_answers_401_at_once_in_the_revoking_process() -> None:
    agent, plaintext = factories.agent_key()
    client = _client(plaintext)
    assert client.get("/api/v1/me").status_code == 200
    api_key = ApiKey.objects.get(agent=agent)
    assert access.revoke_key(api_key=api_key, actor=Actor(source="cli"), reason="leaked in a log")
    assert client.get("/api/v1/me").status_code == 401
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    event = AuditEvent.objects.get(action="apikey.revoke")
    assert (event.reason, event.target_id, event.before) == (
        "leaked in a log",
        str(api_key.pk),
        {"revoked_at": None},
    )


@override_settings(REBOUND=rebound_settings(API_KEY_CACHE_SECONDS=0.3))
def test_it_stops_a_key_revoked_elsewhere_within_the_cache_bound() -> None:
    agent, plaintext = factories.agent_key()
    client = _client(plaintext)
    assert client.get("/api/v1/me").status_code == 200
    # Another process revokes it: this process's cache does not hear of it.
    ApiKey.objects.filter(agent=agent).update(revoked_at=timezone.now())
    assert client.get("/api/v1/me").status_code == 200
    time.sleep(0.35)
    assert client.get("/api/v1/me").status_code == 401


def test_it_refuses_keys_of_deactivated_agents() -> None:
    agent, plaintext = factories.agent_key()
    access.set_agent_active(agent=agent, active=False, actor=Actor(source="cli"), reason="retired")
    assert _client(plaintext).get("/api/v1/me").status_code == 401
    agent.refresh_from_db()
    assert agent.is_active is False
    assert AuditEvent.objects.get(action="agent.deactivate").after == {"is_active": False}


def test_it_never_lets_an_agent_key_act_as_an_operator(agent_client: Any) -> None:
    response = agent_client.post("/api/v1/rules", {"name": "x", "reason": "y"}, format="json")
    assert response.status_code == 403
    assert agent_client.get("/api/v1/audit-events").status_code == 403


def test_it_lets_a_user_key_act_with_that_users_permissions(operator_client: Any, viewer_client: Any) -> None:
    assert operator_client.get("/api/v1/me").json()["operator"] is True
    assert viewer_client.get("/api/v1/me").json() == {
        "kind": "user",
        "name": viewer_client.user.username,
        "operator": False,
    }
    assert viewer_client.get("/api/v1/audit-events").status_code == 200
    rule = {
        "name": "r",
        "message_regex": "x",
        "error_class": "fatal",
        "severity": "fatal",
        "retryable": False,
        "counts_toward_breaker": True,
        "reason": "test",
    }
    assert viewer_client.post("/api/v1/rules", rule, format="json").status_code == 403
    assert operator_client.post("/api/v1/rules", rule, format="json").status_code == 201


def test_it_treats_a_user_without_a_role_as_unauthorised() -> None:
    user = factories.UserFactory(is_staff=False)
    assert _client(factories.user_key(user)).get("/api/v1/patterns").status_code == 403


def test_it_lets_superusers_do_everything() -> None:
    user = factories.UserFactory(is_superuser=True)
    assert _client(factories.user_key(user)).get("/api/v1/me").json()["operator"] is True


def test_it_accepts_an_operators_admin_session(operator_user: Any) -> None:
    client = APIClient()
    client.force_login(operator_user)
    assert client.get("/api/v1/me").json()["operator"] is True


def test_create_agent_prints_the_key_as_its_last_line() -> None:
    out = StringIO()
    call_command("create_agent", "planner", "--description", "plans", stdout=out)
    key = out.getvalue().strip().splitlines()[-1]
    agent = Agent.objects.get(name="planner")
    assert agent.description == "plans"
    assert _client(key).get("/api/v1/me").json() == {"kind": "agent", "name": "planner", "operator": False}
    assert list(AuditEvent.objects.values_list("action", "source").order_by("id")) == [
        ("agent.create", "cli"),
        ("apikey.issue", "cli"),
    ]


def test_create_agent_refuses_a_duplicate_but_issues_with_existing() -> None:
    call_command("create_agent", "planner", stdout=StringIO())
    with pytest.raises(Exception, match="exists already"):
        call_command("create_agent", "planner", stdout=StringIO())
    out = StringIO()
    call_command("create_agent", "planner", "--existing", stdout=out)
    assert ApiKey.objects.filter(agent__name="planner").count() == 2


def test_create_user_key_prints_a_key_acting_as_the_user(operator_user: Any) -> None:
    out = StringIO()
    call_command("create_user_key", operator_user.username, stdout=out)
    key = out.getvalue().strip().splitlines()[-1]
    assert _client(key).get("/api/v1/me").json()["operator"] is True
    assert AuditEvent.objects.get(action="apikey.issue").actor_user == operator_user


def test_seed_demo_creates_users_services_agents_and_errors() -> None:
    from recovery.breakers.models import Service
    from recovery.decisions.models import FallbackOption, Operation
    from recovery.errors.models import ErrorEvent

    call_command("seed_demo", "--errors", "12", stdout=StringIO())
    call_command("seed_demo", "--errors", "0", stdout=StringIO())  # idempotent for users, services and agents
    assert Service.objects.count() == 6
    assert Service.objects.get(name="openai").criticality == "essential"
    assert Agent.objects.count() == 3
    assert ErrorEvent.objects.count() == 12
    assert AuditEvent.objects.filter(action="service.create").count() == 6
    assert Operation.objects.get(service__name="stripe", name="invoices.create").idempotent is False
    chain = FallbackOption.objects.filter(service__name="openai").order_by("position")
    assert [(o.kind, o.target_service and o.target_service.name) for o in chain] == [
        ("service", "anthropic"),
        ("cache", None),
    ]
    assert FallbackOption.objects.count() == 5

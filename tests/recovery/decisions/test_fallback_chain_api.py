"""PUT /fallbacks/{service}: operators replace a service's fallback chain for one operation (in order, in one
transaction, audited, idempotent), every refusal naming its field; and the chaos drill's runner setting its
chains up through it (drill/runner.py configure_chain), with no database of its own."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.test import Client
from rest_framework.test import APIClient

from core.audit.models import AuditEvent
from core.audit.services import Actor
from drill import runner
from drill.scenario import Fallback, ServiceSpec
from recovery.breakers.models import Service
from recovery.decisions import fallbacks
from recovery.decisions.fallbacks import ChainOption
from recovery.decisions.models import FallbackOption
from tests.support import factories
from tests.support.openapi import conforms, document

pytestmark = [pytest.mark.django_db, pytest.mark.redis]
PATH = "/api/v1/fallbacks/{service}"
REASON = "the replica takes the load since INC-42"


@pytest.fixture
def svc() -> Service:
    Service.objects.create(name="replica")
    return Service.objects.create(name="svc")


def put(client: APIClient, body: dict[str, Any], service: str = "svc") -> Any:
    return client.put(f"/api/v1/fallbacks/{service}", body, format="json")


def chain_body(*options: dict[str, Any], operation: str = "", reason: str = REASON) -> dict[str, Any]:
    return {"operation": operation, "options": list(options), "reason": reason}


SERVICE = {"kind": "service", "target_service": "replica"}
STATIC = {"kind": "static", "static_value": {"items": [], "stale": True}}
CACHE = {"kind": "cache", "max_age_s": 600, "warning": "up to 10 minutes old"}


def rows(service: str = "svc", operation: str = "") -> list[tuple[int, str, str | None, Any, float | None]]:
    found = FallbackOption.objects.filter(service__name=service, operation=operation).order_by("position")
    return [
        (r.position, r.kind, r.target_service.name if r.target_service else None, r.static_value, r.max_age_s)
        for r in found
    ]


def audits() -> list[tuple[str, str]]:
    events = AuditEvent.objects.filter(action__startswith="fallback_option.").order_by("id")
    return [(e.action, e.reason) for e in events]


# --- replacing -----------------------------------------------------------------------------------------------


def test_it_replaces_the_chain_in_the_order_given(svc: Service, operator_client: APIClient) -> None:
    response = put(operator_client, chain_body(SERVICE, STATIC, CACHE))

    assert response.status_code == 200, response.json()
    assert rows() == [
        (1, "service", "replica", None, None),
        (2, "static", None, {"items": [], "stale": True}, None),
        (3, "cache", None, None, 600.0),
    ]


def test_it_answers_the_chain_as_get_answers_it(svc: Service, operator_client: APIClient) -> None:
    response = put(operator_client, chain_body(SERVICE, STATIC, operation="search"))

    assert response.status_code == 200
    assert response.json() == operator_client.get("/api/v1/fallbacks/svc", {"operation": "search"}).json()
    assert [(o["kind"], o["scope"], o["position"]) for o in response.json()["chain"]] == [
        ("service", "search", 1),
        ("static", "search", 2),
    ]
    conforms(response, "put", PATH)


def test_it_audits_each_option_written_with_the_reason(svc: Service, operator_client: APIClient) -> None:
    put(operator_client, chain_body(SERVICE, STATIC))

    assert audits() == [("fallback_option.create", REASON), ("fallback_option.create", REASON)]
    event = AuditEvent.objects.filter(action="fallback_option.create").first()
    assert event is not None and event.actor_user == operator_client.user  # type: ignore[attr-defined]


def test_it_changes_and_audits_nothing_for_an_identical_chain(
    svc: Service, operator_client: APIClient
) -> None:
    put(operator_client, chain_body(SERVICE, STATIC, CACHE))
    ids = list(FallbackOption.objects.order_by("position").values_list("id", flat=True))
    written = AuditEvent.objects.count()

    again = put(
        operator_client, chain_body(SERVICE, {**STATIC, "static_value": {"stale": True, "items": []}}, CACHE)
    )

    assert again.status_code == 200
    assert list(FallbackOption.objects.order_by("position").values_list("id", flat=True)) == ids
    assert AuditEvent.objects.count() == written


def test_it_updates_what_differs_in_place_and_deletes_what_is_past_the_end(
    svc: Service, operator_client: APIClient
) -> None:
    put(operator_client, chain_body(SERVICE, STATIC, CACHE))
    first, second, third = FallbackOption.objects.order_by("position")
    last = AuditEvent.objects.order_by("id").last()
    assert last is not None

    response = put(operator_client, chain_body(SERVICE, {"kind": "static", "static_value": 0}))

    assert response.status_code == 200
    assert rows() == [(1, "service", "replica", None, None), (2, "static", None, 0, None)]
    assert list(FallbackOption.objects.order_by("position").values_list("id", flat=True)) == [
        first.pk,
        second.pk,
    ]
    new = list(AuditEvent.objects.filter(id__gt=last.pk).order_by("id"))
    assert [(e.action, e.target_id) for e in new] == [
        ("fallback_option.delete", str(third.pk)),
        ("fallback_option.update", str(second.pk)),
    ]
    assert new[1].before is not None and new[1].before["static_value"] == {"items": [], "stale": True}
    assert new[1].after is not None and new[1].after["static_value"] == 0


def test_it_empties_a_chain_with_no_options(svc: Service, operator_client: APIClient) -> None:
    put(operator_client, chain_body(SERVICE, STATIC))

    response = put(operator_client, chain_body())

    assert response.status_code == 200
    assert rows() == [] and response.json()["chain"] == [] and response.json()["exhausted"] is True
    assert [a for a, _ in audits()].count("fallback_option.delete") == 2


def test_it_leaves_the_chains_of_other_operations_alone(svc: Service, operator_client: APIClient) -> None:
    put(operator_client, chain_body(STATIC, operation="search"))

    put(operator_client, chain_body(SERVICE, CACHE))

    assert rows(operation="search") == [(1, "static", None, {"items": [], "stale": True}, None)]
    assert rows() == [(1, "service", "replica", None, None), (2, "cache", None, None, 600.0)]


def test_it_allows_a_target_of_another_operation_of_the_same_service(
    svc: Service, operator_client: APIClient
) -> None:
    body = chain_body(
        {"kind": "service", "target_service": "svc", "target_operation": "lite"}, operation="full"
    )

    response = put(operator_client, body)

    assert response.status_code == 200, response.json()
    assert (
        response.json()["chain"][0]["service"] == "svc" and response.json()["chain"][0]["operation"] == "lite"
    )


def test_the_service_says_whether_anything_changed(svc: Service) -> None:
    options = [ChainOption(kind="service", target_service="replica"), ChainOption(kind="skip")]
    actor = Actor(source="cli")

    changed = [fallbacks.replace_chain(svc, "", options, actor=actor, reason=REASON) for _ in range(2)]

    assert changed == [True, False]


# --- refusals ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ([STATIC, {"kind": "service", "target_service": "nope"}], "options[1].target_service"),
        ([{"kind": "service"}], "options[0].target_service"),
        ([{"kind": "static"}], "options[0].static_value"),
        ([{"kind": "static", "static_value": None}], "options[0].static_value"),
        ([{"kind": "teleport"}], "options[0].kind"),
        ([{"kind": "service", "target_service": "svc"}], "options[0].target_service"),
        ([{"kind": "cache", "max_age_s": -1}], "options[0].max_age_s"),
        ([{"kind": "cache", "target_service": "replica"}], "options[0].target_service"),
        ([{"kind": "skip", "static_value": 1}], "options[0].static_value"),
        ([{"kind": "static", "static_value": 1, "max_age_s": 5}], "options[0].max_age_s"),
        ([{"kind": "service", "target_service": "Not A Slug"}], "options[0].target_service"),
        ([{"kind": "skip", "warning": "w" * 301}], "options[0].warning"),
        ([{"kind": "skip", "colour": "red"}], "options[0].colour"),
        ([STATIC] * 21, "options"),
    ],
)
def test_it_refuses_a_bad_option_naming_its_field_and_writes_nothing(
    svc: Service, operator_client: APIClient, options: list[dict[str, Any]], field: str
) -> None:
    response = put(operator_client, chain_body(*options))

    assert response.status_code == 400
    assert field in [e["field"] for e in response.json()["errors"]], response.json()
    assert rows() == [] and audits() == []
    conforms(response, "put", PATH)


@pytest.mark.parametrize("reason", ["", "   ", None])
def test_it_requires_a_reason(svc: Service, operator_client: APIClient, reason: str | None) -> None:
    body: dict[str, Any] = {"options": [STATIC]}
    if reason is not None:
        body["reason"] = reason

    response = put(operator_client, body)

    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["reason"]
    assert rows() == []


def test_the_service_requires_a_reason_too(svc: Service) -> None:
    with pytest.raises(fallbacks.InvalidInput) as refused:
        fallbacks.replace_chain(svc, "", [ChainOption(kind="skip")], actor=Actor(source="cli"), reason=" ")

    assert refused.value.field == "reason" and rows() == []


def test_it_answers_404_for_an_unknown_service(operator_client: APIClient) -> None:
    response = put(operator_client, chain_body(STATIC), service="nope")

    assert response.status_code == 404
    assert not Service.objects.filter(name="nope").exists()
    conforms(response, "put", PATH)


def test_it_refuses_agents_and_viewers(
    svc: Service, agent_client: APIClient, viewer_client: APIClient
) -> None:
    answers = [put(client, chain_body(STATIC)).status_code for client in (agent_client, viewer_client)]

    assert answers == [403, 403]
    assert rows() == []
    assert (
        agent_client.get("/api/v1/fallbacks/svc").status_code == 200
    )  # reading stays open to every principal


def test_the_schema_documents_the_put_with_its_errors_and_an_example() -> None:
    operation = document()["paths"][PATH]["put"]

    assert {"200", "400", "401", "403", "404", "413", "415"} <= set(operation["responses"])
    body = operation["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"].startswith("#/components/schemas/ChainIn")
    assert body["examples"]


# --- the chaos drill sets its chains up through it ---------------------------------------------------------------


def through(client: Client) -> httpx.MockTransport:
    """httpx requests answered by this process's Django (the test database), as a remote Rebound would."""

    def handle(request: httpx.Request) -> httpx.Response:
        answer = client.generic(
            request.method,
            request.url.raw_path.decode(),
            request.content,
            content_type=request.headers.get("content-type", "application/json"),
            headers={"Authorization": request.headers["authorization"]},
        )
        return httpx.Response(
            answer.status_code, content=answer.content, headers={"content-type": answer["Content-Type"]}
        )

    return httpx.MockTransport(handle)


@pytest.fixture
def drill_rebound(svc: Service) -> Any:
    key = factories.user_key(factories.operator())
    rebound = runner.Rebound(runner.Target(url="http://testserver", agent_key="unused", operator_key=None))
    rebound.operator = httpx.Client(
        base_url="http://testserver", headers={"Authorization": f"Bearer {key}"}, transport=through(Client())
    )
    yield rebound
    rebound.operator.close()
    rebound.agent.close()


def test_the_drill_writes_its_chain_once_through_the_api(drill_rebound: runner.Rebound) -> None:
    spec = ServiceSpec(
        name="svc",
        operation="call",
        fallbacks=(
            Fallback(kind="service", target="replica"),
            Fallback(kind="static", value=[1]),
            Fallback(kind="cache"),
        ),
    )
    said: list[str] = []
    notes: list[str] = []

    runner.configure_chain(drill_rebound, spec, notes, said.append)
    written = audits()
    runner.configure_chain(drill_rebound, spec, notes, said.append)

    assert rows(operation="call") == [
        (1, "service", "replica", None, None),
        (2, "static", None, [1], None),
        (3, "cache", None, None, 600.0),
    ]
    assert said == ["fallback chain of svc: written (3 option(s))"] and notes == []
    assert audits() == written == [("fallback_option.create", runner.SETUP_REASON)] * 3


def test_the_drill_notes_a_chain_the_target_keeps_other_options_after(
    svc: Service, drill_rebound: runner.Rebound
) -> None:
    FallbackOption.objects.create(service=svc, operation="", position=1, kind="static", static_value=0)
    spec = ServiceSpec(name="svc", operation="call", fallbacks=(Fallback(kind="service", target="replica"),))
    notes: list[str] = []

    runner.configure_chain(drill_rebound, spec, notes, lambda _: None)

    assert rows(operation="call") == [(1, "service", "replica", None, None)]
    assert len(notes) == 1 and "svc" in notes[0]


def test_the_drill_runner_needs_no_database_of_rebound() -> None:
    tree = ast.parse(Path(runner.__file__).read_text(encoding="utf-8"))
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }

    assert not {m for m in imported if m and m.split(".")[0] in ("recovery", "core", "healing", "django")}

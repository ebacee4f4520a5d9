"""Issue 11, items 7 and 9: the degradation endpoints answer what /api/schema/ says (the whole picture, or with
`?service=` one service's level: two shapes, both documented), every status they answer is documented with its
body, and every number they take has its range in the schema."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from drf_spectacular.generators import SchemaGenerator
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from rest_framework.test import APIClient

from core.audit.services import Actor
from recovery.breakers.models import Service
from recovery.degradation import services as degradation_services

pytestmark = pytest.mark.django_db
URL = "/api/v1/degradation"


@functools.cache
def _document() -> dict[str, Any]:
    return SchemaGenerator().get_schema(request=None, public=True)  # type: ignore[no-any-return]


def validator_for(schema: dict[str, Any]) -> Draft202012Validator:
    registry: Registry[Any] = Registry().with_resource(
        "urn:rebound", DRAFT202012.create_resource(_document())
    )
    resolved = {"$ref": "urn:rebound#/" + schema["$ref"].removeprefix("#/")} if "$ref" in schema else schema
    return Draft202012Validator(resolved, registry=registry)


def conforms(response: Any, method: str, path: str) -> None:
    operation = _document()["paths"][path][method]
    assert str(response.status_code) in operation["responses"], (response.status_code, response.content[:300])
    schema = operation["responses"][str(response.status_code)]["content"]["application/json"]["schema"]
    problems = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator_for(schema).iter_errors(response.json())
    ]
    assert problems == []


def shape(name: str, body: Any) -> bool:
    return validator_for({"$ref": f"#/components/schemas/{name}"}).is_valid(body)


@pytest.fixture
def fleet() -> None:
    Service.objects.create(name="web-search")
    Service.objects.create(name="openai", criticality="essential")
    degradation_services.force(scope="*", level="minimal", reason="drill", expires_at=None, actor=Actor())
    degradation_services.force(
        scope="openai", level="emergency", reason="quota", expires_at=None, actor=Actor()
    )


def test_the_whole_picture_is_an_overview_and_nothing_else(fleet: None, agent_client: APIClient) -> None:
    response = agent_client.get(URL)
    conforms(response, "get", "/api/v1/degradation")
    assert shape("OverviewOut", response.json()) and not shape("ServiceLevelOut", response.json())


def test_one_services_level_is_a_service_level_and_nothing_else(fleet: None, agent_client: APIClient) -> None:
    response = agent_client.get(f"{URL}?service=web-search")
    assert (response.json()["level"], response.json()["skip"]) == ("minimal", True)
    conforms(response, "get", "/api/v1/degradation")
    assert shape("ServiceLevelOut", response.json()) and not shape("OverviewOut", response.json())


def test_the_two_shapes_are_documented(fleet: None) -> None:
    operation = _document()["paths"]["/api/v1/degradation"]["get"]
    schema = _document()["components"]["schemas"]["DegradationOut"]
    assert {s["$ref"].rsplit("/", 1)[1] for s in schema["anyOf"]} == {"OverviewOut", "ServiceLevelOut"}
    assert "ServiceLevelOut" in operation["parameters"][0]["description"]
    assert {"TheFleet", "OneService(?service=web-search)"} <= set(
        operation["responses"]["200"]["content"]["application/json"]["examples"]
    )


def test_forcing_clearing_and_the_events_hold_to_their_schemas(operator_client: APIClient) -> None:
    Service.objects.create(name="web-search")
    forced = operator_client.post(
        URL, {"scope": "*", "level": "degraded", "reason": "r", "ttl_s": 60}, format="json"
    )
    conforms(forced, "post", "/api/v1/degradation")
    cleared = operator_client.post(f"{URL}/clear", {"scope": "*", "reason": "done"}, format="json")
    conforms(cleared, "post", "/api/v1/degradation/clear")
    conforms(operator_client.get(f"{URL}/events"), "get", "/api/v1/degradation/events")


@pytest.mark.parametrize(
    ("method", "path", "route", "body", "status"),
    [
        ("get", f"{URL}?service=nope", "/api/v1/degradation", None, 404),
        ("get", f"{URL}?service=Not%20A%20Slug", "/api/v1/degradation", None, 400),
        ("post", URL, "/api/v1/degradation", {"scope": "nope", "level": "minimal", "reason": "r"}, 404),
        ("post", URL, "/api/v1/degradation", {"scope": "*", "level": "sideways", "reason": "r"}, 400),
        ("post", f"{URL}/clear", "/api/v1/degradation/clear", {"scope": "*"}, 400),
        ("get", f"{URL}/events?scope=Not%20A%20Scope", "/api/v1/degradation/events", None, 400),
        ("get", f"{URL}/events?page=99", "/api/v1/degradation/events", None, 404),
    ],
)
def test_every_error_an_endpoint_answers_is_documented(
    operator_client: APIClient, method: str, path: str, route: str, body: Any, status: int
) -> None:
    call = getattr(operator_client, method)
    response = call(path, body, format="json") if body is not None else call(path)
    assert response.status_code == status, response.content[:300]
    conforms(response, method, route)


@pytest.mark.parametrize("path", [URL, f"{URL}/clear"])
def test_a_body_that_is_not_json_is_a_documented_415(operator_client: APIClient, path: str) -> None:
    response = operator_client.post(path, "a=1", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    conforms(response, "post", path)


def test_agents_get_a_documented_403(agent_client: APIClient) -> None:
    response = agent_client.post(URL, {"scope": "*", "level": "minimal", "reason": "r"}, format="json")
    conforms(response, "post", "/api/v1/degradation")


@pytest.mark.parametrize("ttl", ["1e400", "NaN", "Infinity", "0", "-1", "2592001"])
def test_forcing_refuses_a_ttl_out_of_range(operator_client: APIClient, ttl: str) -> None:
    body = f'{{"scope": "*", "level": "minimal", "reason": "r", "ttl_s": {ttl}}}'
    response = operator_client.post(URL, body, content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    assert any("ttl_s" in e["field"] for e in response.json()["errors"]), response.json()


def test_every_number_the_degradation_endpoints_take_has_a_documented_range() -> None:
    ttl = _document()["components"]["schemas"]["ForceInRequest"]["properties"]["ttl_s"]["anyOf"][0]
    assert (ttl["exclusiveMinimum"], ttl["maximum"]) == (0, 2_592_000)
    parameters = _document()["paths"]["/api/v1/degradation/events"]["get"]["parameters"]
    assert {p["name"] for p in parameters} == {"scope", "page", "page_size"}


@pytest.mark.parametrize(
    ("when", "status"), [("2999-01-01T00:00:00+23:59", 200), ("9999-12-31T23:59:59-23:59", 400)]
)
def test_an_expiry_with_any_offset_is_kept_in_utc_or_refused(
    operator_client: APIClient, when: str, status: int
) -> None:
    body = {"scope": "*", "level": "minimal", "reason": "x", "expires_at": when}
    response = operator_client.post(URL, body, format="json")
    assert response.status_code == status, response.content[:300]
    conforms(response, "post", "/api/v1/degradation")
    if status == 400:
        assert [e["field"] for e in response.json()["errors"]] == ["expires_at"]
    else:
        assert response.json()["until"] == "2998-12-31T00:01:00Z"

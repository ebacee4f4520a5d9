"""The answers of the recovery decisions' endpoints hold to what /api/schema/ says of them, body for body: a
list where the schema says a list (GET /retry-policies), every field of every object."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from django.test import override_settings
from drf_spectacular.generators import SchemaGenerator
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from rest_framework.test import APIClient

from recovery.breakers.models import Service
from recovery.decisions import policies
from recovery.decisions.models import FallbackOption
from tests.support.factories import rebound_settings

pytestmark = [pytest.mark.django_db, pytest.mark.redis]


@functools.cache
def _document() -> dict[str, Any]:
    return SchemaGenerator().get_schema(request=None, public=True)  # type: ignore[no-any-return]


def conforms(response: Any, method: str, path: str) -> None:
    """The answer's body is valid against the schema the document gives this operation and status."""
    document = _document()
    operation = document["paths"][path][method]
    answer = operation["responses"][str(response.status_code)]
    schema = answer["content"]["application/json"]["schema"]
    registry: Registry[Any] = Registry().with_resource("urn:rebound", DRAFT202012.create_resource(document))
    resolved = {"$ref": "urn:rebound#/" + schema["$ref"].removeprefix("#/")} if "$ref" in schema else schema
    validator = Draft202012Validator(resolved, registry=registry)
    problems = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(response.json())
    ]
    assert problems == []


@pytest.fixture(autouse=True)
def fresh_policies() -> Any:
    policies.forget()
    yield
    policies.forget()


def test_the_retry_policies_are_a_list_as_the_schema_says(agent_client: APIClient) -> None:
    response = agent_client.get("/api/v1/retry-policies")

    assert response.status_code == 200
    assert isinstance(response.json(), list) and response.json()
    assert _document()["components"]["schemas"]["RetryPolicyList"]["type"] == "array"
    conforms(response, "get", "/api/v1/retry-policies")


def test_a_resolved_policy_holds_to_its_schema(agent_client: APIClient) -> None:
    Service.objects.create(name="svc")
    response = agent_client.get("/api/v1/retry-policies/resolve?service=svc&error_class=transient")

    assert response.status_code == 200
    conforms(response, "get", "/api/v1/retry-policies/resolve")


def test_a_plan_and_its_fallback_hold_to_their_schema(agent_client: APIClient) -> None:
    svc = Service.objects.create(name="svc")
    FallbackOption.objects.create(service=svc, position=1, kind="static", static_value={"answer": "later"})
    body = {"service": "svc", "attempt": 4, "error": {"type": "TimeoutError"}}

    response = agent_client.post("/api/v1/recovery/plan", body, format="json")

    assert response.status_code == 200, response.json()
    assert response.json()["action"] == "fallback"
    conforms(response, "post", "/api/v1/recovery/plan")


def test_the_options_and_the_chain_hold_to_their_schema(agent_client: APIClient) -> None:
    Service.objects.create(name="svc")

    options = agent_client.get("/api/v1/recovery/options?service=svc&error_class=transient")
    chain = agent_client.get("/api/v1/fallbacks/svc")

    assert (options.status_code, chain.status_code) == (200, 200)
    conforms(options, "get", "/api/v1/recovery/options")
    conforms(chain, "get", "/api/v1/fallbacks/{service}")


@pytest.mark.parametrize(
    "body",
    [
        {"service": "svc", "attempt": 10_001, "error": {"type": "TimeoutError"}},
        {"service": "svc", "elapsed_s": 1e12, "error": {"type": "TimeoutError"}},
    ],
)
def test_a_number_out_of_its_documented_range_is_a_400_in_the_schemas_shape(
    agent_client: APIClient, body: dict[str, Any]
) -> None:
    with override_settings(REBOUND=rebound_settings()):
        response = agent_client.post("/api/v1/recovery/plan", body, format="json")

    assert response.status_code == 400, response.json()
    conforms(response, "post", "/api/v1/recovery/plan")

"""The schema tells the truth (issue 11, item 9): it validates, every operation documents the errors the shared
machinery can answer (core/api/openapi_hooks.py), those answers are real and shaped as documented, every example
matches its schema, and the audit trail's `before`/`after` says what it holds."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from rest_framework.test import APIClient

from core.access import services as access
from core.api import openapi_hooks
from core.audit.services import Actor
from tests.support import factories, openapi

pytestmark = pytest.mark.django_db

ROOT_URI = "urn:rebound:openapi"
METHODS = openapi_hooks.HTTP_METHODS


def _schema() -> dict[str, Any]:
    # The document generated once per test process (tests/support/openapi.py), copied: a test may change its copy.
    return copy.deepcopy(openapi.document())


def _operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def _schema_objects(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every JSON Schema in an OpenAPI document: components, parameters, bodies, answers and headers."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{where}/{key}"
            if key == "schema" and isinstance(value, dict):
                yield here, value
            elif key == "schemas" and where.endswith("/components"):
                yield from ((f"{here}/{name}", sub) for name, sub in value.items())
            else:
                yield from _schema_objects(value, here)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _schema_objects(value, f"{where}/{index}")


def _validator(schema: dict[str, Any], document: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A validator of `schema` whose `#/components/...` references resolve in the OpenAPI document."""
    registry: Registry[Any] = Registry().with_resource(ROOT_URI, DRAFT202012.create_resource(document))
    rebased = json.loads(json.dumps(schema).replace('"$ref": "#/', f'"$ref": "{ROOT_URI}#/'))
    return jsonschema.Draft202012Validator(rebased, registry=registry)


def _needed(path: str, operation: dict[str, Any]) -> set[str]:
    """What every operation must document, derived from the operation alone (independently of the hook)."""
    needed = {"503"}
    if "requestBody" in operation or operation.get("parameters"):
        needed.add("400")
    if operation.get("security") and all(operation["security"]):
        needed |= {"401", "403"}
    if "{" in path or any(p["name"] == "page" for p in operation.get("parameters", [])):
        needed.add("404")
    if "requestBody" in operation:
        needed |= {"411", "413", "415"}
    return needed


# --- the schema validates ------------------------------------------------------------------------------------


@pytest.mark.slow  # the validation against OpenAPI 3.1's meta-schema takes seconds of CPU
def test_it_publishes_a_schema_that_validates_against_openapi_3_1(tmp_path: Path) -> None:
    # As a developer checks it: `manage.py spectacular --validate` generates the document /api/schema/ serves
    # (SchemaGenerator, public) and fails on any error of validate_schema (OpenAPI 3.1 and JSON Schema).
    call_command("spectacular", "--validate", "--file", str(tmp_path / "schema.yaml"))
    assert (tmp_path / "schema.yaml").read_text().startswith("openapi: 3.1.0")


def test_it_publishes_only_schemas_that_are_valid_json_schema() -> None:
    meta = jsonschema.Draft202012Validator(jsonschema.Draft202012Validator.META_SCHEMA)
    invalid = [
        f"{where}: {error.message[:120]}"
        for where, schema in _schema_objects(_schema())
        for error in meta.iter_errors(schema)
    ]
    assert invalid == []


def test_it_gives_examples_that_match_their_schemas() -> None:
    document = _schema()
    wrong = []
    for path, method, operation in _operations(document):
        contents = [("request", operation.get("requestBody", {}).get("content", {}))]
        contents += [(code, answer.get("content", {})) for code, answer in operation["responses"].items()]
        for where, content in contents:
            for media, shape in content.items():
                for name, example in shape.get("examples", {}).items():
                    errors = list(_validator(shape["schema"], document).iter_errors(example["value"]))
                    wrong += [
                        f"{method.upper()} {path} {where} {media} {name}: {e.message[:100]}" for e in errors
                    ]
    assert wrong == []


# --- every operation documents the errors it can answer -----------------------------------------------------


def test_it_documents_the_errors_every_operation_can_answer() -> None:
    missing = [
        f"{method.upper()} {path}: {sorted(_needed(path, operation) - set(operation['responses']))}"
        for path, method, operation in _operations(_schema())
        if _needed(path, operation) - set(operation["responses"])
    ]
    assert missing == []


def test_it_documents_retry_after_on_every_503() -> None:
    without = [
        f"{method.upper()} {path}"
        for path, method, operation in _operations(_schema())
        if "Retry-After" not in operation["responses"]["503"].get("headers", {})
    ]
    assert without == []


def test_it_gives_every_error_answer_the_error_envelope() -> None:
    wrong = [
        f"{method.upper()} {path} {code}"
        for path, method, operation in _operations(_schema())
        for code, answer in operation["responses"].items()
        if code[0] in "45"
        and answer.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
        != openapi_hooks.ERROR_BODY_REF
    ]
    assert wrong == []


def test_it_documents_406_only_where_the_view_negotiates_its_format() -> None:
    document = _schema()
    assert "406" in document["paths"]["/api/v1/me"]["get"]["responses"]
    # The agents' hot endpoints answer JSON whatever the Accept header says (core/api/negotiation.JsonOnly).
    assert "406" not in document["paths"]["/api/v1/errors"]["post"]["responses"]


def test_it_keeps_what_an_operation_documents_itself() -> None:
    own_404 = {
        "description": "No such task.",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
    document = {
        "paths": {
            "/api/v1/things/{id}": {
                "post": {
                    "security": [{"ApiKey": []}],
                    "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                    "responses": {"200": {"description": "ok"}, "404": copy.deepcopy(own_404)},
                }
            }
        }
    }
    result = openapi_hooks.document_errors(document, generator=None, request=None, public=True)
    responses = result["paths"]["/api/v1/things/{id}"]["post"]["responses"]
    assert responses["404"] == own_404
    assert set(responses) == {"200", "400", "401", "403", "404", "411", "413", "415", "503"}
    assert "ErrorBody" in result["components"]["schemas"]


def test_it_documents_the_idempotency_answers_where_an_operation_takes_the_key() -> None:
    document = {
        "paths": {
            "/api/v1/reports": {
                "post": {
                    "parameters": [{"in": "header", "name": "Idempotency-Key", "schema": {"type": "string"}}],
                    "responses": {"201": {"description": "taken"}},
                }
            }
        }
    }
    result = openapi_hooks.document_errors(document, generator=None, request=None, public=True)
    responses = result["paths"]["/api/v1/reports"]["post"]["responses"]
    assert {"409", "422"} <= set(responses)
    assert "Retry-After" in responses["409"]["headers"]


# --- the documented answers are real and shaped as documented -------------------------------------------------


def _assert_documented(answer: Any, path: str, method: str) -> None:
    document = _schema()
    responses = document["paths"][path][method]["responses"]
    assert str(answer.status_code) in responses
    assert answer["Content-Type"] == "application/json"
    shape = responses[str(answer.status_code)]["content"]["application/json"]["schema"]
    assert list(_validator(shape, document).iter_errors(answer.json())) == []


def test_it_answers_a_documented_403_to_a_user_without_a_role() -> None:
    user = get_user_model().objects.create_user("no-role", password="x" * 20)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {factories.user_key(user)}")
    answer = client.get("/api/v1/me")
    assert answer.status_code == 403
    _assert_documented(answer, "/api/v1/me", "get")


def test_it_answers_a_documented_406_to_an_accept_header_it_cannot_answer(agent_client: APIClient) -> None:
    answer = agent_client.get("/api/v1/me", HTTP_ACCEPT="text/csv")
    assert answer.status_code == 406
    _assert_documented(answer, "/api/v1/me", "get")


def test_it_answers_a_documented_415_to_a_body_that_is_not_json(agent_client: APIClient) -> None:
    answer = agent_client.post("/api/v1/errors/classify", data="service=x", content_type="text/plain")
    assert answer.status_code == 415
    _assert_documented(answer, "/api/v1/errors/classify", "post")


def test_it_answers_a_documented_413_to_a_body_over_the_limit(agent_client: APIClient, settings: Any) -> None:
    settings.API_MAX_BODY_BYTES = 100
    body = json.dumps({"service": "openai", "message": "x" * 200})
    answer = agent_client.post("/api/v1/errors/classify", data=body, content_type="application/json")
    assert answer.status_code == 413
    _assert_documented(answer, "/api/v1/errors/classify", "post")


def test_it_answers_a_documented_400_to_broken_json(agent_client: APIClient) -> None:
    answer = agent_client.post("/api/v1/errors/classify", data="{not json", content_type="application/json")
    assert answer.status_code == 400
    _assert_documented(answer, "/api/v1/errors/classify", "post")


# --- the audit trail's before and after -----------------------------------------------------------------------


def test_it_says_what_an_audit_events_before_and_after_hold() -> None:
    event = _schema()["components"]["schemas"]["AuditEventOut"]["properties"]
    for name in ("before", "after"):
        fields = next(part for part in event[name]["anyOf"] if part.get("type") == "object")
        assert isinstance(fields["additionalProperties"], dict)
        assert set(fields["additionalProperties"]["type"]) == {
            "string",
            "number",
            "boolean",
            "null",
            "array",
            "object",
        }


def test_it_answers_audit_events_that_match_the_published_schema(operator_client: APIClient) -> None:
    actor = Actor(user=operator_client.user)  # type: ignore[attr-defined]
    agent = access.create_agent(name="audited-agent", description="", actor=actor)
    api_key, _ = access.issue_key(actor=actor, agent=agent, name="ci")
    access.revoke_key(actor=actor, api_key=api_key, reason="leaked in a CI log")

    answer = operator_client.get("/api/v1/audit-events")

    assert answer.status_code == 200
    events = answer.json()["results"]
    assert {e["action"] for e in events} >= {"agent.create", "apikey.issue", "apikey.revoke"}
    assert any(e["before"] for e in events) and any(e["after"] for e in events)
    document = _schema()
    shape = document["paths"]["/api/v1/audit-events"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]
    assert list(_validator(shape["schema"], document).iter_errors(answer.json())) == []


def test_it_documents_the_range_of_page_and_page_size() -> None:
    parameters = {
        p["name"]: p["schema"] for p in _schema()["paths"]["/api/v1/audit-events"]["get"]["parameters"]
    }
    assert parameters["page_size"]["minimum"] == 1
    assert {"type": "string", "enum": ["last"]} in parameters["page"]["anyOf"]
    assert all(part.get("minimum") == 1 for part in parameters["page"]["anyOf"] if part["type"] == "integer")


def test_it_refuses_a_page_size_below_the_documented_minimum(operator_client: APIClient) -> None:
    answer = operator_client.get("/api/v1/audit-events", {"page_size": "0"})
    assert answer.status_code == 400
    assert [e["field"] for e in answer.json()["errors"]] == ["page_size"]

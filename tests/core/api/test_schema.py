from __future__ import annotations

import copy
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.support.openapi import document

pytestmark = pytest.mark.django_db


def _schema() -> dict[str, Any]:
    # One document per test process (tests/support/openapi.py); a copy, as tests here may change it.
    return copy.deepcopy(document())


def _has_example(operation: dict[str, Any]) -> bool:
    contents = [operation.get("requestBody", {}).get("content", {})]
    contents += [r.get("content", {}) for r in operation.get("responses", {}).values()]
    in_parameters = any("examples" in p or "example" in p for p in operation.get("parameters", []))
    return in_parameters or any(
        "examples" in media or "example" in media for content in contents for media in content.values()
    )


def test_it_publishes_a_valid_openapi_schema() -> None:
    # Validated against OpenAPI 3.1 in tests/core/test_openapi_errors.py (slow: seconds of CPU).
    response = APIClient().get("/api/schema/")
    assert response.status_code == 200
    assert b"openapi: 3.1.0" in response.content


def test_it_gives_an_example_on_every_operation() -> None:
    schema = _schema()
    missing = [
        f"{method.upper()} {path}"
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if not _has_example(operation)
    ]
    assert missing == []


def test_it_documents_every_path_under_api_v1_without_a_trailing_slash() -> None:
    paths = set(_schema()["paths"])
    assert {"/api/v1/errors", "/api/v1/errors/classify", "/api/v1/patterns", "/api/v1/rules"} <= paths
    assert all(p.startswith("/api/v1/") and not p.endswith("/") for p in paths)


def test_it_serves_the_browsable_docs_without_a_cdn() -> None:
    response = APIClient().get("/api/docs/")
    assert response.status_code == 200
    assert b"cdn.jsdelivr" not in response.content
    assert b"drf_spectacular_sidecar" in response.content


def test_health_endpoints_answer() -> None:
    assert APIClient().get("/healthz").json() == {"status": "ok"}
    assert APIClient().get("/readyz").json()["status"] == "ok"


def _resolve(node: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = components[node["$ref"].rsplit("/", 1)[1]]
    return node


def _is_bare(node: dict[str, Any], components: dict[str, Any]) -> bool:
    """A shape that says nothing: no schema, or an object with neither properties nor typed values."""
    node = _resolve(node, components)
    for key in ("allOf", "oneOf", "anyOf"):
        if key in node:
            return any(_is_bare(part, components) for part in node[key])
    if not node:
        return True
    if node.get("type") == "array":
        return _is_bare(node.get("items", {}), components)
    if node.get("type") == "object":
        extra = node.get("additionalProperties")
        return not node.get("properties") and not (isinstance(extra, dict) and extra)
    return False


def _operations() -> list[tuple[str, dict[str, Any]]]:
    schema = _schema()
    return [
        (f"{method.upper()} {path}", operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    ]


def test_it_types_every_response_with_its_real_shape() -> None:
    components = _schema()["components"]["schemas"]
    bare = [
        f"{name} {code} {media}"
        for name, operation in _operations()
        for code, response in operation["responses"].items()
        for media, content in response.get("content", {}).items()
        if media != "text/event-stream" and _is_bare(content.get("schema", {}), components)
    ]
    assert bare == []


def test_it_gives_every_error_answer_the_error_envelope() -> None:
    def envelope(response: dict[str, Any]) -> bool:
        content = response.get("content", {}).get("application/json", {})
        return content.get("schema", {}).get("$ref", "").endswith("/ErrorBody")

    wrong = [
        f"{name} {code}"
        for name, operation in _operations()
        for code, response in operation["responses"].items()
        if code.startswith("4") and not envelope(response)
    ]
    assert wrong == []


def test_it_declares_the_errors_each_operation_can_answer() -> None:
    missing = []
    for name, operation in _operations():
        codes = set(operation["responses"])
        needed = {"401"}
        if "requestBody" in operation or any(p["in"] == "query" for p in operation.get("parameters", [])):
            needed.add("400")
        if "{" in name:
            needed.add("404")
        if needed - codes:
            missing.append(f"{name}: {sorted(needed - codes)}")
    assert missing == []

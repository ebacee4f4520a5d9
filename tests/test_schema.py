from __future__ import annotations

from typing import Any

import pytest
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def _schema() -> dict[str, Any]:
    return SchemaGenerator().get_schema(request=None, public=True)  # type: ignore[no-any-return]


def _has_example(operation: dict[str, Any]) -> bool:
    contents = [operation.get("requestBody", {}).get("content", {})]
    contents += [r.get("content", {}) for r in operation.get("responses", {}).values()]
    in_parameters = any("examples" in p or "example" in p for p in operation.get("parameters", []))
    return in_parameters or any(
        "examples" in media or "example" in media for content in contents for media in content.values()
    )


def test_it_publishes_a_valid_openapi_schema() -> None:
    validate_schema(_schema())
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
    assert APIClient().get("/readyz").json() == {"status": "ok"}

"""The published OpenAPI document, and a check that an answer is what it documents: for API tests of any room."""

from __future__ import annotations

import functools
from typing import Any

from drf_spectacular.generators import SchemaGenerator
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012


@functools.cache
def document() -> dict[str, Any]:
    """The schema /api/schema/ serves, generated once per test process."""
    return SchemaGenerator().get_schema(request=None, public=True)  # type: ignore[no-any-return]


def conforms(response: Any, method: str, path: str) -> None:
    """The answer's status is documented for the operation, and its body matches the documented schema."""
    operation = document()["paths"][path][method]
    assert str(response.status_code) in operation["responses"], (response.status_code, response.content[:300])
    if response.status_code == 204:
        return
    schema = operation["responses"][str(response.status_code)]["content"]["application/json"]["schema"]
    registry: Registry[Any] = Registry().with_resource("urn:rebound", DRAFT202012.create_resource(document()))
    resolved = {"$ref": "urn:rebound#/" + schema["$ref"].removeprefix("#/")} if "$ref" in schema else schema
    validator = Draft202012Validator(resolved, registry=registry)
    problems = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(response.json())
    ]
    assert problems == []

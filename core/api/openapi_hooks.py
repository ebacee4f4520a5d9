"""drf-spectacular post-processing hooks (settings.SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]).

`document_errors` puts in every operation the error answers that come from the machinery every API view shares
rather than from the view itself, so that the schema lists every status an operation can really answer:

| status | answered by | on which operations |
|---|---|---|
| 400 | the strict JSON parser (core/api/parsers.py) and each view's validation | those with a body or parameters |
| 401 | the authentication classes: no key, an unknown or a revoked one | those that need a key or a session |
| 403 | the default permission (a user key whose user has no role) and CSRF (a session's write) | the same |
| 404 | the URL resolver (an id that matches no route) and every view's look-up; DRF's `?format=` override; the paginator (a page past the last) | those with a path parameter, those whose view negotiates the format, and paged lists |
| 406 | content negotiation (an Accept header the view cannot answer) | those whose view negotiates the format |
| 409, 422 | the idempotency check (core/api/idempotency.py): the key's first request still running (409, with Retry-After); the key used with another body (422) | those that take an `Idempotency-Key` header |
| 411, 413, 415 | the request's body: chunked without a length, over the size limit, not JSON | those with a body |
| 503 | the database unreachable: nothing can be answered; Retry-After says when to try again | every one |

405 is not an operation's answer: it is what a path answers for a method the schema does not list. 429 is not
answered by any view (Rebound does not rate-limit its own API); a view that ever does names it with answers().

What an operation documents itself is kept as it is: a hook-added answer never replaces one, it only fills in
what is missing (and the Retry-After header of a 503).
"""

from __future__ import annotations

from typing import Any

from rest_framework.negotiation import BaseContentNegotiation

from core.api import idempotency
from core.api.negotiation import JsonOnly
from core.api.schemas import ERROR_MEANINGS, ErrorBody

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
ERROR_BODY_REF = "#/components/schemas/ErrorBody"
IDEMPOTENCY_HEADER = idempotency.HEADER.lower()

RETRY_AFTER_HEADER = {
    "description": "Seconds to wait before trying again.",
    "schema": {"type": "integer", "minimum": 1},
}

# Where the generic meaning says too little about the answer a hook adds.
NOT_FOUND_PATH = "a path parameter that no route takes (an id that is not a number)"
NOT_FOUND_FORMAT = "a `?format=` that names a format the API does not answer in"
NOT_FOUND_PAGE = "a `?page=` past the last page"


def document_errors(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    views = _views(generator)
    for path, item in result.get("paths", {}).items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                _document(operation, _errors_of(path, operation, views.get((path, method))))
    _ensure_error_body(result)
    return result


def _views(generator: Any) -> dict[tuple[str, str], type]:
    """(path, method) -> view class, from the endpoints drf-spectacular walked to build the schema."""
    endpoints = getattr(generator, "endpoints", None) or []
    found: dict[tuple[str, str], type] = {}
    for path, _regex, method, callback in endpoints:
        view = getattr(callback, "cls", None)
        if view is not None:
            found[(path, method.lower())] = view
    return found


def _negotiates(view: type | None) -> bool:
    """Whether the view chooses its format from Accept and `?format=` (a JsonOnly view always answers JSON)."""
    negotiation: type[BaseContentNegotiation] | None = getattr(view, "content_negotiation_class", None)
    return negotiation is not None and not issubclass(negotiation, JsonOnly)


def _authenticated(operation: dict[str, Any]) -> bool:
    """Whether the operation needs credentials: it lists security requirements, none of them empty."""
    security: list[dict[str, Any]] = operation.get("security") or []
    return bool(security) and all(security)


def _errors_of(path: str, operation: dict[str, Any], view: type | None) -> dict[int, str]:
    """The statuses the shared machinery can answer for this operation, with their meanings."""
    parameters = operation.get("parameters", [])
    has_body = "requestBody" in operation
    errors: dict[int, str] = {503: ERROR_MEANINGS[503]}
    if has_body or parameters:
        errors[400] = ERROR_MEANINGS[400]
    if _authenticated(operation):
        errors[401] = ERROR_MEANINGS[401]
        errors[403] = ERROR_MEANINGS[403]
    not_found = [NOT_FOUND_PATH] if "{" in path else []
    if any(p.get("in") == "query" and p.get("name") == "page" for p in parameters):
        not_found.append(NOT_FOUND_PAGE)
    if _negotiates(view):
        not_found.append(NOT_FOUND_FORMAT)
        errors[406] = ERROR_MEANINGS[406]
    if not_found:
        errors[404] = f"{ERROR_MEANINGS[404]} Also {' or '.join(not_found)}."
    if _takes_idempotency_key(parameters):
        for code, meaning in (idempotency.CONFLICT_IN_FLIGHT, idempotency.REUSED_KEY):
            errors[code] = meaning
    if has_body:
        for code in (411, 413, 415):
            errors[code] = ERROR_MEANINGS[code]
    return errors


def _takes_idempotency_key(parameters: list[dict[str, Any]]) -> bool:
    return any(
        p.get("in") == "header" and p.get("name", "").lower() == IDEMPOTENCY_HEADER for p in parameters
    )


def _document(operation: dict[str, Any], errors: dict[int, str]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for code, description in errors.items():
        responses.setdefault(
            str(code),
            {
                "description": description,
                "content": {"application/json": {"schema": {"$ref": ERROR_BODY_REF}}},
            },
        )
    # A 503, and the 409 of a request whose Idempotency-Key is still in use, say when to try again.
    retried = ["503", *(["409"] if _takes_idempotency_key(operation.get("parameters", [])) else [])]
    for status in retried:
        if status in responses:
            responses[status].setdefault("headers", {}).setdefault("Retry-After", dict(RETRY_AFTER_HEADER))
    # Successes first, then the errors, each in order: the order a reader looks for them in.
    operation["responses"] = dict(sorted(responses.items(), key=lambda item: (item[0] == "default", item[0])))


def _ensure_error_body(result: dict[str, Any]) -> None:
    """The envelope's components, in case no view put them in the schema through answers()."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    if "ErrorBody" in schemas:
        return
    generated = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
    for name, schema in generated.pop("$defs", {}).items():
        schemas.setdefault(name, schema)
    schemas["ErrorBody"] = generated

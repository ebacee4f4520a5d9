"""A healing action's parameters: its JSON Schema (Draft 2020-12) checked when the action is saved, and each
run's parameters checked against it when the run is asked for.

The schema is an operator's text, so it must not be able to hurt Rebound:

* `pattern` runs on RE2 (google-re2), which matches in linear time: `(a+)+$` cannot hold a web worker. A
  pattern RE2 cannot take (backreferences, lookarounds) is refused when the action is saved.
* `patternProperties` is refused: jsonschema joins its patterns into one Python regex to find additional
  properties, out of our reach. `properties` (with `additionalProperties`) covers what actions need.
* `$ref` may only point inside the schema (`#/$defs/...`): nothing is ever fetched from the network (the
  validator is given an empty registry, so even a `$ref` stored some other way cannot make it call out).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import re2
from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.exceptions import SchemaError
from referencing import Registry
from referencing.exceptions import Unresolvable

from core.api.errors import InvalidInput
from core.api.validation import field_path

FIELD = "parameters"
SCHEMA_FIELD = "parameters_schema"
MAX_ERRORS = 10
# Keywords whose values are data, not schemas: a `{"pattern": ...}` inside an example is no pattern.
DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
REFUSED_KEYWORDS = {
    "patternProperties": "patternProperties is not supported (its patterns would run outside RE2): "
    "list the names in properties",
    "$dynamicRef": "$dynamicRef is not supported",
}


class PatternRefused(ValueError):
    pass


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # a refused pattern is told to the operator, not to stderr
    return options


_OPTIONS = _options()


@lru_cache(maxsize=512)
def compiled(pattern: str) -> Any:
    """The pattern compiled by RE2, or PatternRefused saying why."""
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as error:
        reason = error.args[0] if error.args else error
        text = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        raise PatternRefused(
            f"RE2 cannot take the pattern {pattern!r} ({text}): patterns must run in linear time, so "
            "backreferences and lookarounds are not supported"
        ) from None


def _pattern(validator: Any, pattern: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string") or not isinstance(pattern, str):
        return
    try:
        found = compiled(pattern).search(instance)
    except PatternRefused as error:
        yield ValidationError(str(error))
        return
    if found is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    # Refused when an action is saved; should one be stored anyway, it never runs on Python's regex engine.
    yield ValidationError(REFUSED_KEYWORDS["patternProperties"])


RE2Validator = validators.extend(
    Draft202012Validator, {"pattern": _pattern, "patternProperties": _pattern_properties}
)
# No retrieval: a `$ref` to anything outside the schema is unresolvable, never fetched.
_NO_RETRIEVAL: Registry[Any] = Registry()


# --- saving an action: is its schema one we accept? --------------------------------------------------------


def _walk(node: Any, path: str) -> Iterator[tuple[str, str, Any]]:
    """(path, keyword, value) of every keyword in the schema, skipping data (const, enum, default, ...)."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}"
            yield here, str(key), value
            if key in DATA_KEYWORDS:
                continue
            if key in ("properties", "$defs", "definitions", "dependentSchemas"):
                # Their keys are names, their values schemas.
                if isinstance(value, dict):
                    for name, sub in value.items():
                        yield from _walk(sub, f"{here}.{name}")
                continue
            yield from _walk(value, here)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _walk(item, f"{path}[{index}]")


def check_schema(schema: Any) -> dict[str, Any]:
    """The schema, if Rebound accepts it for an action's parameters; InvalidInput naming
    `parameters_schema...` otherwise."""
    if not isinstance(schema, dict):
        raise InvalidInput('must be a JSON Schema object (e.g. {"type": "object"})', field=SCHEMA_FIELD)
    try:
        for path, keyword, value in _walk(schema, SCHEMA_FIELD):
            if keyword in REFUSED_KEYWORDS:
                raise InvalidInput(REFUSED_KEYWORDS[keyword], field=path)
            if keyword == "$ref" and not (isinstance(value, str) and value.startswith("#")):
                raise InvalidInput("$ref may only point inside the schema (#/$defs/...)", field=path)
            if keyword == "pattern" and isinstance(value, str):
                try:
                    compiled(value)
                except PatternRefused as error:
                    raise InvalidInput(str(error), field=path) from None
        # The metaschema, without the `regex` format check: Python's engine never sees the patterns.
        RE2Validator.check_schema(schema, format_checker=None)
        _resolve_refs(schema)
    except SchemaError as error:
        where = field_path(tuple(error.absolute_path), SCHEMA_FIELD)
        raise InvalidInput(f"not a valid JSON Schema: {error.message}", field=where) from None
    except RecursionError:
        raise InvalidInput("the schema is nested too deeply", field=SCHEMA_FIELD) from None
    return schema


def _resolve_refs(schema: dict[str, Any]) -> None:
    validator = RE2Validator(schema, registry=_NO_RETRIEVAL)
    resolver = validator._resolver
    for path, keyword, value in _walk(schema, SCHEMA_FIELD):
        if keyword == "$ref" and isinstance(value, str):
            try:
                resolver.lookup(value)
            except Unresolvable:
                raise InvalidInput(f"$ref {value!r} points nowhere in the schema", field=path) from None


# --- asking for a run: are its parameters valid? -----------------------------------------------------------


def _error_field(error: ValidationError) -> str:
    """`parameters.<path>`: for a missing or unexpected property, the property itself."""
    path = tuple(error.absolute_path)
    instance, value = error.instance, error.validator_value
    if error.validator == "required" and isinstance(instance, dict) and isinstance(value, list):
        missing = [name for name in value if isinstance(name, str) and name not in instance]
        if missing:
            path = (*path, missing[0])
    elif error.validator in ("additionalProperties", "unevaluatedProperties") and isinstance(instance, dict):
        schema = error.schema if isinstance(error.schema, dict) else {}
        known = schema.get("properties", {}) if isinstance(schema.get("properties"), dict) else {}
        extra = [name for name in instance if name not in known]
        if extra:
            path = (*path, extra[0])
    return field_path(path, FIELD)


def validate(schema: dict[str, Any], parameters: Any) -> dict[str, Any]:
    """The parameters, if they satisfy the action's schema; InvalidInput naming each `parameters.<path>`."""
    if not isinstance(parameters, dict):
        raise InvalidInput("must be a JSON object", field=FIELD)
    try:
        validator = RE2Validator(schema or {}, registry=_NO_RETRIEVAL)
        found = sorted(validator.iter_errors(parameters), key=lambda e: [str(p) for p in e.absolute_path])
    except (Unresolvable, SchemaError, RecursionError) as error:
        # A schema stored before these checks, or edited in the database: the caller's input is not at fault,
        # but nothing can run until an operator fixes the schema.
        raise InvalidInput(
            f"the action's parameters schema cannot be used ({type(error).__name__}): ask an operator to fix it",
            field=FIELD,
        ) from None
    if not found:
        return parameters
    errors = [{"field": _error_field(e), "message": e.message[:500]} for e in found[:MAX_ERRORS]]
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    raise InvalidInput(f"Invalid parameters: {summary}", errors=errors)

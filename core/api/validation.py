"""pydantic validation with the API's error shape: a 400 naming each field and its reason."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from core.api.errors import InvalidInput

T = TypeVar("T")


def field_path(loc: tuple[Any, ...], prefix: str = "") -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path or "body"


def _message(item: ErrorDetails) -> str:
    message = str(item["msg"])
    return message.removeprefix("Value error, ")


def parse(adapter: TypeAdapter[T], data: Any, prefix: str = "") -> T:
    try:
        return adapter.validate_python(data)
    except ValidationError as error:
        errors = [{"field": field_path(e["loc"], prefix), "message": _message(e)} for e in error.errors()]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        raise InvalidInput(f"Invalid input: {summary}", errors=errors) from None

"""pydantic validation with the API's error shape: a 400 naming each field and its reason.

Past pydantic's own checks, every number a model holds is checked to be one the rest of Rebound can keep: a
float finite (pydantic's lax mode reads the strings "inf", "Infinity" and "1e400" as a float, even where a field
says `ge=0`), an integer within a PostgreSQL bigint (a query parameter of 30 digits is a valid Python int). Only
the fields whose annotation holds a number or a model are looked at, so a batch of a thousand costs a few
hundred microseconds; free-form JSON (`dict[str, Any]`) comes from the strict parser, which checked it already.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from functools import cache
from operator import attrgetter
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from core.api.errors import InvalidInput

T = TypeVar("T")

INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # a PostgreSQL bigint
NOT_FINITE = "must be a finite number"
INT_RANGE = f"an integer must be between {INT_MIN} and {INT_MAX} (send larger numbers as strings)"


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
        value = adapter.validate_python(data)
    except ValidationError as error:
        errors = [{"field": field_path(e["loc"], prefix), "message": _message(e)} for e in error.errors()]
        _refuse(errors)
    if not _numbers_in_range(value):
        _refuse([{"field": field_path(loc, prefix), "message": why} for loc, why in _out_of_range(value, ())])
    return value


def _refuse(errors: list[dict[str, str]]) -> None:
    if errors:
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        raise InvalidInput(f"Invalid input: {summary}", errors=errors) from None


# --- numbers a model holds --------------------------------------------------------------------------------------


def _numbers_in_range(value: Any) -> bool:
    """Whether every number in `value` can be kept (the fast pass: no paths kept, C-level reads of fields)."""
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is float:
            if not math.isfinite(item):
                return False
        elif kind is int:
            if not INT_MIN <= item <= INT_MAX:
                return False
        elif kind is str or item is None or kind is bool:
            continue
        elif kind is list or kind is tuple:
            extend(item)
        elif kind is dict:
            extend(item.values())
        elif isinstance(item, BaseModel):
            getter = _GETTERS.get(kind) or _number_getter(kind)
            extend(getter(item))
        elif isinstance(item, int | float):
            return not list(_out_of_range(item, ()))
    return True


def _out_of_range(value: Any, loc: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], str]]:
    """(location, why) of each number in `value` that cannot be kept, following only typed fields (the slow
    pass, run only when the fast one found something, to name the fields)."""
    if isinstance(value, BaseModel):
        for name in _number_fields(type(value)):
            yield from _out_of_range(getattr(value, name, None), (*loc, name))
    elif isinstance(value, float):
        if not math.isfinite(value):
            yield loc, NOT_FINITE
    elif isinstance(value, int) and not isinstance(value, bool):
        if not INT_MIN <= value <= INT_MAX:
            yield loc, INT_RANGE
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _out_of_range(item, (*loc, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _out_of_range(item, (*loc, str(key)))


# Per model class: a function giving the values of its fields that may hold a number (attrgetter: one C call).
_GETTERS: dict[type[BaseModel], Callable[[BaseModel], tuple[Any, ...]]] = {}


def _number_getter(model: type[BaseModel]) -> Callable[[BaseModel], tuple[Any, ...]]:
    names = _number_fields(model)
    getter: Callable[[BaseModel], tuple[Any, ...]]
    if not names:
        getter = _no_values
    elif len(names) == 1:
        getter = attrgetter(names[0], names[0])  # a tuple, as for several names
    else:
        getter = attrgetter(*names)
    _GETTERS[model] = getter
    return getter


def _no_values(instance: BaseModel) -> tuple[Any, ...]:
    return ()


@cache
def _number_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of a model whose annotation can hold a number or another model (where a number may be)."""
    return tuple(name for name, field in model.model_fields.items() if _may_hold_number(field.annotation))


def _may_hold_number(annotation: Any) -> bool:
    if annotation is float or annotation is int:
        return True
    if isinstance(annotation, type):
        return issubclass(annotation, BaseModel) or (
            issubclass(annotation, int | float) and not issubclass(annotation, bool)
        )
    # Unions, Optional, list[...], dict[..., ...], Annotated[...]: any part that can (metadata is no type).
    return any(_may_hold_number(arg) for arg in get_args(annotation))

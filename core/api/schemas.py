"""The API kit's shapes: the one error envelope every 4xx has, one page of a list, and the helper each view
uses to declare its answers (so that every response and every 4xx body is in /api/schema/)."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from drf_spectacular.utils import OpenApiResponse
from pydantic import BaseModel, Field

T = TypeVar("T")


class FieldError(BaseModel):
    field: str = Field(description="The field's path: `reason`, `[2].status_code` for a batch's third item.")
    message: str = Field(description="What is wrong with it, in words.")


class ErrorBody(BaseModel):
    """Every 4xx answer: what went wrong in words, a code, and each field at fault (core/api/exceptions.py)."""

    detail: str = Field(description="What went wrong, in words.")
    code: str = Field(
        description="A stable code: invalid, malformed, not_found, conflict, payload_too_large, …"
    )
    errors: list[FieldError] = Field(description="Each field at fault and why; empty when no field is.")


class Page(BaseModel, Generic[T]):
    """One page of a list (`?page=` and `?page_size=`, at most 500): the same shape for every paged list."""

    count: int = Field(description="How many items the whole list has.")
    next: str | None = Field(description="The next page's URL, or null on the last page.")
    previous: str | None = Field(description="The previous page's URL, or null on the first page.")
    results: list[T]


# What each error status means wherever it appears; a view names the ones it can answer.
ERROR_MEANINGS = {
    400: "Invalid input: `errors` names each field and the reason.",
    401: "No key, an unknown key or a revoked key.",
    403: "The caller may not do this (an agent on an operator's action, a viewer on a write).",
    404: "No such object, or not one of the caller's.",
    409: "A conflict with the object's current state (a lost compare-and-set, a sequence taken).",
    413: "The body is over the limit the answer states.",
}


def answers(ok: dict[int, Any], *errors: int) -> dict[int, Any]:
    """A view's `responses` for extend_schema: its success shapes, and the error envelope for each error
    status it can answer (401 always, since every endpoint needs a key or a session)."""
    codes = sorted({401, *errors})
    return {**ok, **{code: OpenApiResponse(ErrorBody, description=ERROR_MEANINGS[code]) for code in codes}}

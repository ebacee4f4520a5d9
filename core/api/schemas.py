"""The API kit's shapes: the one error envelope every 4xx has, one page of a list, and the helper each view
uses to declare its answers (so that every response and every 4xx body is in /api/schema/)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from pydantic import AfterValidator, BaseModel, Field

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

    @classmethod
    def model_parametrized_name(cls, params: tuple[Any, ...]) -> str:
        # The schema's component name: `PatternOutPage`, not `Page[PatternOut]`, which OpenAPI refuses.
        return f"{getattr(params[0], '__name__', 'Item')}Page"


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else timezone.make_aware(value)


# A date and time from a query or a body: one without an offset is read in the server's time zone (UTC).
Moment = Annotated[datetime, AfterValidator(_aware)]

# The query parameters of every paged list (core/api/pagination.py).
PAGE_PARAMETERS = [
    OpenApiParameter("page", int, description="A page number within the list (from 1)."),
    OpenApiParameter("page_size", int, description="Items per page: 50 unless said, at most 500."),
]


def query_parameters(model: type[BaseModel], *, paged: bool = False) -> list[Any]:
    """extend_schema's `parameters` for a query parsed by a pydantic model (drf-spectacular reads its fields;
    its type stubs know serializers only, hence list[Any]), with the page parameters of a paged list."""
    return [model, *(PAGE_PARAMETERS if paged else [])]


# What each error status means wherever it appears; a view names the ones it can answer.
ERROR_MEANINGS = {
    400: "Invalid input: `errors` names each field and the reason.",
    401: "No key, an unknown key or a revoked key.",
    403: "The caller may not do this (an agent on an operator's action, a viewer on a write).",
    404: "No such object, or not one of the caller's.",
    409: "A conflict with the object's current state (a lost compare-and-set, a sequence taken).",
    413: "The body is over the limit the answer states.",
    415: "The body is not JSON (Content-Type must be application/json).",
}


def answers(ok: dict[int, Any], *errors: int) -> dict[int, Any]:
    """A view's `responses` for extend_schema: its success shapes, and the error envelope for each error
    status it can answer (401 always, since every endpoint needs a key or a session)."""
    codes = sorted({401, *errors})
    return {**ok, **{code: OpenApiResponse(ErrorBody, description=ERROR_MEANINGS[code]) for code in codes}}

"""The API kit's shapes: the one error envelope every 4xx has, one page of a list, and the helper each view
uses to declare its answers (so that every response and every 4xx body is in /api/schema/)."""

from __future__ import annotations

from datetime import UTC, datetime
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


def _in_utc(value: datetime) -> datetime:
    """The same moment in UTC. RFC 3339 allows any offset up to ±23:59, PostgreSQL only up to ±15:59: a query
    must never hand it one it refuses (a 500). A moment whose UTC year is before 1 or after 9999 is refused."""
    aware = value if value.tzinfo is not None else timezone.make_aware(value)
    try:
        return aware.astimezone(UTC)
    except OverflowError:
        raise ValueError("the moment in UTC falls outside the years 1 to 9999") from None


# A date and time from a query or a body, in UTC: one without an offset is read in the server's time zone (UTC).
Moment = Annotated[datetime, AfterValidator(_in_utc)]

# The query parameters of every paged list (core/api/pagination.py reads them strictly: anything else is a 400).
_WHOLE_MAX = 10**18 - 1  # the pagination reads at most 18 digits
PAGE_PARAMETERS = [
    OpenApiParameter(
        "page",
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": _WHOLE_MAX},
                {"type": "string", "enum": ["last"]},
            ]
        },
        description="A page number within the list (from 1), or `last`. A page past the last one is a 404.",
    ),
    OpenApiParameter(
        "page_size",
        {"type": "integer", "minimum": 1, "maximum": _WHOLE_MAX},
        description="Items per page: 50 unless said, at most 500 (a larger size is served as 500).",
    ),
]


def query_parameters(model: type[BaseModel], *, paged: bool = False) -> list[Any]:
    """extend_schema's `parameters` for a query parsed by a pydantic model (drf-spectacular reads its fields;
    its type stubs know serializers only, hence list[Any]), with the page parameters of a paged list."""
    return [model, *(PAGE_PARAMETERS if paged else [])]


# What each error status means wherever it appears; a view names the ones it can answer (answers()), and
# core/api/openapi_hooks.document_errors adds to every operation the ones that every view can answer.
ERROR_MEANINGS = {
    400: "Invalid input: `errors` names each field and the reason. Also a body that is not JSON the API can keep: "
    "broken JSON, nested deeper than the limit, a NUL character, a lone surrogate, a number that is not finite "
    "or an integer beyond 64 bits.",
    401: "No key, an unknown key or a revoked key.",
    403: "The caller may not do this (an agent on an operator's action, a viewer on a write, a user with no "
    "role), or a session's write without its CSRF token.",
    404: "No such object, or not one of the caller's.",
    405: "The path does not have this method.",
    406: "The Accept header asks for a format the API does not answer in (it answers JSON).",
    409: "A conflict with the object's current state (a lost compare-and-set, a sequence taken).",
    411: "A chunked body (no Content-Length) that the server cannot take: send its length.",
    413: "The body is over the limit the answer states.",
    415: "The body is not JSON (Content-Type must be application/json).",
    422: "The request cannot be processed as sent (an Idempotency-Key used before with another request).",
    429: "Too many requests: wait for the Retry-After header's seconds.",
    503: "Rebound cannot answer now (its database is unreachable); try again after the Retry-After header's "
    "seconds. Nothing was recorded.",
}

# An error status with the meaning it has for one operation, where the generic one says too little:
# `answers({200: Out}, 400, (409, "The idempotency key was used with another body."))`.
ErrorStatus = int | tuple[int, str]


def error_response(code: int, description: str | None = None) -> OpenApiResponse:
    """The error envelope as the answer of one error status."""
    return OpenApiResponse(ErrorBody, description=description or ERROR_MEANINGS[code])


def answers(ok: dict[int, Any], *errors: ErrorStatus) -> dict[int, Any]:
    """A view's `responses` for extend_schema: its success shapes, and the error envelope for each error
    status it can answer (401 always, since every endpoint needs a key or a session). The statuses every
    operation can answer (403, 503, and 400, 413, 415 where there is a body, ...) are added to the schema by
    core/api/openapi_hooks.document_errors: a view names those particular to it."""
    given = dict(e if isinstance(e, tuple) else (e, None) for e in errors)
    given.setdefault(401, None)
    return {**ok, **{code: error_response(code, given[code]) for code in sorted(given)}}

"""Domain errors: raised by services, mapped to HTTP status in one place (core/api/exceptions.py)."""

from __future__ import annotations

from django.db import InterfaceError, OperationalError

# What a database raises when it cannot be reached or cannot answer now (a lock, a failover): no fault of the
# request, so a 503 with Retry-After (core/api/exceptions.py), never a 500.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError)


class DomainError(Exception):
    status_code = 400
    code = "domain_error"

    def __init__(
        self, message: str, *, field: str | None = None, errors: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.errors = (
            errors if errors is not None else ([{"field": field, "message": message}] if field else [])
        )


class InvalidInput(DomainError):
    status_code = 400
    code = "invalid"


class NotFound(DomainError):
    status_code = 404
    code = "not_found"


class Conflict(DomainError):
    status_code = 409
    code = "conflict"


class Forbidden(DomainError):
    status_code = 403
    code = "forbidden"


class PayloadTooLarge(DomainError):
    status_code = 413
    code = "too_large"


class Malformed(InvalidInput):
    """The body is not JSON the API can read: broken, not UTF-8, or nested too deeply (core/api/parsers.py)."""

    code = "malformed"

    @classmethod
    def of_body(cls, detail: str, message: str | None = None) -> Malformed:
        return cls(detail, errors=[{"field": "body", "message": message or detail}])


class LengthRequired(DomainError):
    """A body whose length is unknown (chunked) where the server in front cannot say where it ends."""

    status_code = 411
    code = "length_required"


class ServiceUnavailable(DomainError):
    """Rebound cannot answer now (its database is unreachable); the answer says when to try again."""

    status_code = 503
    code = "unavailable"

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: int = 5,
        field: str | None = None,
        errors: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message, field=field, errors=errors)
        self.retry_after_s = retry_after_s


class BodyTooLarge(PayloadTooLarge):
    """A request body over the API's limit, refused before it is read or parsed (core/infra/middleware.py)."""

    code = "body_too_large"

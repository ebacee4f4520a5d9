"""The health checks' API shapes: a check in (one shape per kind), a change to one, a ping, and checks, results
and runs out."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, StringConstraints, field_validator

from core.api.schemas import Page
from core.slugs import Slug
from recovery.breakers.schemas import sent_or_left_out
from recovery.calls import outbound
from recovery.errors.schemas import Reason

if TYPE_CHECKING:
    from healing.checks.models import HealthCheck, HealthCheckResult
    from healing.checks.services import Recorded

# What the API answers has exactly these fields (additionalProperties: false in the schema).
OUT = ConfigDict(extra="forbid")
IN = ConfigDict(extra="forbid")

KindName = Literal["http", "tcp", "heartbeat", "celery"]
StateName = Literal["unknown", "healthy", "unhealthy"]
SourceName = Literal["scheduled", "manual", "ping", "verification"]
Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]  # outbound.METHODS

Description = Annotated[str, StringConstraints(max_length=10_000)]
Interval = Annotated[
    float,
    Field(ge=1, le=86_400, allow_inf_nan=False, description="Seconds between runs (1 to 86,400)."),
]
Timeout = Annotated[
    float,
    Field(
        ge=0.1,
        le=120,
        allow_inf_nan=False,
        description="Seconds a run may take (0.1 to 120; an http or tcp run at most OUTBOUND_MAX_TIMEOUT_SECONDS); "
        "for http, tcp and celery checks at most interval_s.",
    ),
]
Rise = Annotated[int, Field(ge=1, le=100, description="Passes in a row that make the check healthy.")]
Fall = Annotated[int, Field(ge=1, le=100, description="Failures in a row that make the check unhealthy.")]
Url = Annotated[
    str,
    StringConstraints(min_length=1, max_length=2000, pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s]+$"),
    Field(
        description="http checks: the URL to call, http or https, whose host and port OUTBOUND_ALLOWED_HOSTS "
        "allows (else 400 naming `url`)."
    ),
]
StatusCode = Annotated[int, Field(ge=100, le=599)]
ExpectedStatus = Annotated[
    list[StatusCode],
    Field(
        max_length=100, description="http checks: the status codes that pass; empty (the default): any 2xx."
    ),
]
BodyContains = Annotated[
    str,
    StringConstraints(max_length=1000),
    Field(description="http checks: text the body must contain (a JSON body is searched as JSON text)."),
]
Host = Annotated[
    str,
    StringConstraints(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.:\[\]-]+$"),
    Field(
        description="tcp checks: a host name or an IP address that OUTBOUND_ALLOWED_HOSTS allows with the port."
    ),
]
Port = Annotated[
    int, Field(ge=1, le=65535, description="tcp checks: the port that must accept a connection.")
]
Queue = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:@/-]+$"),
    Field(description="celery checks: the queue whose workers must answer a ping within the timeout."),
]
Grace = Annotated[
    float,
    Field(
        ge=0,
        le=86_400,
        allow_inf_nan=False,
        description="heartbeat checks: seconds past interval_s a ping may be late before the silence fails.",
    ),
]


# --- input ---------------------------------------------------------------------------------------------------


class CheckInBase(BaseModel):
    model_config = IN

    name: Slug = Field(description="The check's name: a lower-case slug, unique.")
    service: Slug = Field(description="The service it watches: its breaker's name.")
    description: Description = ""
    interval_s: Interval = 30.0
    timeout_s: Timeout = 5.0
    rise: Rise = 2
    fall: Fall = 3
    enabled: bool = Field(default=True, description="A disabled check is not run, and takes no pings.")
    drives_breaker: bool = Field(
        default=False,
        description="Whether its verdict opens the service's breaker (unhealthy) and half-opens it (healthy).",
    )
    reason: Reason


class HttpCheckIn(CheckInBase):
    """An http check: the URL answers with an expected status (and text) within the timeout."""

    kind: Literal["http"]
    method: Method = "GET"
    url: Url
    expected_status: ExpectedStatus = Field(default_factory=list)
    body_contains: BodyContains = ""


class TcpCheckIn(CheckInBase):
    """A tcp check: the host accepts a connection on the port within the timeout."""

    kind: Literal["tcp"]
    host: Host
    port: Port


class CeleryCheckIn(CheckInBase):
    """A celery check: a worker consuming the queue answers a ping within the timeout."""

    kind: Literal["celery"]
    queue: Queue


class HeartbeatCheckIn(CheckInBase):
    """A heartbeat check: something outside pings it; no ping within interval_s + grace_s is a failure."""

    kind: Literal["heartbeat"]
    grace_s: Grace = 0.0


CHECK_IN_BY_KIND: dict[str, type[CheckInBase]] = {
    "http": HttpCheckIn,
    "tcp": TcpCheckIn,
    "celery": CeleryCheckIn,
    "heartbeat": HeartbeatCheckIn,
}


class HealthCheckIn(RootModel[HttpCheckIn | TcpCheckIn | CeleryCheckIn | HeartbeatCheckIn]):
    """A new health check (operators; audited): the common fields, `kind`, and the fields of that kind. A field
    of another kind is refused (400 naming it)."""

    root: Annotated[HttpCheckIn | TcpCheckIn | CeleryCheckIn | HeartbeatCheckIn, Field(discriminator="kind")]


class KindIn(BaseModel):
    """The kind of a new check, read first to choose its shape (a missing or unknown kind is a 400 naming it)."""

    model_config = ConfigDict(extra="ignore")
    kind: KindName


def refuse_null(value: Any) -> Any:
    """A PATCH field is left out (kept) or sent with a value: null is refused, naming the field."""
    if value is None:
        raise ValueError("leave the field out to keep it; it cannot be null")
    return value


class HealthCheckPatchIn(BaseModel):
    """A change to a check (operators; audited): only the fields sent change; `reason` is required. Changing
    `kind` needs the new kind's fields (the old kind's are cleared); a field of a kind other than the check's
    is refused (400 naming it)."""

    # The schema says a field is never null (no `null` among its types, no default), as the breakers' do.
    model_config = ConfigDict(extra="forbid", json_schema_extra=sent_or_left_out)

    name: Slug | None = None
    service: Slug | None = None
    kind: KindName | None = None
    description: Description | None = None
    interval_s: Interval | None = None
    timeout_s: Timeout | None = None
    rise: Rise | None = None
    fall: Fall | None = None
    enabled: bool | None = None
    drives_breaker: bool | None = None
    method: Method | None = None
    url: Url | None = None
    expected_status: ExpectedStatus | None = None
    body_contains: BodyContains | None = None
    host: Host | None = None
    port: Port | None = None
    queue: Queue | None = None
    grace_s: Grace | None = None
    reason: Reason

    _not_null = field_validator("*", mode="before")(refuse_null)


class HealthPingIn(BaseModel):
    """A heartbeat's ping; the body is optional (an empty one is an ok ping)."""

    model_config = IN

    status: Literal["ok", "fail"] = Field(default="ok", description="fail records a failing result.")
    message: Annotated[str, StringConstraints(max_length=2000)] = Field(
        default="", description="What failed (kept as the result's error when status is fail)."
    )


# --- output --------------------------------------------------------------------------------------------------


class HealthResultOut(BaseModel):
    """One run of a check, one ping, or one silence of a heartbeat check."""

    model_config = OUT

    id: int
    ok: bool
    latency_ms: float | None = Field(description="How long the probe took; null for pings and silences.")
    status_code: int | None = Field(description="http checks: the status answered.")
    error: str = Field(description="Why it failed (empty when ok).")
    source: SourceName = Field(
        description="scheduled (the dispatcher), manual (an operator), ping, or verification (a healing run)."
    )
    due_at: datetime | None = Field(description="The due time this run answered (runs sent to workers).")
    started_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, result: HealthCheckResult) -> HealthResultOut:
        return cls.model_construct(
            id=result.pk,
            ok=result.ok,
            latency_ms=result.latency_ms,
            status_code=result.status_code,
            error=result.error,
            source=result.source,
            due_at=result.due_at,
            started_at=result.started_at,
            created_at=result.created_at,
        )


class HealthCheckOut(BaseModel):
    """A health check: its settings (a field of another kind holds its default), its state and streaks, its
    newest result and when it runs next."""

    model_config = OUT

    id: int
    name: str
    service: str
    kind: KindName
    description: str
    interval_s: float
    timeout_s: float
    rise: int
    fall: int
    enabled: bool
    drives_breaker: bool
    method: str
    url: str = Field(description="Secret-looking query values are shown as [redacted].")
    expected_status: list[int]
    body_contains: str
    host: str
    port: int | None
    queue: str
    grace_s: float
    state: StateName
    consecutive_passes: int
    consecutive_failures: int
    last_result: HealthResultOut | None
    next_due_at: datetime | None = Field(
        description="When the next run is due (heartbeat checks: when silence becomes a failure)."
    )
    last_ping_at: datetime | None
    state_changed_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, check: HealthCheck, last: HealthCheckResult | None) -> HealthCheckOut:
        return cls.model_construct(
            id=check.pk,
            name=check.name,
            service=check.service,
            kind=check.kind,
            description=check.description,
            interval_s=float(check.interval_s),
            timeout_s=float(check.timeout_s),
            rise=check.rise,
            fall=check.fall,
            enabled=check.enabled,
            drives_breaker=check.drives_breaker,
            method=check.method,
            url=outbound.redact_url(check.url),
            expected_status=list(check.expected_status or []),
            body_contains=check.body_contains,
            host=check.host,
            port=check.port,
            queue=check.queue,
            grace_s=float(check.grace_s),
            state=check.state,
            consecutive_passes=check.consecutive_passes,
            consecutive_failures=check.consecutive_failures,
            last_result=HealthResultOut.of(last) if last is not None else None,
            next_due_at=check.next_due_at,
            last_ping_at=check.last_ping_at,
            state_changed_at=check.state_changed_at,
            created_at=check.created_at,
            updated_at=check.updated_at,
        )


class HealthRunOut(BaseModel):
    """A run's (or a ping's) result, and the check after it."""

    model_config = OUT

    result: HealthResultOut
    check: HealthCheckOut

    @classmethod
    def of(cls, recorded: Recorded) -> HealthRunOut:
        return cls.model_construct(
            result=HealthResultOut.of(recorded.result),
            check=HealthCheckOut.of(recorded.check, recorded.result),
        )


class HealthCheckPage(Page[HealthCheckOut]):
    """One page of health checks, by name."""


class HealthResultPage(Page[HealthResultOut]):
    """One page of a check's results, newest first."""


class HealthCheckQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")  # page and page_size belong to the paginator
    service: Slug | None = Field(default=None, description="Only the checks of this service.")
    state: StateName | None = Field(default=None, description="Only the checks in this state.")
    kind: KindName | None = Field(default=None, description="Only the checks of this kind.")

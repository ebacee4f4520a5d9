"""The notifications' API shapes: a channel in (and a change to one) and out, with its URL masked; a silence in
and out; and the lists' filters."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal

from django.utils import timezone
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from core.api.schemas import Moment, Page
from core.slugs import SLUG, Slug
from healing.checks.schemas import refuse_null
from healing.notifications import sender
from recovery.breakers.schemas import sent_or_left_out
from recovery.errors.schemas import Reason

if TYPE_CHECKING:
    from healing.notifications.models import NotificationChannel, Silence

# What the API answers has exactly these fields (additionalProperties: false in the schema).
OUT = ConfigDict(extra="forbid")
IN = ConfigDict(extra="forbid")

LevelName = Literal["info", "warning", "critical", "emergency"]  # healing.escalations.models.Level

Name = Annotated[Slug, Field(description="The channel's name: a lower-case slug, unique.")]
Url = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=2000, strip_whitespace=True, pattern=r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$"
    ),
    Field(
        description="An apprise URL (https://github.com/caronc/apprise/wiki): slack://…, pagerduty://…, "
        "opsgenie://…, mailto://…, json://host/path, …. apprise must understand it, and a webhook's host "
        "(json://, xml://, form:// and jsons://, xmls://, forms://) must be in OUTBOUND_ALLOWED_HOSTS (else 400 "
        "naming `url`). Secret: never shown back in full.",
        examples=["json://hooks.example.com/rebound", "slack://T0000/B0000/XXXXXXXX"],
    ),
]
MinLevel = Annotated[
    LevelName,
    Field(description="The lowest level the channel is told of: info, warning, critical, emergency."),
]
Services = Annotated[
    list[Slug],
    Field(max_length=100, description="Only escalations of these services; empty: every service."),
]


# --- channels ----------------------------------------------------------------------------------------------


class NotificationChannelIn(BaseModel):
    """A new channel (operators; audited)."""

    model_config = IN

    name: Name
    url: Url
    min_level: MinLevel = "warning"
    services: Services = Field(default_factory=list)
    enabled: bool = Field(default=True, description="A disabled channel is told nothing.")
    reason: Reason


class NotificationChannelPatchIn(BaseModel):
    """A change to a channel (operators; audited): only the fields sent change; `reason` is required."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=sent_or_left_out)

    name: Name | None = None
    url: Url | None = None
    min_level: MinLevel | None = None
    services: Services | None = None
    enabled: bool | None = None
    reason: Reason

    _not_null = field_validator("*", mode="before")(refuse_null)


class NotificationChannelOut(BaseModel):
    """A channel: where escalations of a level and services go. Its URL is masked."""

    model_config = OUT

    id: int
    name: str
    url: str = Field(
        description="The URL masked: its scheme, and for a webhook its host; never credentials, tokens, path or "
        "query (`json://hooks.example.com/…`, `slack://…`).",
        examples=["json://127.0.0.1:…/…"],
    )
    scheme: str = Field(description="The apprise scheme: which service the channel tells.")
    min_level: LevelName
    services: list[str]
    enabled: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, channel: NotificationChannel) -> NotificationChannelOut:
        return cls.model_construct(
            id=channel.pk,
            name=channel.name,
            url=sender.mask(channel.url),
            scheme=sender.scheme_of(channel.url),
            min_level=channel.min_level,
            services=list(channel.services or []),
            enabled=channel.enabled,
            created_at=channel.created_at,
            updated_at=channel.updated_at,
        )


class NotificationChannelPage(Page[NotificationChannelOut]):
    """One page of channels, by name."""


class NotificationChannelQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")  # page and page_size belong to the paginator
    enabled: bool | None = Field(
        default=None, description="Only enabled (true) or disabled (false) channels."
    )


# --- silences ----------------------------------------------------------------------------------------------


def _in_the_future(value: datetime) -> datetime:
    # The service checks it again against its own clock; this names the field before anything else is read.
    if value <= timezone.now():
        raise ValueError("must be in the future")
    return value


# A service's name, or blank for every service.
SilenceService = Annotated[str, StringConstraints(max_length=100, pattern=f"^$|{SLUG}")]


class SilenceIn(BaseModel):
    """A new silence (reviewers and operators; audited): from now until `ends_at`."""

    model_config = IN

    service: SilenceService = Field(
        default="", description="Only this service's escalations; blank: every one."
    )
    level: Literal["", "info", "warning", "critical", "emergency"] = Field(
        default="", description="Escalations at this level or below; blank: every level."
    )
    ends_at: Annotated[Moment, AfterValidator(_in_the_future)] = Field(
        description="When it ends by itself: a moment in the future (RFC 3339)."
    )
    reason: Reason


class SilenceOut(BaseModel):
    """A silence: what it mutes, from when to when, who set it and why, and whether it ended early."""

    model_config = OUT

    id: int
    service: str = Field(description="Blank: every service.")
    level: str = Field(description="Escalations at this level or below; blank: every level.")
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str | None = Field(description="Who set it (a username).")
    created_at: datetime
    ended_at: datetime | None = Field(description="When it was ended early (DELETE), if it was.")
    ended_by: str | None
    active: bool = Field(description="Whether it is in force now.")

    @classmethod
    def of(cls, silence: Silence, now: datetime) -> SilenceOut:
        return cls.model_construct(
            id=silence.pk,
            service=silence.service,
            level=silence.level,
            starts_at=silence.starts_at,
            ends_at=silence.ends_at,
            reason=silence.reason,
            created_by=silence.created_by.get_username() if silence.created_by else None,
            created_at=silence.created_at,
            ended_at=silence.ended_at,
            ended_by=silence.ended_by.get_username() if silence.ended_by else None,
            active=silence.ended_at is None and silence.starts_at <= now < silence.ends_at,
        )


class SilencePage(Page[SilenceOut]):
    """One page of silences, newest first."""


class SilenceQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")  # page and page_size belong to the paginator
    all: bool = Field(default=False, description="Every silence, ended and expired ones too (history).")
    service: Slug | None = Field(default=None, description="Only the silences of this service.")

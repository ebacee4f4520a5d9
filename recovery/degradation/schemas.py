"""The degradation API's input and output shapes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

from django.utils import timezone
from pydantic import BaseModel, ConfigDict, Field, RootModel, StringConstraints

from core.api.errors import InvalidInput
from core.api.schemas import Page
from recovery.breakers.schemas import Expiry

if TYPE_CHECKING:
    from recovery.degradation.models import DegradationEvent
    from recovery.degradation.selectors import LevelView, Overview, ScopeState, ServiceLevel

SCOPE = r"^(\*|[a-z0-9][a-z0-9_.:-]{0,99})$"
Scope = Annotated[str, StringConstraints(pattern=SCOPE)]
Reason = Annotated[
    str, StringConstraints(min_length=1, max_length=2000, strip_whitespace=True, pattern=r"\S")
]
LevelName = Literal["normal", "degraded", "minimal", "emergency"]
SkipFrom = Literal["normal", "degraded", "minimal", "emergency", "never"]
MAX_TTL_S = 30 * 86_400
# What the API answers has exactly these fields (additionalProperties: false in the schema).
OUT = ConfigDict(extra="forbid")


# --- Input -------------------------------------------------------------------------------------------------


class ForceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scope: Scope = Field(description="'*' for the fleet, or a service's name.")
    level: LevelName = Field(description="normal pins the scope at normal whatever the rules say.")
    reason: Reason
    expires_at: Expiry | None = Field(
        default=None, description="When the forced level ends (with an offset)."
    )
    ttl_s: float | None = Field(
        default=None,
        gt=0,
        le=MAX_TTL_S,
        allow_inf_nan=False,
        description="Or: how many seconds from now it ends (at most 2,592,000: 30 days).",
    )

    def ends_at(self) -> datetime | None:
        """When the forced level ends: expires_at, or ttl_s from now; both given is refused, naming ttl_s."""
        if self.expires_at is not None and self.ttl_s is not None:
            raise InvalidInput("give expires_at or ttl_s, not both", field="ttl_s")
        if self.ttl_s is not None:
            return timezone.now() + timedelta(seconds=self.ttl_s)
        return self.expires_at


class ClearIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scope: Scope
    reason: Reason


class DegradationEventQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")  # page and page_size belong to the paginator
    scope: Scope | None = Field(default=None, description="Only this scope: '*' for the fleet, or a service.")


# --- Output --------------------------------------------------------------------------------------------------


class LevelOut(BaseModel):
    model_config = OUT
    scope: str
    level: LevelName
    source: Literal["automatic", "operator"]
    reason: str
    since: datetime | None
    until: datetime | None = Field(description="When an operator's level ends; null: until cleared.")

    @classmethod
    def of(cls, view: LevelView) -> LevelOut:
        return cls.model_construct(**_level_fields(view))


class SkipOut(BaseModel):
    model_config = OUT
    service: str
    criticality: str
    level: LevelName
    skip_from: SkipFrom


class OverviewOut(LevelOut):
    services: list[LevelOut] = Field(description="Every service whose own level is not normal.")
    skip: list[SkipOut] = Field(description="Services agents should skip now, non-critical first.")

    @classmethod
    def of_overview(cls, o: Overview) -> OverviewOut:
        return cls.model_construct(
            **_level_fields(o.fleet),
            services=[LevelOut.of(view) for view in o.services],
            skip=[
                SkipOut.model_construct(
                    service=s.service, criticality=s.criticality, level=s.level, skip_from=s.skip_from
                )
                for s in o.skip
            ],
        )


class ServiceLevelOut(BaseModel):
    """One service's level in force: the worse of the fleet's and its own."""

    model_config = OUT

    service: str
    criticality: str
    scope: str = Field(description="Whose level this is: '*' (the fleet's) or the service's own.")
    level: LevelName
    source: Literal["automatic", "operator"]
    reason: str
    since: datetime | None
    until: datetime | None
    skip: bool = Field(description="Whether agents should skip the service now.")
    skip_from: SkipFrom

    @classmethod
    def of(cls, s: ServiceLevel) -> ServiceLevelOut:
        return cls.model_construct(
            service=s.service,
            criticality=s.criticality,
            **_level_fields(s.level),
            skip=s.skip,
            skip_from=s.skip_from,
        )


def _level_fields(view: LevelView) -> dict[str, Any]:
    """A level in force as the fields LevelOut, OverviewOut and ServiceLevelOut share."""
    return {
        "scope": view.scope,
        "level": view.level,
        "source": view.source,
        "reason": view.reason,
        "since": view.since,
        "until": view.until,
    }


class DegradationOut(RootModel[OverviewOut | ServiceLevelOut]):
    """GET /degradation: without `service`, the whole picture (OverviewOut: the fleet's level, the services with
    a level of their own, what to skip); with `?service=<name>`, that one service's level (ServiceLevelOut)."""


class AutomaticOut(BaseModel):
    model_config = OUT
    level: LevelName
    reason: str
    pending_level: LevelName | None = Field(description="A lower level waiting out the recovery time.")
    pending_since: datetime | None


class ForcedOut(BaseModel):
    model_config = OUT
    level: LevelName
    reason: str
    until: datetime | None
    by: str | None
    in_force: bool = Field(description="False once `until` has passed (cleared within 10 s).")


class StateOut(LevelOut):
    automatic: AutomaticOut
    forced: ForcedOut | None

    @classmethod
    def of_state(cls, s: ScopeState) -> StateOut:
        view, state = s.view, s.state
        forced = None
        if state is not None and state.forced_level:
            forced = ForcedOut.model_construct(
                level=state.forced_level,
                reason=state.forced_reason,
                until=state.forced_until,
                by=state.forced_by.get_username() if state.forced_by else None,
                in_force=s.forced_in_force,
            )
        return cls.model_construct(
            scope=view.scope,
            level=view.level,
            source=view.source,
            reason=view.reason,
            since=view.since,
            until=view.until,
            automatic=AutomaticOut.model_construct(
                level=state.automatic_level if state else "normal",
                reason=state.automatic_reason if state else "",
                pending_level=(state.pending_level or None) if state else None,
                pending_since=state.pending_since if state else None,
            ),
            forced=forced,
        )


class DegradationEventOut(BaseModel):
    model_config = OUT
    id: int
    scope: str
    from_level: LevelName
    to_level: LevelName
    source: Literal["automatic", "operator", "expiry"]
    reason: str
    actor: str | None = Field(description="The operator who forced or cleared the level; null otherwise.")
    expires_at: datetime | None
    signals: dict[str, Any] = Field(
        description="What the rules saw: breakers open, errors per minute, the rules that matched."
    )
    created_at: datetime

    @classmethod
    def of(cls, event: DegradationEvent) -> DegradationEventOut:
        return cls.model_construct(
            id=event.pk,
            scope=event.scope,
            from_level=event.from_level,
            to_level=event.to_level,
            source=event.source,
            reason=event.reason,
            actor=event.actor_user.get_username() if event.actor_user else None,
            expires_at=event.expires_at,
            signals=event.signals,
            created_at=event.created_at,
        )


class DegradationEventPage(Page[DegradationEventOut]):
    """One page of degradation events (a named subclass: `Page[...]` is no valid OpenAPI component name)."""

"""The degradation API: the level in force and what to skip (every principal), forcing and clearing a level
(operators; audited), and the history of changes. Views parse input, call one service or selector, and answer."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter
from rest_framework import generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.access.permissions import IsOperator, ReadOrOperator
from core.api.errors import InvalidInput
from core.api.validation import parse
from core.audit.services import Actor
from recovery.breakers import selectors as breaker_selectors
from recovery.degradation import selectors
from recovery.degradation import services as degradation_services
from recovery.degradation.models import DegradationEvent

SCOPE = r"^(\*|[a-z0-9][a-z0-9_.:-]{0,99})$"
_SCOPE = re.compile(SCOPE)
Scope = Annotated[str, StringConstraints(pattern=SCOPE)]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=2000, strip_whitespace=True)]
LevelName = Literal["normal", "degraded", "minimal", "emergency"]
MAX_TTL_S = 30 * 86_400


class ForceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scope: Scope = Field(description="'*' for the fleet, or a service's name.")
    level: LevelName = Field(description="normal pins the scope at normal whatever the rules say.")
    reason: Reason
    expires_at: AwareDatetime | None = Field(default=None, description="When the forced level ends.")
    ttl_s: float | None = Field(
        default=None, gt=0, le=MAX_TTL_S, description="Or: how many seconds from now it ends."
    )


class ClearIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scope: Scope
    reason: Reason


class LevelOut(BaseModel):
    scope: str
    level: LevelName
    source: Literal["automatic", "operator"]
    reason: str
    since: datetime | None
    until: datetime | None = Field(description="When an operator's level ends; null: until cleared.")


class SkipOut(BaseModel):
    service: str
    criticality: str
    level: LevelName
    skip_from: str


class OverviewOut(LevelOut):
    services: list[LevelOut] = Field(description="Every service whose own level is not normal.")
    skip: list[SkipOut] = Field(description="Services agents should skip now, non-critical first.")


class ServiceLevelOut(LevelOut):
    service: str
    criticality: str
    skip: bool
    skip_from: str


class AutomaticOut(BaseModel):
    level: LevelName
    reason: str
    pending_level: LevelName | None = Field(description="A lower level waiting out the recovery time.")
    pending_since: datetime | None


class ForcedOut(BaseModel):
    level: LevelName
    reason: str
    until: datetime | None
    by: str | None
    in_force: bool = Field(description="False once `until` has passed (cleared within 10 s).")


class StateOut(LevelOut):
    automatic: AutomaticOut
    forced: ForcedOut | None


_FORCE = TypeAdapter(ForceIn)
_CLEAR = TypeAdapter(ClearIn)

SINCE = "2026-11-22T09:00:00Z"
REASON = "rule “essential breaker open” (degraded): 1 essential breaker(s) open (openai), threshold 1"
OVERVIEW_EXAMPLE = {
    "scope": "*",
    "level": "degraded",
    "source": "automatic",
    "reason": REASON,
    "since": SINCE,
    "until": None,
    "services": [
        {
            "scope": "openai",
            "level": "degraded",
            "source": "automatic",
            "reason": "rule “service breaker open” (degraded): the breaker of openai is open, threshold 1",
            "since": SINCE,
            "until": None,
        }
    ],
    "skip": [
        {"service": "web-search", "criticality": "non_critical", "level": "degraded", "skip_from": "degraded"}
    ],
}
SERVICE_EXAMPLE = {
    "service": "web-search",
    "criticality": "non_critical",
    "scope": "*",
    "level": "minimal",
    "source": "operator",
    "reason": "forced to minimal by user:alice: provider incident INC-42",
    "since": SINCE,
    "until": "2026-11-22T12:00:00Z",
    "skip": True,
    "skip_from": "minimal",
}
STATE_EXAMPLE = {
    "scope": "*",
    "level": "minimal",
    "source": "operator",
    "reason": "provider incident INC-42",
    "since": SINCE,
    "until": "2026-11-22T12:00:00Z",
    "automatic": {"level": "degraded", "reason": REASON, "pending_level": None, "pending_since": None},
    "forced": {
        "level": "minimal",
        "reason": "provider incident INC-42",
        "until": "2026-11-22T12:00:00Z",
        "by": "alice",
        "in_force": True,
    },
}


def _expiry(body: ForceIn) -> datetime | None:
    if body.expires_at is not None and body.ttl_s is not None:
        raise InvalidInput("give expires_at or ttl_s, not both", field="ttl_s")
    if body.ttl_s is not None:
        return timezone.now() + timedelta(seconds=body.ttl_s)
    return body.expires_at


class DegradationView(APIView):
    permission_classes = [ReadOrOperator]

    @extend_schema(
        operation_id="get_degradation",
        summary="The degradation level in force, and which services to skip",
        description="Without `service`: the fleet's level (with its source, reason, since and until), every "
        "service whose own level is not normal, and `skip`: the services agents should skip at the levels in "
        "force, non-critical first. With `service`: that service's level, the worse of the fleet's and its own.",
        parameters=[
            OpenApiParameter(
                "service",
                str,
                description="One service's level instead of the whole picture.",
                examples=[OpenApiExample("A service", value="web-search")],
            )
        ],
        responses={200: OverviewOut},
        examples=[
            OpenApiExample("The fleet", value=OVERVIEW_EXAMPLE, response_only=True),
            OpenApiExample("One service (?service=web-search)", value=SERVICE_EXAMPLE, response_only=True),
        ],
    )
    def get(self, request: Request) -> Response:
        name = request.query_params.get("service")
        if name is not None:
            return Response(selectors.for_service(breaker_selectors.known_service(name)))
        return Response(selectors.overview())

    @extend_schema(
        operation_id="force_degradation",
        summary="Force a degradation level on the fleet or a service (operators; audited)",
        description="The forced level wins over the automatic one until `expires_at` (or `ttl_s` seconds from "
        "now), or until cleared; `normal` pins the scope at normal. Answers the scope's state.",
        request=ForceIn,
        responses={200: StateOut},
        examples=[
            OpenApiExample(
                "Minimal for two hours",
                value={"scope": "*", "level": "minimal", "reason": "provider incident INC-42", "ttl_s": 7200},
                request_only=True,
            ),
            OpenApiExample(
                "One service, until a time",
                value={
                    "scope": "web-search",
                    "level": "emergency",
                    "reason": "quota exhausted",
                    "expires_at": "2026-11-22T12:00:00Z",
                },
                request_only=True,
            ),
            OpenApiExample("The state after", value=STATE_EXAMPLE, response_only=True),
        ],
    )
    def post(self, request: Request) -> Response:
        body = parse(_FORCE, request.data if isinstance(request.data, dict) else None)
        degradation_services.force(
            scope=body.scope,
            level=body.level,
            reason=body.reason,
            expires_at=_expiry(body),
            actor=Actor.from_request(request),
        )
        return Response(selectors.state_json(body.scope))


class ClearView(APIView):
    permission_classes = [IsOperator]

    @extend_schema(
        operation_id="clear_degradation",
        summary="End an operator's level: the scope returns to its automatic level (operators; audited)",
        request=ClearIn,
        responses={200: StateOut},
        examples=[
            OpenApiExample(
                "Clear the fleet",
                value={"scope": "*", "reason": "INC-42 resolved"},
                request_only=True,
            ),
            OpenApiExample(
                "The state after",
                value={
                    **STATE_EXAMPLE,
                    "level": "degraded",
                    "source": "automatic",
                    "reason": REASON,
                    "until": None,
                    "forced": None,
                },
                response_only=True,
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        body = parse(_CLEAR, request.data if isinstance(request.data, dict) else None)
        degradation_services.clear(scope=body.scope, reason=body.reason, actor=Actor.from_request(request))
        return Response(selectors.state_json(body.scope))


class EventSerializer(serializers.ModelSerializer[DegradationEvent]):
    actor = serializers.SerializerMethodField()

    class Meta:
        model = DegradationEvent
        fields = [
            "id",
            "scope",
            "from_level",
            "to_level",
            "source",
            "reason",
            "actor",
            "expires_at",
            "signals",
            "created_at",
        ]
        read_only_fields = fields

    def get_actor(self, event: DegradationEvent) -> str | None:
        return event.actor_user.get_username() if event.actor_user else None


EVENT_EXAMPLE = {
    "id": 7,
    "scope": "*",
    "from_level": "normal",
    "to_level": "degraded",
    "source": "automatic",
    "reason": REASON,
    "actor": None,
    "expires_at": None,
    "signals": {
        "essential_breakers_open": 1,
        "breakers_open": 1,
        "errors_per_minute": 4.2,
        "open": ["openai"],
        "essential_open": ["openai"],
        "unknown": [],
        "rules": [
            {
                "rule": "essential breaker open",
                "signal": "essential_breakers_open",
                "value": 1.0,
                "threshold": 1.0,
                "level": "degraded",
            }
        ],
    },
    "created_at": SINCE,
}


class EventListView(generics.ListAPIView):  # type: ignore[type-arg]
    serializer_class = EventSerializer

    @extend_schema(
        operation_id="list_degradation_events",
        summary="Every change of a degradation level, newest first",
        parameters=[
            OpenApiParameter(
                "scope",
                str,
                description="Only this scope: '*' for the fleet, or a service.",
                examples=[OpenApiExample("The fleet", value="*")],
            )
        ],
        examples=[
            OpenApiExample(
                "A page",
                value={"count": 1, "next": None, "previous": None, "results": [EVENT_EXAMPLE]},
                response_only=True,
            )
        ],
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> Any:
        scope = self.request.query_params.get("scope") or None
        if scope is not None and not _SCOPE.match(scope):
            raise InvalidInput("a scope is '*' (the fleet) or a service's name", field="scope")
        return selectors.events(scope)

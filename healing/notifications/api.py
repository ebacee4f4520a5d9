"""The notifications API: channels (operators only, reads too: a channel's URL is a secret, shown masked, and its
routing is theirs to set; every write audited with a reason) and silences (reviewers and operators: set one,
end one early, list those in force or every one). Views parse input, call one service or selector, and shape
the answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from pydantic import BaseModel, TypeAdapter
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.access.permissions import IsOperator, IsReviewer
from core.api.errors import InvalidInput
from core.api.pagination import Pagination
from core.api.schemas import answers, query_parameters
from core.api.validation import parse
from core.audit.services import Actor
from healing.notifications import selectors, services
from healing.notifications.schemas import (
    NotificationChannelIn,
    NotificationChannelOut,
    NotificationChannelPage,
    NotificationChannelPatchIn,
    NotificationChannelQuery,
    SilenceIn,
    SilenceOut,
    SilencePage,
    SilenceQuery,
)
from recovery.errors.schemas import ReasonIn

_CREATE = TypeAdapter(NotificationChannelIn)
_PATCH = TypeAdapter(NotificationChannelPatchIn)
_CHANNELS = TypeAdapter(NotificationChannelQuery)
_SILENCE = TypeAdapter(SilenceIn)
_SILENCES = TypeAdapter(SilenceQuery)
_REASON = TypeAdapter(ReasonIn)

AT = "2026-12-03T09:00:00Z"
CHANNEL_EXAMPLE: dict[str, Any] = {
    "id": 2,
    "name": "oncall-webhook",
    "url": "json://hooks.example.com/…",
    "scheme": "json",
    "min_level": "critical",
    "services": ["payments", "openai"],
    "enabled": True,
    "created_at": AT,
    "updated_at": AT,
}
SILENCE_EXAMPLE: dict[str, Any] = {
    "id": 7,
    "service": "search",
    "level": "warning",
    "starts_at": AT,
    "ends_at": "2026-12-03T11:00:00Z",
    "reason": "index rebuild until 11:00 (CHG-204): warnings expected",
    "created_by": "alice",
    "created_at": AT,
    "ended_at": None,
    "ended_by": None,
    "active": True,
}


def _id_path(name: str, what: str) -> OpenApiParameter:
    return OpenApiParameter(
        name,
        {"type": "string"},
        OpenApiParameter.PATH,
        description=f"The {what}'s id.",
        examples=[OpenApiExample(f"A {what}", value="2")],
    )


CHANNEL_ID = _id_path("channel_id", "channel")
SILENCE_ID = _id_path("silence_id", "silence")
REASON_PARAMETER = OpenApiParameter(
    "reason",
    {"type": "string", "minLength": 1, "maxLength": 2000, "pattern": r"\S"},
    description="Why (required): as this parameter or as `reason` in a JSON body.",
    examples=[OpenApiExample("Why", value="the team moved to another pager")],
)


def _body(request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise InvalidInput("The body must be a JSON object.", field="body")
    return dict(request.data)


def _query(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.query_params.dict().items() if v}


def _reason(request: Request) -> str:
    """A DELETE's reason: `reason` in a JSON body, or the `reason` query parameter."""
    body = request.data if isinstance(request.data, dict) else {}
    given = body.get("reason") or request.query_params.get("reason") or ""
    return parse(_REASON, {"reason": given}).reason


def _page(view: APIView, request: Request, found: Any, shape: Callable[[Any], BaseModel]) -> Response:
    paginator = Pagination()
    page: list[Any] = paginator.paginate_queryset(found, request, view=view) or []
    return paginator.get_paginated_response([shape(row).model_dump() for row in page])


def _channel(channel: Any) -> dict[str, Any]:
    return NotificationChannelOut.of(channel).model_dump()


# --- channels ----------------------------------------------------------------------------------------------


class ChannelListView(APIView):
    permission_classes = [IsOperator]

    @extend_schema(
        operation_id="list_notification_channels",
        summary="Notification channels by name (operators), their URLs masked",
        parameters=query_parameters(NotificationChannelQuery, paged=True),
        responses=answers({200: NotificationChannelPage}, 400, 403),
        examples=[
            OpenApiExample(
                "A page",
                value={"count": 1, "next": None, "previous": None, "results": [CHANNEL_EXAMPLE]},
                response_only=True,
            )
        ],
    )
    def get(self, request: Request) -> Response:
        query = parse(_CHANNELS, _query(request))
        return _page(self, request, selectors.channels(enabled=query.enabled), NotificationChannelOut.of)

    @extend_schema(
        operation_id="create_notification_channel",
        summary="Add a notification channel (operators; audited)",
        description="Escalations at `min_level` or above, of one of `services` (empty: any), are sent to the "
        "apprise URL once per change (raised, level rose, reopened), unless a silence is in force. The URL "
        "must be one apprise understands; a webhook's host must be in OUTBOUND_ALLOWED_HOSTS. Each problem is "
        "a 400 naming its field.",
        request=NotificationChannelIn,
        responses=answers(
            {201: NotificationChannelOut},
            400,
            403,
            (409, "A channel with this name was created by another request meanwhile."),
        ),
        examples=[
            OpenApiExample(
                "A JSON webhook for critical escalations of two services",
                value={
                    "name": "oncall-webhook",
                    "url": "json://hooks.example.com/rebound",
                    "min_level": "critical",
                    "services": ["payments", "openai"],
                    "reason": "the on-call bridge takes JSON",
                },
                request_only=True,
            ),
            OpenApiExample(
                "Slack, every warning and above",
                value={
                    "name": "slack-ops",
                    "url": "slack://T0000AAAA/B0000BBBB/abcdefghijklmnopqrstuvwx/#ops",
                    "reason": "the ops channel",
                },
                request_only=True,
            ),
            OpenApiExample("The channel", value=CHANNEL_EXAMPLE, response_only=True),
        ],
    )
    def post(self, request: Request) -> Response:
        body = parse(_CREATE, _body(request))
        channel = services.create_channel(
            data=body.model_dump(exclude={"reason"}), actor=Actor.from_request(request), reason=body.reason
        )
        return Response(_channel(channel), status=status.HTTP_201_CREATED)


class ChannelDetailView(APIView):
    permission_classes = [IsOperator]

    @extend_schema(
        operation_id="get_notification_channel",
        summary="One notification channel (operators), its URL masked",
        parameters=[CHANNEL_ID],
        responses=answers({200: NotificationChannelOut}, 403, 404),
        examples=[OpenApiExample("A channel", value=CHANNEL_EXAMPLE, response_only=True)],
    )
    def get(self, request: Request, channel_id: str) -> Response:
        return Response(_channel(selectors.get_channel(channel_id)))

    @extend_schema(
        operation_id="update_notification_channel",
        summary="Change a notification channel (operators; audited)",
        description="Only the fields sent change; `url` left out keeps the stored one.",
        request=NotificationChannelPatchIn,
        parameters=[CHANNEL_ID],
        responses=answers(
            {200: NotificationChannelOut}, 400, 403, 404, (409, "Another channel took this name meanwhile.")
        ),
        examples=[
            OpenApiExample(
                "Warnings too",
                value={"min_level": "warning", "reason": "the team wants the warnings as well"},
                request_only=True,
            ),
            OpenApiExample(
                "The channel after", value={**CHANNEL_EXAMPLE, "min_level": "warning"}, response_only=True
            ),
        ],
    )
    def patch(self, request: Request, channel_id: str) -> Response:
        channel = selectors.get_channel(channel_id)
        body = parse(_PATCH, _body(request))
        updated = services.update_channel(
            channel_id=channel.pk,
            data=body.model_dump(exclude={"reason"}, exclude_unset=True),
            actor=Actor.from_request(request),
            reason=body.reason,
        )
        return Response(_channel(updated))

    @extend_schema(
        operation_id="delete_notification_channel",
        summary="Delete a notification channel (operators; audited); its deliveries stay, with its name",
        parameters=[CHANNEL_ID, REASON_PARAMETER],
        request=ReasonIn,
        responses=answers({204: None}, 400, 403, 404),
    )
    def delete(self, request: Request, channel_id: str) -> Response:
        channel = selectors.get_channel(channel_id)
        services.delete_channel(
            channel_id=channel.pk, actor=Actor.from_request(request), reason=_reason(request)
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- silences ----------------------------------------------------------------------------------------------


class SilenceListView(APIView):
    permission_classes = [IsReviewer]

    @extend_schema(
        operation_id="list_silences",
        summary="Silences (reviewers and operators): those in force, or with `all=true` every one, newest first",
        parameters=query_parameters(SilenceQuery, paged=True),
        responses=answers({200: SilencePage}, 400, 403),
        examples=[
            OpenApiExample(
                "In force",
                value={"count": 1, "next": None, "previous": None, "results": [SILENCE_EXAMPLE]},
                response_only=True,
            )
        ],
    )
    def get(self, request: Request) -> Response:
        query = parse(_SILENCES, _query(request))
        now = timezone.now()
        found = selectors.silences(active=not query.all, service=query.service, now=now)
        return _page(self, request, found, lambda row: SilenceOut.of(row, now))

    @extend_schema(
        operation_id="create_silence",
        summary="Set a silence (reviewers and operators; audited): matching escalations are recorded, not sent",
        description="From now until `ends_at`, the escalations of `service` (blank: every service) at `level` "
        "or below (blank: every level) are still raised and recorded, and each channel's delivery is recorded "
        "as silenced instead of being sent.",
        request=SilenceIn,
        responses=answers({201: SilenceOut}, 400, 403),
        examples=[
            OpenApiExample(
                "Warnings of one service for two hours",
                value={
                    "service": "search",
                    "level": "warning",
                    "ends_at": "2026-12-03T11:00:00Z",
                    "reason": "index rebuild until 11:00 (CHG-204): warnings expected",
                },
                request_only=True,
            ),
            OpenApiExample("The silence", value=SILENCE_EXAMPLE, response_only=True),
        ],
    )
    def post(self, request: Request) -> Response:
        body = parse(_SILENCE, _body(request))
        silence = services.create_silence(
            service=body.service,
            level=body.level,
            ends_at=body.ends_at,
            reason=body.reason,
            actor=Actor.from_request(request),
        )
        return Response(SilenceOut.of(silence, timezone.now()).model_dump(), status=status.HTTP_201_CREATED)


class SilenceDetailView(APIView):
    permission_classes = [IsReviewer]

    @extend_schema(
        operation_id="end_silence",
        summary="End a silence now (reviewers and operators; audited); it stays in the history",
        parameters=[SILENCE_ID, REASON_PARAMETER],
        request=ReasonIn,
        responses=answers(
            {200: SilenceOut},
            400,
            403,
            404,
            (409, "The silence is not in force: it ended or expired already."),
        ),
        examples=[
            OpenApiExample(
                "The silence after",
                value={
                    **SILENCE_EXAMPLE,
                    "ended_at": "2026-12-03T10:05:00Z",
                    "ended_by": "bob",
                    "active": False,
                },
                response_only=True,
            )
        ],
    )
    def delete(self, request: Request, silence_id: str) -> Response:
        silence = selectors.get_silence(silence_id)
        ended = services.end_silence(
            silence_id=silence.pk, actor=Actor.from_request(request), reason=_reason(request)
        )
        return Response(SilenceOut.of(ended, timezone.now()).model_dump())

"""Who the caller is (GET /api/v1/me): an agent, or a user with roles."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.access import roles
from core.access.schemas import MeOut
from core.api.schemas import answers


class MeView(APIView):
    @extend_schema(
        operation_id="whoami",
        summary="Who this key or session is, and what it may do",
        responses=answers({200: MeOut}),
        examples=[
            OpenApiExample(
                "An agent",
                value={"kind": "agent", "name": "planner-1", "operator": False},
                response_only=True,
            )
        ],
    )
    def get(self, request: Request) -> Response:
        user = request.user
        agent = roles.agent_of(user)
        if agent is not None:
            me = MeOut(kind="agent", name=agent.name, operator=False)
        else:
            me = MeOut(kind="user", name=user.get_username(), operator=roles.is_operator(user))
        return Response(me.model_dump())

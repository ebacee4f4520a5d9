from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.access import roles


class MeView(APIView):
    @extend_schema(
        operation_id="whoami",
        summary="Who this key or session is, and what it may do",
        responses=inline_serializer(
            "Me",
            {
                "kind": serializers.CharField(),
                "name": serializers.CharField(),
                "operator": serializers.BooleanField(),
            },
        ),
        examples=[
            OpenApiExample("An agent", value={"kind": "agent", "name": "planner-1", "operator": False})
        ],
    )
    def get(self, request: Request) -> Response:
        user = request.user
        agent = roles.agent_of(user)
        if agent is not None:
            return Response({"kind": "agent", "name": agent.name, "operator": False})
        return Response({"kind": "user", "name": user.get_username(), "operator": roles.is_operator(user)})

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import generics
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from core.access import roles
from core.audit import selectors
from core.audit.serializers import AuditEventSerializer, AuditFilterSerializer


class IsHuman(BasePermission):
    message = "The audit trail is for operators and viewers."

    def has_permission(self, request: Any, view: Any) -> bool:
        return roles.is_viewer(request.user)


class AuditEventListView(generics.ListAPIView):  # type: ignore[type-arg]
    serializer_class = AuditEventSerializer
    permission_classes = [IsHuman]

    @extend_schema(
        operation_id="list_audit_events",
        summary="The audit trail, newest first (operators and viewers)",
        parameters=[AuditFilterSerializer],
        examples=[
            OpenApiExample(
                "A page",
                value={
                    "count": 1,
                    "next": None,
                    "previous": None,
                    "results": [
                        {
                            "id": 3,
                            "occurred_at": "2026-11-22T09:00:00Z",
                            "actor_label": "user:alice",
                            "action": "apikey.revoke",
                            "target_type": "recovery.apikey",
                            "target_id": "7",
                            "target_repr": "rb_1a2b3c4d_…",
                            "reason": "leaked in a CI log",
                            "before": {"revoked_at": None},
                            "after": {"revoked_at": "2026-11-22T09:00:00Z"},
                            "source": "admin",
                            "request_id": "4f6c0d1e2a3b4c5d6e7f8091a2b3c4d5",
                        }
                    ],
                },
                response_only=True,
            )
        ],
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> Any:
        filters = AuditFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        return selectors.audit_events(**filters.validated_data)

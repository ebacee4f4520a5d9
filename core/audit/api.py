"""The audit trail for humans (GET /api/v1/audit-events): filtered and paged."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, extend_schema
from pydantic import TypeAdapter
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.access import roles
from core.api.pagination import Pagination
from core.api.schemas import Page, answers, query_parameters
from core.api.validation import parse
from core.audit import selectors
from core.audit.schemas import AuditEventOut, AuditFilter

_FILTER = TypeAdapter(AuditFilter)


class IsHuman(BasePermission):
    message = "The audit trail is for operators and viewers."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return roles.is_viewer(request.user)


class AuditEventListView(APIView):
    permission_classes = [IsHuman]

    @extend_schema(
        operation_id="list_audit_events",
        summary="The audit trail, newest first (operators and viewers)",
        parameters=query_parameters(AuditFilter, paged=True),
        responses=answers({200: Page[AuditEventOut]}, 400, 403, 404),
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
    def get(self, request: Request) -> Response:
        filters = parse(_FILTER, request.query_params.dict())
        events = selectors.audit_events(**filters.model_dump(exclude_none=True))
        paginator = Pagination()
        page = paginator.paginate_queryset(events, request, view=self) or []
        return paginator.get_paginated_response([AuditEventOut.model_validate(e).model_dump() for e in page])

from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework.permissions import SAFE_METHODS, BasePermission

if TYPE_CHECKING:
    from rest_framework.request import Request
    from rest_framework.views import APIView

from core.access import roles


class IsAuthenticatedPrincipal(BasePermission):
    """Any agent key, or a user who is an operator or a viewer (or staff)."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        return roles.is_agent(user) or roles.is_viewer(user)


class IsOperator(BasePermission):
    message = "This action needs an operator; agent keys and viewers cannot perform it."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return roles.is_operator(request.user)


class IsReviewer(BasePermission):
    message = "This action needs a reviewer or an operator; agent keys and viewers cannot perform it."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return roles.is_reviewer(request.user)


class ReadOrOperator(BasePermission):
    """Reads for every principal; writes for operators only."""

    message = IsOperator.message

    def has_permission(self, request: Request, view: APIView) -> bool:
        if request.method in SAFE_METHODS:
            return IsAuthenticatedPrincipal().has_permission(request, view)
        return roles.is_operator(request.user)


class AgentOrOperator(BasePermission):
    """Reporting errors and outcomes: what agents do, and operators' scripts may do for them."""

    message = "Only agent keys and operators may report."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return roles.is_agent(request.user) or roles.is_operator(request.user)


class AgentOrReviewer(BasePermission):
    """Raising an escalation: what agents do, and the humans who work the queue may do too (viewers only read)."""

    message = "Only agent keys, reviewers and operators raise escalations; viewers read the queue."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return roles.is_agent(request.user) or roles.is_reviewer(request.user)

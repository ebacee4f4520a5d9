"""The fleet at a glance."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.schemas import answers
from recovery.status import selectors
from recovery.status.schemas import FleetStatusOut


class StatusView(APIView):
    @extend_schema(
        operation_id="fleet_status",
        summary="The fleet at a glance",
        responses=answers({200: FleetStatusOut}),
        examples=[
            OpenApiExample(
                "Status",
                response_only=True,
                value={
                    "breakers": {"closed": 11, "open": 1},
                    "degradation": {
                        "scope": "*",
                        "level": "degraded",
                        "source": "automatic",
                        "reason": "rule 'essential breaker open': 1 essential breaker(s) open (openai)",
                        "since": "2026-11-22T09:00:02Z",
                        "until": None,
                    },
                    "retries_needing_human": {
                        "count": 1,
                        "newest": [
                            {
                                "id": "5f0c2b1e-8d7a-4c1b-9a3e-2b6d7f8e9a01",
                                "service": "stripe",
                                "operation": "invoices.create",
                                "kind": "http",
                                "attempts": 3,
                                "error_class": "external_service",
                                "why": "the policy's 3 attempts are spent",
                                "finished_at": "2026-11-22T09:03:10Z",
                            }
                        ],
                    },
                    "rollbacks_needing_human": {"count": 0, "newest": []},
                    "stale_tasks": {
                        "count": 1,
                        "oldest": [
                            {
                                "agent": "research-agent",
                                "task_id": "digest-2026-11-22",
                                "stale_at": "2026-11-22T08:55:00Z",
                                "last_seq": 7,
                            }
                        ],
                    },
                    "errors_last_5m": {"rate_limit": 4},
                    "errors_last_60m": {"rate_limit": 40, "transient": 7},
                    "top_patterns": [
                        {
                            "id": 12,
                            "service": "openai",
                            "error_class": "rate_limit",
                            "severity": "medium",
                            "message_template": "Rate limit reached",
                            "recent_60m": 40,
                            "total_count": 93,
                        }
                    ],
                    "health": {
                        "openai": {
                            "state": "unhealthy",
                            "checks": [
                                {
                                    "name": "openai-api",
                                    "state": "unhealthy",
                                    "last_result_at": "2026-11-22T09:03:30Z",
                                }
                            ],
                        }
                    },
                },
            )
        ],
    )
    def get(self, request: Request) -> Response:
        return Response(selectors.fleet_status())

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.audit.models import AuditEvent


class AuditEventSerializer(serializers.ModelSerializer[AuditEvent]):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "occurred_at",
            "actor_label",
            "action",
            "target_type",
            "target_id",
            "target_repr",
            "reason",
            "before",
            "after",
            "source",
            "request_id",
        ]


class AuditFilterSerializer(serializers.Serializer[Any]):
    action = serializers.CharField(required=False, max_length=100)
    target_type = serializers.CharField(required=False, max_length=100)
    target_id = serializers.CharField(required=False, max_length=100)
    since = serializers.DateTimeField(required=False)

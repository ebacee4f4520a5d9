from __future__ import annotations

from typing import Any

from rest_framework import serializers

from core.slugs import SLUG
from recovery.errors.models import RULE_FIELDS, ClassificationRule, ErrorPattern
from recovery.errors.taxonomy import ErrorClass, Severity


class PatternSerializer(serializers.ModelSerializer[ErrorPattern]):
    recent_5m = serializers.IntegerField(read_only=True)
    recent_60m = serializers.IntegerField(read_only=True)

    class Meta:
        model = ErrorPattern
        fields = [
            "id",
            "fingerprint",
            "service",
            "operation",
            "error_class",
            "severity",
            "kind",
            "type_name",
            "message_template",
            "sample_message",
            "first_seen_at",
            "last_seen_at",
            "total_count",
            "recent_5m",
            "recent_60m",
        ]


class PatternFilterSerializer(serializers.Serializer[Any]):
    error_class = serializers.ChoiceField(choices=ErrorClass.choices, required=False)
    severity = serializers.ChoiceField(choices=Severity.choices, required=False)
    service = serializers.RegexField(SLUG, required=False)
    since = serializers.DateTimeField(required=False)
    search = serializers.CharField(required=False, max_length=200)


class RuleSerializer(serializers.ModelSerializer[ClassificationRule]):
    type_names = serializers.ListField(
        child=serializers.CharField(max_length=200), required=False, max_length=100
    )

    class Meta:
        model = ClassificationRule
        fields = ["id", *RULE_FIELDS, "builtin", "created_at", "updated_at"]
        read_only_fields = ["id", "builtin", "created_at", "updated_at"]


class ReasonSerializer(serializers.Serializer[Any]):
    reason = serializers.CharField(
        help_text="Why: operator actions require a reason, kept in the audit trail.", max_length=2000
    )


class RuleWriteSerializer(RuleSerializer):
    reason = serializers.CharField(write_only=True, max_length=2000)

    class Meta(RuleSerializer.Meta):
        fields = [*RuleSerializer.Meta.fields, "reason"]

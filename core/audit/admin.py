"""The audit trail in the admin: read-only, filterable, with links to each target's page and history."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from core.admin_helpers import ReadOnlyAdmin, _json, clipped, pretty_json, target_admin_url
from core.audit.models import AuditEvent


class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["occurred_at", "actor_label", "action", "target", "source", "short_reason"]
    list_filter = [
        ("action", admin.AllValuesFieldListFilter),
        "source",
        ("target_type", admin.AllValuesFieldListFilter),
        "occurred_at",
    ]
    search_fields = ["actor_label", "target_id", "target_repr", "reason", "request_id"]
    date_hierarchy = "occurred_at"
    # The trail only grows: counting all of it on every page would be the slowest query here.
    show_full_result_count = False
    fieldsets = [
        (
            None,
            {"fields": ["occurred_at", "actor_label", "actor_user", "actor_agent", "source", "request_id"]},
        ),
        ("What", {"fields": ["action", "target_link", "target_history", "reason"]}),
        ("Change", {"fields": ["changes", "before_json", "after_json"]}),
    ]
    readonly_fields = [
        "occurred_at",
        "actor_label",
        "actor_user",
        "actor_agent",
        "source",
        "request_id",
        "action",
        "target_link",
        "target_history",
        "reason",
        "changes",
        "before_json",
        "after_json",
    ]

    @admin.display(description="target", ordering="target_type")
    def target(self, event: AuditEvent) -> SafeString | str:
        return clipped(f"{event.target_type}:{event.target_id} {event.target_repr}", "20em")

    @admin.display(description="reason")
    def short_reason(self, event: AuditEvent) -> SafeString | str:
        return clipped(event.reason)

    @admin.display(description="target")
    def target_link(self, event: AuditEvent) -> SafeString | str:
        label = f"{event.target_type}:{event.target_id} {event.target_repr}".strip()
        url = target_admin_url(event)
        return format_html('<a href="{}">{}</a>', url, label) if url else label

    @admin.display(description="history")
    def target_history(self, event: AuditEvent) -> SafeString:
        query = urlencode({"target_type": event.target_type, "target_id": event.target_id})
        url = f"{reverse('admin:core_auditevent_changelist')}?{query}"
        return format_html('<a href="{}">Every audit event on this target</a>', url)

    @admin.display(description="what changed")
    def changes(self, event: AuditEvent) -> SafeString | str:
        before, after = event.before or {}, event.after or {}
        if not isinstance(before, dict) or not isinstance(after, dict):
            return "—"
        keys = [key for key in {**before, **after} if before.get(key) != after.get(key)]
        if not keys:
            return "—"
        rows = format_html_join(
            "",
            "<li><code>{}</code>: {} → {}</li>",
            ((key, _json(before.get(key)), _json(after.get(key))) for key in keys),
        )
        return format_html('<ul style="margin: 0; padding-left: 1em">{}</ul>', rows)

    @admin.display(description="before")
    def before_json(self, event: AuditEvent) -> SafeString | str:
        return pretty_json(event.before)

    @admin.display(description="after")
    def after_json(self, event: AuditEvent) -> SafeString | str:
        return pretty_json(event.after)

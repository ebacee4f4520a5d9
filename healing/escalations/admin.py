"""The admin of the escalation review queue: the queue (read-only, levels in colour, with its events inline and
the buttons Acknowledge and Resolve, in bulk or on one), and the rules behind it, as data: the triggers (level,
on or off, thresholds), the escalation policy's steps, and the runbooks.

As everywhere in Rebound's admin, nothing is saved directly: Acknowledge and Resolve call the same services as
the API (reviewers and operators; audited), and a trigger, a policy step or a runbook is saved with the
operator's reason through the audited save (core/audit/services.audited_save: validated, then recorded).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.db.models import F, QuerySet
from django.db.models.expressions import OrderBy
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from core.access import roles
from core.admin_helpers import (
    CHANGE_FORM_WITH_ACTIONS,
    ReadOnlyAdmin,
    ReadOnlyInlineMixin,
    ServiceLayerAdmin,
    admin_actor,
    adopt,
    audit_reason_field,
    clipped,
    pill,
    pretty_json,
    reasoned_action,
    truncated,
)
from core.api.errors import DomainError
from core.audit.services import audited_save
from healing.escalations import selectors, services
from healing.escalations.models import (
    LEVEL_RANK,
    Escalation,
    EscalationEvent,
    EscalationPolicy,
    EscalationTrigger,
    Runbook,
    State,
)

LEVEL_COLORS = {"info": "#1565c0", "warning": "#b26a00", "critical": "#c62828", "emergency": "#7f0000"}
STATE_COLORS = {"open": "#c62828", "acknowledged": "#b26a00", "snoozed": "#6a1b9a", "resolved": "#2e7d32"}

TRIGGER_FIELDS = [
    "description",
    "enabled",
    "level",
    "repeat_level",
    "count",
    "window_s",
    "rate_percent",
    "min_calls",
    "duration_s",
]
POLICY_FIELDS = ["from_level", "to_level", "after_s", "enabled"]
RUNBOOK_FIELDS = ["name", "service", "error_class", "trigger", "priority", "steps", "enabled"]


def level_badge(level: str) -> SafeString:
    return pill(level, LEVEL_COLORS.get(level, "#9e9e9e"), f"rebound-escalation-level rebound-level-{level}")


def state_badge(state: str) -> SafeString:
    return pill(state, STATE_COLORS.get(state, "#9e9e9e"))


# --- the queue: read-only, with Acknowledge and Resolve ----------------------------------------------------------


class EventInline(ReadOnlyInlineMixin, admin.TabularInline):
    model = EscalationEvent
    fields = readonly_fields = ("created_at", "kind", "actor", "from_level", "to_level", "short_text")
    extra = 0
    can_delete = False
    ordering = ["created_at", "id"]
    verbose_name = "event"
    verbose_name_plural = "history"

    @admin.display(description="text")
    def short_text(self, row: EscalationEvent) -> str:
        return truncated(row.text, 200)


@admin.register(Escalation)
class EscalationAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "level_label",
        "state_label",
        "short_title",
        "service",
        "occurrences",
        "last_seen_at",
    ]
    list_display_links = ["id", "short_title"]
    list_filter = ["level", "state", "trigger", "service"]
    search_fields = ["title", "dedup_key", "service"]
    list_select_related = ["assignee"]
    show_full_result_count = False
    fieldsets = [
        (None, {"fields": ["title", "level_label", "state_label", "trigger", "service", "summary"]}),
        ("What to do", {"fields": ["recommended_action", "runbook"]}),
        (
            "Seen",
            {
                "fields": [
                    "dedup_key",
                    "occurrences",
                    "first_seen_at",
                    "last_seen_at",
                    "raised_by",
                    "context_json",
                ]
            },
        ),
        (
            "Who works it",
            {
                "fields": [
                    "assignee",
                    "acknowledged_by",
                    "acknowledged_at",
                    "snoozed_until",
                    "resolved_by",
                    "resolved_at",
                    "resolution",
                    "auto_resolved",
                ]
            },
        ),
        (
            "Behind it",
            {
                "fields": [
                    "pattern",
                    "task",
                    "transaction",
                    "retry_job",
                    "healing_run",
                    "breaker_transition",
                    "plan",
                ]
            },
        ),
        ("Notifications", {"fields": ["deliveries_list"]}),
    ]
    readonly_fields = flatten_fieldsets(fieldsets)
    inlines = [EventInline]
    actions = ["acknowledge_escalations", "resolve_escalations"]
    object_actions = ["acknowledge_escalations", "resolve_escalations"]
    change_form_template = CHANGE_FORM_WITH_ACTIONS

    def get_queryset(self, request: HttpRequest) -> QuerySet[Escalation]:
        # The queue's own order (selectors.queue): not resolved first, by level, then oldest first.
        return selectors.queue()

    def get_ordering(self, request: HttpRequest) -> list[Any]:
        # The queue's annotations (selectors.queue), by reference: a column clicked orders by that column.
        return [OrderBy(F("_resolved_last")), OrderBy(F("_by_level")), "first_seen_at", "id"]

    def has_review_permission(self, request: HttpRequest) -> bool:
        """For actions declared with permissions=["review"]: working the queue is for reviewers and operators."""
        return roles.is_reviewer(request.user)

    @admin.display(description="level", ordering="level")
    def level_label(self, escalation: Escalation) -> SafeString:
        return level_badge(escalation.level)

    @admin.display(description="state", ordering="state")
    def state_label(self, escalation: Escalation) -> SafeString:
        return state_badge(escalation.state)

    @admin.display(description="title", ordering="title")
    def short_title(self, escalation: Escalation) -> SafeString | str:
        return clipped(escalation.title, "30em")

    @admin.display(description="context")
    def context_json(self, escalation: Escalation) -> SafeString | str:
        return pretty_json(escalation.context)

    @admin.display(description="deliveries")
    def deliveries_list(self, escalation: Escalation) -> SafeString | str:
        # The deliveries live a floor above (healing.notifications): read through the reverse relation.
        rows = escalation.deliveries.order_by("-created_at", "-id")[:20]  # type: ignore[attr-defined]
        if not rows:
            return "—"
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                "<li>{} to {}: {} ({} attempt(s)){}</li>",
                (
                    (
                        d.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                        d.channel_name,
                        d.status,
                        d.attempts,
                        f": {truncated(d.error, 120)}" if d.error else "",
                    )
                    for d in rows
                ),
            ),
        )

    def object_action_applies(self, name: str, obj: Escalation) -> bool:
        if name == "acknowledge_escalations":
            return obj.state in (State.OPEN, State.SNOOZED)
        return obj.state != State.RESOLVED

    @admin.action(description="Acknowledge", permissions=["review"])
    def acknowledge_escalations(self, request: HttpRequest, queryset: QuerySet[Escalation]) -> None:
        done = skipped = 0
        for escalation in queryset:
            if escalation.state in (State.ACKNOWLEDGED, State.RESOLVED):
                skipped += 1
                continue
            try:
                services.acknowledge(escalation_id=escalation.pk, actor=admin_actor(request))
                done += 1
            except DomainError as error:
                self.message_user(request, f"Escalation {escalation.pk}: {error.message}", messages.ERROR)
        if done:
            self.message_user(request, f"Acknowledged {done} escalation(s).", messages.SUCCESS)
        if skipped:
            self.message_user(
                request, f"Left {skipped} escalation(s) acknowledged or resolved already.", messages.INFO
            )

    @admin.action(description="Resolve (asks for the resolution)", permissions=["review"])
    def resolve_escalations(
        self, request: HttpRequest, queryset: QuerySet[Escalation]
    ) -> TemplateResponse | None:
        def apply(escalation: Escalation, resolution: str) -> bool:
            if escalation.state == State.RESOLVED:
                return False
            services.resolve(escalation_id=escalation.pk, resolution=resolution, actor=admin_actor(request))
            return True

        return reasoned_action(
            self,
            request,
            queryset,
            action="resolve_escalations",
            title="Resolve escalations",
            submit="Resolve",
            apply=apply,
            done=lambda changed, total: (
                f"Resolved {changed} of {total} selected escalations (the others were resolved already)."
            ),
        )


# --- the rules behind the queue: data, edited with a reason (audited) --------------------------------------------


class AuditedConfigAdmin(ServiceLayerAdmin):
    """A configuration row of the queue saved through the audited save: validated, and recorded in the audit trail
    with the operator's reason (action `<audit_action>.create` / `.update`). Disabled, never deleted."""

    reason_field = "audit_reason"
    audit_action = ""
    audit_fields: list[str] = []

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        saved = audited_save(
            obj,
            self.audit_fields,
            actor=admin_actor(request),
            reason=form.cleaned_data.get("audit_reason", ""),
            action=self.audit_action,
        )
        adopt(obj, saved)


class EscalationTriggerForm(forms.ModelForm):
    audit_reason = audit_reason_field("trigger")

    class Meta:
        model = EscalationTrigger
        fields = TRIGGER_FIELDS


@admin.register(EscalationTrigger)
class EscalationTriggerAdmin(AuditedConfigAdmin):
    """One row per kind, created by Rebound: operators turn them on or off and change levels and thresholds."""

    form = EscalationTriggerForm
    audit_action = "escalation_trigger"
    audit_fields = ["kind", *TRIGGER_FIELDS]
    list_display = ["kind", "enabled", "level_label", "thresholds", "updated_at"]
    list_filter = ["enabled", "level"]
    search_fields = ["kind", "description"]
    readonly_fields = ["kind", "updated_at"]
    fieldsets = [
        (None, {"fields": ["kind", "description", "enabled", "level"]}),
        (
            "Thresholds",
            {
                "fields": ["repeat_level", "count", "window_s", "rate_percent", "min_calls", "duration_s"],
                "description": "Each kind reads only its own (its description says which): security reads "
                "repeat_level, count and window_s; repeated_pattern count and window_s; error_rate rate_percent, "
                "window_s and min_calls; breaker_open_too_long duration_s. The others are ignored.",
            },
        ),
        ("Why", {"fields": ["audit_reason"]}),
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # one per kind, made by the migration

    @admin.display(description="level", ordering="level")
    def level_label(self, trigger: EscalationTrigger) -> SafeString:
        return level_badge(trigger.level)

    @admin.display(description="thresholds")
    def thresholds(self, trigger: EscalationTrigger) -> SafeString | str:
        names = ["repeat_level", "count", "window_s", "rate_percent", "min_calls", "duration_s"]
        given = [f"{name}={value}" for name in names if (value := getattr(trigger, name)) not in (None, "")]
        return clipped(", ".join(given), "26em")


class EscalationPolicyForm(forms.ModelForm):
    audit_reason = audit_reason_field("policy step")

    class Meta:
        model = EscalationPolicy
        fields = POLICY_FIELDS

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        low, high = cleaned.get("from_level"), cleaned.get("to_level")
        if low and high and LEVEL_RANK[high] <= LEVEL_RANK[low]:
            self.add_error(
                "to_level", "A step raises the level: choose a level above the one it starts from."
            )
        return cleaned


@admin.register(EscalationPolicy)
class EscalationPolicyAdmin(AuditedConfigAdmin):
    """The escalation policy: an escalation still unacknowledged at a level for so long is raised a level."""

    form = EscalationPolicyForm
    audit_action = "escalation_policy"
    audit_fields = POLICY_FIELDS
    list_display = ["from_level", "to_level", "after_s", "enabled", "updated_at"]
    list_filter = ["enabled"]
    fieldsets = [
        (
            None,
            {
                "fields": ["from_level", "to_level", "after_s", "enabled"],
                "description": "Counted from when the escalation's level last changed (or it was raised or "
                "reopened); acknowledging it stops the clock.",
            },
        ),
        ("Why", {"fields": ["audit_reason"]}),
    ]


class RunbookForm(forms.ModelForm):
    audit_reason = audit_reason_field("runbook")

    class Meta:
        model = Runbook
        fields = RUNBOOK_FIELDS


@admin.register(Runbook)
class RunbookAdmin(AuditedConfigAdmin):
    """What a human should do, matched when an escalation is raised: service, error class and trigger (blank:
    any); the most specific enabled runbook wins, then the lowest priority."""

    form = RunbookForm
    audit_action = "runbook"
    audit_fields = RUNBOOK_FIELDS
    list_display = ["name", "service", "error_class", "trigger", "priority", "enabled", "builtin"]
    list_filter = ["enabled", "builtin", "trigger", "error_class"]
    search_fields = ["name", "service", "steps"]
    readonly_fields = ["builtin", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "enabled", "builtin"]}),
        ("Matches", {"fields": ["service", "error_class", "trigger", "priority"]}),
        ("Steps", {"fields": ["steps"]}),
        ("Why", {"fields": ["audit_reason"]}),
    ]

"""The admin of healing: the catalog of actions (editable, every change audited with a reason), the runs with
their approvals and history (read-only) and the Approve / Reject / Cancel buttons, and the holds with Clear.

As everywhere in Rebound's admin, nothing is saved directly: an action is saved through `services.save_action`
(the same checks as the API: its schema, its built-in, its URL), and every button calls the same service as
the API (`approve`, `reject`, `cancel`, `clear_hold`), so that the approval policy holds in the admin too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.safestring import SafeString

from core.admin_helpers import (
    CHANGE_FORM_WITH_ACTIONS,
    ReadOnlyAdmin,
    ReadOnlyInlineMixin,
    ServiceLayerAdmin,
    admin_actor,
    adopt,
    audit_reason_field,
    clipped,
    outbound_url_field,
    pill,
    pretty_json,
    reasoned_action,
    truncated,
)
from core.api.errors import DomainError
from healing.actions import services
from healing.actions.models import Approval, HealingAction, HealingHold, HealingRun, HealingRunTransition

State = HealingRun.State
STATE_COLORS = {
    "pending_approval": "#6a1b9a",
    "approved": "#1565c0",
    "running": "#b26a00",
    "verifying": "#b26a00",
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "rejected": "#757575",
    "expired": "#757575",
    "cancelled": "#757575",
    "skipped": "#9e9e9e",
}
RISK_COLORS = {"low": "#2e7d32", "medium": "#b26a00", "high": "#c62828", "critical": "#7f0000"}


def state_badge(state: str) -> SafeString:
    return pill(state, STATE_COLORS.get(state, "#9e9e9e"))


def risk_badge(risk: str) -> SafeString:
    return pill(risk, RISK_COLORS.get(risk, "#9e9e9e"))


# --- actions: editable, audited ----------------------------------------------------------------------------------


class HealingActionForm(forms.ModelForm):
    url = outbound_url_field("Webhooks: the URL to call.")
    audit_reason = audit_reason_field("action")

    class Meta:
        model = HealingAction
        fields = [f for f in services.ACTION_FIELDS if f not in ("kind", "builtin")]


@admin.register(HealingAction)
class HealingActionAdmin(ServiceLayerAdmin):
    form = HealingActionForm
    reason_field = "audit_reason"
    list_display = [
        "name",
        "kind",
        "risk_label",
        "enabled",
        "cooldown_s",
        "max_runs_per_hour",
        "verify_check",
    ]
    list_filter = ["kind", "risk", "enabled"]
    search_fields = ["name", "description", "url"]
    list_select_related = ["verify_check"]
    readonly_fields = ["kind", "builtin", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "description", "kind", "builtin", "risk", "enabled"]}),
        ("Limits", {"fields": ["cooldown_s", "max_runs_per_hour", "timeout_s"]}),
        (
            "Parameters and verification",
            {"fields": ["parameters_schema", "verify_check", "verify_within_s"]},
        ),
        (
            "Webhook",
            {
                "fields": ["url", "method", "body_template"],
                "description": "Webhooks only: the URL's host must be in OUTBOUND_ALLOWED_HOSTS; the body template's "
                "strings may hold {{parameter}}, {{service}} and {{run_id}}.",
            },
        ),
        ("Why", {"fields": ["audit_reason"]}),
    ]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Runs keep their action (PROTECT): an action is disabled, not deleted.
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # The name names the action in runs, rules and agents' calls: set once.
        return [*self.readonly_fields, "name"] if obj is not None else self.readonly_fields

    @admin.display(description="risk", ordering="risk")
    def risk_label(self, action: HealingAction) -> SafeString:
        return risk_badge(action.risk)

    def save_model(self, request: HttpRequest, obj: HealingAction, form: Any, change: bool) -> None:
        if not change:
            obj.kind = HealingAction.Kind.WEBHOOK  # the built-ins come with Rebound
        saved = services.save_action(
            obj, actor=admin_actor(request), reason=form.cleaned_data["audit_reason"]
        )
        adopt(obj, saved)


# --- runs: read-only, with the decisions as buttons --------------------------------------------------------------


class ApprovalInline(ReadOnlyInlineMixin, admin.TabularInline):
    model = Approval
    fields = readonly_fields = ("created_at", "user", "decision", "reason")
    extra = 0
    can_delete = False
    ordering = ["created_at", "id"]


class TransitionInline(ReadOnlyInlineMixin, admin.TabularInline):
    model = HealingRunTransition
    fields = readonly_fields = ("created_at", "from_state", "to_state", "actor", "short_reason")
    extra = 0
    can_delete = False
    ordering = ["created_at", "id"]
    verbose_name = "move"
    verbose_name_plural = "history"

    @admin.display(description="reason")
    def short_reason(self, row: HealingRunTransition) -> str:
        return truncated(row.reason, 200)


@admin.register(HealingRun)
class HealingRunAdmin(ReadOnlyAdmin):
    # No approvals column: it would count each row's approvals (a query a row); the run's page shows them.
    list_display = ["id", "action", "service", "state_label", "risk_label", "requester", "created_at"]
    list_display_links = ["id"]
    list_filter = ["state", "risk", "trigger", "action"]
    search_fields = ["service", "requested_by", "reason", "action__name"]
    list_select_related = ["action"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    fieldsets = [
        (None, {"fields": ["action", "service", "state_label", "state_reason", "risk_label", "trigger"]}),
        ("Request", {"fields": ["requested_by", "reason", "parameters_json", "approvals_label"]}),
        (
            "Times",
            {
                "fields": [
                    "created_at",
                    "approval_deadline",
                    "not_before",
                    "started_at",
                    "acted_at",
                    "verify_deadline",
                    "finished_at",
                ]
            },
        ),
        ("Outcome", {"fields": ["output_json"]}),
        ("Record", {"fields": ["task_id", "updated_at"], "classes": ["collapse"]}),
    ]
    readonly_fields = flatten_fieldsets(fieldsets)
    inlines = [ApprovalInline, TransitionInline]
    actions = ["approve_runs", "reject_runs", "cancel_runs"]
    object_actions = ["approve_runs", "reject_runs", "cancel_runs"]
    change_form_template = CHANGE_FORM_WITH_ACTIONS

    @admin.display(description="state", ordering="state")
    def state_label(self, run: HealingRun) -> SafeString:
        return state_badge(run.state)

    @admin.display(description="risk", ordering="risk")
    def risk_label(self, run: HealingRun) -> SafeString:
        return risk_badge(run.risk)

    @admin.display(description="requested by", ordering="requested_by")
    def requester(self, run: HealingRun) -> SafeString | str:
        return clipped(run.requested_by, "14em")

    @admin.display(description="approvals")
    def approvals_label(self, run: HealingRun) -> str:
        given = run.approvals.filter(decision=Approval.Decision.APPROVE).count()
        return f"{given} of {run.approvals_required}"

    @admin.display(description="parameters")
    def parameters_json(self, run: HealingRun) -> SafeString | str:
        return pretty_json(run.parameters)

    @admin.display(description="output (secrets hidden)")
    def output_json(self, run: HealingRun) -> SafeString | str:
        return pretty_json(run.output)

    def object_action_applies(self, name: str, obj: HealingRun) -> bool:
        if name == "cancel_runs":
            return obj.state in (State.PENDING_APPROVAL, State.APPROVED)
        return obj.state == State.PENDING_APPROVAL

    @admin.action(description="Approve", permissions=["operate"])
    def approve_runs(self, request: HttpRequest, queryset: QuerySet[HealingRun]) -> None:
        approved = 0
        for run in queryset:
            try:
                services.approve(run_id=run.pk, actor=admin_actor(request))
                approved += 1
            except DomainError as error:
                self.message_user(request, f"Run {run.pk}: {error.message}", messages.ERROR)
        if approved:
            self.message_user(request, f"Approved {approved} run(s).", messages.SUCCESS)

    @admin.action(description="Reject (asks for a reason)", permissions=["operate"])
    def reject_runs(self, request: HttpRequest, queryset: QuerySet[HealingRun]) -> TemplateResponse | None:
        return self._decide(request, queryset, "reject_runs", "Reject", "Rejected", services.reject)

    @admin.action(description="Cancel (asks for a reason)", permissions=["operate"])
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[HealingRun]) -> TemplateResponse | None:
        return self._decide(request, queryset, "cancel_runs", "Cancel", "Cancelled", services.cancel)

    def _decide(
        self,
        request: HttpRequest,
        queryset: QuerySet[HealingRun],
        action: str,
        verb: str,
        done: str,
        decide: Callable[..., HealingRun],
    ) -> TemplateResponse | None:
        """A decision that needs a reason (reject, cancel): asked for, then made through the API's service."""

        def apply(run: HealingRun, reason: str) -> bool:
            decide(run_id=run.pk, actor=admin_actor(request), reason=reason)
            return True

        return reasoned_action(
            self,
            request,
            queryset,
            action=action,
            title=f"{verb} healing runs",
            submit=verb,
            apply=apply,
            done=lambda changed, total: f"{done} {changed} of {total} selected runs.",
        )


# --- holds -------------------------------------------------------------------------------------------------------


@admin.register(HealingHold)
class HealingHoldAdmin(ReadOnlyAdmin):
    list_display = ["action", "service", "in_force", "short_reason", "created_at", "cleared_by"]
    list_filter = ["action", ("cleared_at", admin.EmptyFieldListFilter)]
    search_fields = ["service", "reason", "action__name"]
    list_select_related = ["action", "cleared_by"]
    fields = readonly_fields = (
        "action",
        "service",
        "reason",
        "created_at",
        "cleared_at",
        "cleared_by",
        "cleared_reason",
    )
    actions = ["clear_holds"]
    object_actions = ["clear_holds"]
    change_form_template = CHANGE_FORM_WITH_ACTIONS

    @admin.display(description="in force", boolean=True)
    def in_force(self, hold: HealingHold) -> bool:
        return hold.cleared_at is None

    @admin.display(description="reason")
    def short_reason(self, hold: HealingHold) -> SafeString | str:
        return clipped(hold.reason, "14em")

    def object_action_applies(self, name: str, obj: HealingHold) -> bool:
        return obj.cleared_at is None

    @admin.action(description="Clear: automatic again (asks for a reason)", permissions=["operate"])
    def clear_holds(self, request: HttpRequest, queryset: QuerySet[HealingHold]) -> TemplateResponse | None:
        def apply(hold: HealingHold, reason: str) -> bool:
            if hold.cleared_at is not None:
                return False
            services.clear_hold(hold_id=hold.pk, actor=admin_actor(request), reason=reason)
            return True

        return reasoned_action(
            self,
            request,
            queryset,
            action="clear_holds",
            title="Clear healing holds",
            submit="Clear",
            apply=apply,
            done=lambda changed, total: (
                f"Cleared {changed} of {total} selected holds (the others were cleared)."
            ),
        )

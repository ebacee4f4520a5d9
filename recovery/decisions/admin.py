"""The admin of recovery decisions: retry policies, operations and fallback chains (every change audited, with a
reason), and the plans and fallback uses Rebound recorded (read-only).

As everywhere in Rebound's admin, nothing is saved directly: policies go through `policies.save_policy` /
`delete_policy`, operations and fallback options through `fallbacks.save_*` / `delete_*`, each with the
operator's reason, so that every change lands in the audit trail exactly once with source "admin". Built-in
policies (sources 003 and 004's numbers) may be edited, never deleted.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.options import InlineModelAdmin
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from core.admin_helpers import (
    ReadOnlyAdmin,
    ReadOnlyInlineMixin,
    ReasonedDeleteMixin,
    ServiceLayerAdmin,
    admin_actor,
    clipped,
    pretty_json,
    reason_widget,
    truncated,
)
from recovery.decisions import fallbacks, policies
from recovery.decisions.models import FallbackInvocation, FallbackOption, Operation, RecoveryPlan, RetryPolicy
from recovery.errors.taxonomy import ErrorClass

# --- The shared shape: saved and deleted through audited services ----------------------------------------


class AuditedForm(forms.ModelForm):
    audit_reason = forms.CharField(
        label="Why are you changing this?",
        widget=reason_widget(),
        help_text="Required. Recorded in the audit trail with your name.",
    )


Saver = Callable[..., Model]
Deleter = Callable[..., None]


class AuditedConfigAdmin(ReasonedDeleteMixin, ServiceLayerAdmin):
    """Configuration operators edit. Saving and deleting call a service with the operator's reason; Django's
    unaudited bulk delete is replaced by an action that asks why."""

    reason_field = "audit_reason"
    actions = ["delete_with_reason"]
    save_with: Saver
    delete_with: Deleter

    def save_model(self, request: HttpRequest, obj: Model, form: Any, change: bool) -> None:
        reason = form.cleaned_data.get("audit_reason", "")
        type(self).save_with(obj, actor=admin_actor(request), reason=reason)

    def _delete(self, request: HttpRequest, obj: Model, reason: str) -> bool:
        # The service's audit event writes the admin log entry too (core.audit.services.record).
        type(self).delete_with(obj, actor=admin_actor(request), reason=reason)
        return True

    @admin.action(description="Delete selected (asks for a reason)", permissions=["delete"])
    def delete_with_reason(self, request: HttpRequest, queryset: QuerySet[Any]) -> TemplateResponse | None:
        plural = str(self.model._meta.verbose_name_plural)
        return self._reasoned_delete_action(
            request, queryset, "delete_with_reason", f"Delete {plural}", plural
        )


# --- Retry policies ----------------------------------------------------------------------------------------


class PolicyForm(AuditedForm):
    retry_on = forms.MultipleChoiceField(
        choices=ErrorClass.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="The error classes this policy retries.",
    )

    class Meta:
        model = RetryPolicy
        fields = policies.POLICY_FIELDS


class _Highest(random.Random):
    """Jitter at its upper bound: the preview shows the longest each wait can be."""

    def uniform(self, a: float, b: float) -> float:
        return max(a, b)


def delays_preview(policy: RetryPolicy) -> str:
    if policy.strategy == RetryPolicy.Strategy.NONE or policy.max_attempts <= 1:
        return "never retries"
    delays = [policies.delay_s(policy, n, rng=_Highest()) for n in range(1, policy.max_attempts)]
    jitter = policy.strategy in (
        RetryPolicy.Strategy.EXPONENTIAL_FULL_JITTER,
        RetryPolicy.Strategy.DECORRELATED_JITTER,
    )
    text = ", ".join(f"{d:g} s" for d in delays)
    return f"up to {text} (random below that)" if jitter else text


class RetryPolicyAdmin(AuditedConfigAdmin):
    form = PolicyForm
    save_with = staticmethod(policies.save_policy)
    delete_with = staticmethod(policies.delete_policy)
    list_display = ["name", "scope", "service", "operation", "strategy", "max_attempts", "delays"]
    list_filter = ["builtin", "strategy", "error_class", "kind", "service"]
    search_fields = ["name", "description", "operation"]
    list_select_related = ["service"]
    readonly_fields = ["delays", "builtin", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "description"]}),
        (
            "Scope",
            {
                "fields": ["service", "operation", "error_class", "kind"],
                "description": "Most specific first: a service's operation, a service, an error kind, an error "
                "class, the global default (all blank). A service policy names no class or kind.",
            },
        ),
        (
            "Backoff",
            {
                "fields": [
                    "strategy",
                    "max_attempts",
                    "base_delay_s",
                    "multiplier",
                    "max_delay_s",
                    "deadline_s",
                    "honour_retry_after",
                    "retry_on",
                    "delays",
                ]
            },
        ),
        ("Audit", {"fields": ["audit_reason"]}),
        ("Record", {"fields": ["builtin", "created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    @admin.display(description="scope")
    def scope(self, policy: RetryPolicy) -> str:
        return policy.scope

    @admin.display(description="delays between attempts")
    def delays(self, policy: RetryPolicy) -> SafeString | str:
        return clipped(delays_preview(policy), "18em") if policy.pk else "—"

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Built-in policies are edited, never deleted (the action refuses them one by one too).
        if obj is not None and obj.builtin:
            return False
        return super().has_delete_permission(request, obj)


# --- Operations --------------------------------------------------------------------------------------------


class OperationForm(AuditedForm):
    class Meta:
        model = Operation
        fields = fallbacks.OPERATION_FIELDS


class OperationAdmin(AuditedConfigAdmin):
    form = OperationForm
    save_with = staticmethod(fallbacks.save_operation)
    delete_with = staticmethod(fallbacks.delete_operation)
    list_display = ["name", "service", "idempotent", "critical", "short_description"]
    list_filter = ["idempotent", "critical", "service"]
    search_fields = ["name", "service__name", "description"]
    list_select_related = ["service"]
    readonly_fields = ["created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["service", "name", "description"]}),
        (
            "What the planner must know",
            {
                "fields": ["idempotent", "critical"],
                "description": "A non-idempotent operation is never retried automatically unless the agent sends an "
                "idempotency key. Non-critical work may be skipped with a partial result; critical work escalates.",
            },
        ),
        ("Audit", {"fields": ["audit_reason"]}),
        ("Record", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    @admin.display(description="description")
    def short_description(self, operation: Operation) -> SafeString | str:
        return clipped(operation.description, "30em")


# --- Fallback options --------------------------------------------------------------------------------------


class OptionForm(AuditedForm):
    class Meta:
        model = FallbackOption
        fields = fallbacks.OPTION_FIELDS


def option_target(option: FallbackOption) -> str:
    if option.kind == FallbackOption.Kind.SERVICE:
        target = option.target_service.name if option.target_service else "?"
        return f"{target}/{option.target_operation}" if option.target_operation else target
    if option.kind == FallbackOption.Kind.CACHE:
        return f"cached result, at most {option.max_age_s:g} s old" if option.max_age_s else "cached result"
    if option.kind == FallbackOption.Kind.STATIC:
        return truncated(str(option.static_value), 60)
    return option.warning or "skip"


class FallbackOptionAdmin(AuditedConfigAdmin):
    form = OptionForm
    save_with = staticmethod(fallbacks.save_option)
    delete_with = staticmethod(fallbacks.delete_option)
    list_display = ["service", "operation_label", "position", "kind", "target", "enabled"]
    list_display_links = ["service", "operation_label"]
    list_filter = ["kind", "enabled", "service"]
    search_fields = ["service__name", "operation", "description"]
    list_select_related = ["service", "target_service"]
    fieldsets = [
        (
            None,
            {
                "fields": ["service", "operation", "position", "kind", "enabled", "description"],
                "description": "Tried in position order: a chain's options for the operation first, then those "
                "for every operation (operation blank).",
            },
        ),
        ("Another service", {"fields": ["target_service", "target_operation"]}),
        ("Cache", {"fields": ["max_age_s"]}),
        ("Static default", {"fields": ["static_value"]}),
        ("Skip (non-critical work only)", {"fields": ["warning"]}),
        ("Audit", {"fields": ["audit_reason"]}),
    ]

    @admin.display(description="operation", ordering="operation")
    def operation_label(self, option: FallbackOption) -> str:
        return option.operation or "(every operation)"

    @admin.display(description="what")
    def target(self, option: FallbackOption) -> SafeString | str:
        return clipped(option_target(option), "24em")


# --- What Rebound recorded: read-only ----------------------------------------------------------------------


class RecoveryPlanAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "service", "operation", "error_class", "action", "short_reason", "result"]
    list_filter = ["action", "result", "error_class", "created_at"]
    search_fields = ["service", "operation", "task_id", "reason"]
    date_hierarchy = "created_at"
    list_select_related = ["agent"]
    # The table only grows: counting all of it on every page would be the slowest query here.
    show_full_result_count = False
    fields = readonly_fields = (
        "id",
        "created_at",
        "agent",
        "service",
        "operation",
        "task_id",
        "attempt",
        "elapsed_s",
        "idempotency_key",
        "error_class",
        "severity",
        "kind",
        "policy",
        "action",
        "delay_s",
        "attempts_left",
        "reason",
        "fallback_json",
        "inputs_json",
        "result",
        "result_at",
    )

    @admin.display(description="reason")
    def short_reason(self, plan: RecoveryPlan) -> SafeString | str:
        return clipped(plan.reason, "26em")

    @admin.display(description="fallback")
    def fallback_json(self, plan: RecoveryPlan) -> SafeString | str:
        return pretty_json(plan.fallback)

    @admin.display(description="what the planner saw")
    def inputs_json(self, plan: RecoveryPlan) -> SafeString | str:
        return pretty_json(plan.inputs)


class FallbackInvocationAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "service", "operation", "kind", "plan_link", "agent"]
    list_filter = ["kind", "created_at"]
    search_fields = ["service", "operation"]
    date_hierarchy = "created_at"
    list_select_related = ["agent"]
    show_full_result_count = False
    fields = readonly_fields = (
        "created_at",
        "service",
        "operation",
        "kind",
        "option",
        "agent",
        "plan_link",
        "detail_json",
    )

    @admin.display(description="plan")
    def plan_link(self, invocation: FallbackInvocation) -> SafeString | str:
        if not invocation.plan_id:
            return "—"
        url = reverse("admin:recovery_recoveryplan_change", args=[invocation.plan_id])
        return format_html('<a href="{}">{}</a>', url, invocation.plan_id)

    @admin.display(description="detail")
    def detail_json(self, invocation: FallbackInvocation) -> SafeString | str:
        return pretty_json(invocation.detail)


# --- On the service's page: its recovery configuration, read-only (edited and audited on its own pages) ----


class ConfigInline(ReadOnlyInlineMixin, admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True


class OperationInline(ConfigInline):
    model = Operation
    fields = readonly_fields = ("name", "idempotent", "critical", "description")
    verbose_name_plural = "operations (edit them under Operations)"


class FallbackOptionInline(ConfigInline):
    model = FallbackOption
    fk_name = "service"
    fields = readonly_fields = ("operation", "position", "kind", "what", "enabled")
    verbose_name_plural = "fallback chain (edit it under Fallback options)"

    @admin.display(description="what")
    def what(self, option: FallbackOption) -> str:
        return option_target(option)


class RetryPolicyInline(ConfigInline):
    model = RetryPolicy
    fields = readonly_fields = ("name", "operation", "strategy", "max_attempts", "delays")
    verbose_name_plural = "retry policies (edit them under Retry policies)"

    @admin.display(description="delays between attempts")
    def delays(self, policy: RetryPolicy) -> str:
        return delays_preview(policy)


SERVICE_INLINES: list[type[InlineModelAdmin]] = [OperationInline, FallbackOptionInline, RetryPolicyInline]


def service_inlines(request: HttpRequest) -> list[type[InlineModelAdmin]]:
    """Shown on the page, never posted: nothing in them is saved from the service's form."""
    return SERVICE_INLINES if request.method == "GET" else []

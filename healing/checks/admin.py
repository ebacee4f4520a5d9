"""The admin of health checks: the checks (editable, every change audited with a reason), their newest results
and transitions inline, a "run now" action, and the results and transitions on pages of their own (read-only).

As everywhere in Rebound's admin, nothing is saved directly: creating and changing go through
`services.create_check` / `update_check`, deleting through `delete_check` (each with the operator's reason),
and "run now" through `services.run_now`, which records the result (source manual) and audits the run.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from core.admin_helpers import (
    CHANGE_FORM_WITH_ACTIONS,
    Fieldsets,
    ReadOnlyAdmin,
    ReadOnlyInlineMixin,
    ReasonedDeleteMixin,
    ServiceLayerAdmin,
    admin_actor,
    adopt,
    audit_reason_field,
    clipped,
    outbound_url_field,
    pill,
    truncated,
)
from core.api.errors import DomainError
from healing.checks import services
from healing.checks.models import HealthCheck, HealthCheckResult, HealthCheckTransition

SHOWN_INLINE = 20
RUN_AT_ONCE = 10  # "run now" runs the probes within the request: a few checks at a time
# A check's state as Rebound keeps it: shown on its page, never edited there.
STATE_FIELDS = (
    "state_label",
    "consecutive_passes",
    "consecutive_failures",
    "next_due_at",
    "last_ping_at",
    "state_changed_at",
    "history",
)

STATE_COLORS = {"healthy": "#2e7d32", "unhealthy": "#c62828", "unknown": "#9e9e9e"}


def state_badge(state: str) -> SafeString:
    """A check's state as a coloured pill; the name stays in the text for readers without colour."""
    return pill(state, STATE_COLORS.get(state, "#9e9e9e"), f"rebound-health-badge rebound-health-{state}")


def ok_badge(ok: bool) -> SafeString:
    return pill("ok" if ok else "fail", "#2e7d32" if ok else "#c62828", "rebound-health-result")


# --- the check's page: its newest results and transitions ----------------------------------------------------


class Latest(BaseInlineFormSet):
    """Only the newest rows: a check has thousands of results. The slice is taken after the formset filtered by
    check (a sliced queryset cannot be filtered)."""

    def get_queryset(self) -> QuerySet[Any]:
        if not hasattr(self, "_latest"):
            self._latest = super().get_queryset().order_by("-created_at", "-id")[:SHOWN_INLINE]
        return self._latest


class ResultInline(ReadOnlyInlineMixin, admin.TabularInline):
    model = HealthCheckResult
    formset = Latest
    verbose_name_plural = f"results (the latest {SHOWN_INLINE})"
    fields = readonly_fields = ("created_at", "outcome", "latency_ms", "status_code", "short_error", "source")
    extra = 0
    can_delete = False

    @admin.display(description="outcome")
    def outcome(self, result: HealthCheckResult) -> SafeString:
        return ok_badge(result.ok)

    @admin.display(description="error")
    def short_error(self, result: HealthCheckResult) -> str:
        return truncated(result.error, 120)


class TransitionInline(ReadOnlyInlineMixin, admin.TabularInline):
    model = HealthCheckTransition
    formset = Latest
    fk_name = "health_check"
    verbose_name_plural = f"transitions (the latest {SHOWN_INLINE})"
    fields = readonly_fields = ("created_at", "change", "reason", "breaker_effect")
    extra = 0
    can_delete = False

    @admin.display(description="change")
    def change(self, transition: HealthCheckTransition) -> SafeString:
        return format_html("{} → {}", state_badge(transition.from_state), state_badge(transition.to_state))


# --- checks ------------------------------------------------------------------------------------------------


class HealthCheckForm(forms.ModelForm):
    url = outbound_url_field("http checks: the URL to call.")
    audit_reason = audit_reason_field("check")

    class Meta:
        model = HealthCheck
        fields = services.CONFIG_FIELDS


@admin.register(HealthCheck)
class HealthCheckAdmin(ReasonedDeleteMixin, ServiceLayerAdmin):
    form = HealthCheckForm
    reason_field = "audit_reason"
    list_display = [
        "name",
        "service",
        "kind",
        "state_label",
        "consecutive_failures",
        "next_due_at",
        "enabled",
    ]
    list_filter = ["kind", "state", "enabled", "drives_breaker"]
    search_fields = ["name", "service", "description"]
    readonly_fields = [*STATE_FIELDS, "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "service", "kind", "description", "enabled", "drives_breaker"]}),
        ("Schedule and verdict", {"fields": ["interval_s", "timeout_s", "rise", "fall"]}),
        (
            "http",
            {
                "fields": ["method", "url", "expected_status", "body_contains"],
                "description": "The host must be in OUTBOUND_ALLOWED_HOSTS. Expected status: a JSON list, "
                "e.g. [200, 204]; empty: any 2xx.",
            },
        ),
        ("tcp", {"fields": ["host", "port"]}),
        ("celery", {"fields": ["queue"]}),
        (
            "heartbeat",
            {"fields": ["grace_s"], "description": "Pings: POST /api/v1/health-checks/<name>/ping."},
        ),
        ("State", {"fields": STATE_FIELDS}),
        ("Audit", {"fields": ["audit_reason"]}),
        ("Record", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]
    add_fieldsets: Fieldsets = [f for f in fieldsets if f[0] not in ("State", "Record")]  # type: ignore[misc]
    actions = ["run_now", "delete_checks"]
    object_actions = ["run_now"]
    change_form_template = CHANGE_FORM_WITH_ACTIONS

    def get_inlines(self, request: HttpRequest, obj: Any) -> list[Any]:
        return [] if obj is None else [ResultInline, TransitionInline]

    @admin.display(description="state", ordering="state")
    def state_label(self, check: HealthCheck) -> SafeString:
        return state_badge(check.state)

    @admin.display(description="history")
    def history(self, check: HealthCheck) -> SafeString:
        results = (
            f"{reverse('admin:healing_healthcheckresult_changelist')}?health_check__id__exact={check.pk}"
        )
        moves = (
            f"{reverse('admin:healing_healthchecktransition_changelist')}?health_check__id__exact={check.pk}"
        )
        return format_html(
            '<a href="{}">Every result</a> · <a href="{}">Every transition</a>', results, moves
        )

    def save_model(self, request: HttpRequest, obj: HealthCheck, form: Any, change: bool) -> None:
        reason = form.cleaned_data.get("audit_reason", "")
        if change:
            data = {
                name: form.cleaned_data[name] for name in form.changed_data if name in services.CONFIG_FIELDS
            }
            saved = services.update_check(
                check_id=obj.pk, data=data, actor=admin_actor(request), reason=reason
            )
        else:
            data = {
                name: form.cleaned_data[name] for name in services.CONFIG_FIELDS if name in form.cleaned_data
            }
            saved = services.create_check(data=data, actor=admin_actor(request), reason=reason)
        adopt(obj, saved)

    def _delete(self, request: HttpRequest, obj: HealthCheck, reason: str) -> bool:
        services.delete_check(check_id=obj.pk, actor=admin_actor(request), reason=reason)
        return True

    @admin.action(description="Delete the selected checks (asks for a reason)", permissions=["delete"])
    def delete_checks(self, request: HttpRequest, queryset: QuerySet[HealthCheck]) -> Any:
        return self._reasoned_delete_action(
            request, queryset, "delete_checks", "Delete health checks", "checks"
        )

    @admin.action(description="Run now (records the result)", permissions=["operate"])
    def run_now(self, request: HttpRequest, queryset: QuerySet[HealthCheck]) -> None:
        checks = list(queryset[: RUN_AT_ONCE + 1])
        if len(checks) > RUN_AT_ONCE:
            self.message_user(
                request,
                f"Run at most {RUN_AT_ONCE} checks at a time: each runs within this page.",
                messages.ERROR,
            )
            return
        for check in checks:
            try:
                recorded = services.run_now(check_id=check.pk, actor=admin_actor(request))
            except DomainError as error:
                self.message_user(request, f"Did not run {check.name}: {error.message}", messages.ERROR)
                continue
            result = recorded.result
            took = f" in {result.latency_ms:.0f} ms" if result.latency_ms is not None else ""
            verdict = "ok" if result.ok else f"failed: {truncated(result.error, 200)}"
            level = messages.SUCCESS if result.ok else messages.WARNING
            self.message_user(
                request, f"Ran {check.name}: {verdict}{took}; now {recorded.check.state}.", level
            )


# --- results and transitions: read-only ----------------------------------------------------------------------


@admin.register(HealthCheckResult)
class HealthCheckResultAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "health_check",
        "outcome",
        "latency_ms",
        "status_code",
        "short_error",
        "source",
    ]
    list_display_links = ["created_at"]
    list_filter = ["ok", "source", "health_check"]
    search_fields = ["health_check__name", "error"]
    date_hierarchy = "created_at"
    list_select_related = ["health_check"]
    # The table only grows: counting all of it on every page would be the slowest query here.
    show_full_result_count = False
    fields = readonly_fields = (
        "created_at",
        "health_check",
        "ok",
        "latency_ms",
        "status_code",
        "error",
        "source",
        "due_at",
        "started_at",
    )

    @admin.display(description="outcome", ordering="ok")
    def outcome(self, result: HealthCheckResult) -> SafeString:
        return ok_badge(result.ok)

    @admin.display(description="error")
    def short_error(self, result: HealthCheckResult) -> SafeString | str:
        return clipped(result.error, "10em")


@admin.register(HealthCheckTransition)
class HealthCheckTransitionAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "health_check", "change", "short_reason", "breaker_effect"]
    list_display_links = ["created_at"]
    list_filter = ["to_state", "health_check"]
    search_fields = ["health_check__name", "reason", "breaker_effect"]
    date_hierarchy = "created_at"
    list_select_related = ["health_check"]
    show_full_result_count = False
    fields = readonly_fields = (
        "created_at",
        "health_check",
        "from_state",
        "to_state",
        "reason",
        "result",
        "breaker_effect",
    )

    @admin.display(description="change")
    def change(self, transition: HealthCheckTransition) -> SafeString:
        return format_html("{} → {}", state_badge(transition.from_state), state_badge(transition.to_state))

    @admin.display(description="reason")
    def short_reason(self, transition: HealthCheckTransition) -> SafeString | str:
        return clipped(transition.reason, "18em")

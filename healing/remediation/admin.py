"""Admin pages of the remediation rules: the rules (edited through the service, with a reason, audited) and
what each rule did (its firings, read-only, each with a link to the run it asked for)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from core.admin_helpers import (
    ReadOnlyAdmin,
    ServiceLayerAdmin,
    admin_actor,
    adopt,
    audit_reason_field,
    clipped,
)
from healing.remediation import services
from healing.remediation.models import RemediationRule, RuleFiring

# --- rules: editable, audited ------------------------------------------------------------------------------


class RemediationRuleForm(forms.ModelForm):
    audit_reason = audit_reason_field("rule")

    class Meta:
        model = RemediationRule
        fields = services.RULE_FIELDS

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        # The rule as it would be saved, checked by the service's own rules: each problem on its field.
        rule = RemediationRule(
            **{name: cleaned.get(name) for name in services.RULE_FIELDS if name in cleaned}
        )
        for problem in services.rule_problems(rule):
            field = problem["field"]
            if field in self.fields and field in cleaned:
                self.add_error(field, problem["message"])
            elif field not in self.fields:
                self.add_error(None, problem["message"])
        return cleaned


@admin.register(RemediationRule)
class RemediationRuleAdmin(ServiceLayerAdmin):
    form = RemediationRuleForm
    reason_field = "audit_reason"
    list_display = ["name", "enabled", "trigger", "watches", "action", "risk", "firings_link"]
    list_filter = ["enabled", "trigger", "action"]
    search_fields = ["name", "description", "service", "health_check__name"]
    list_select_related = ["action", "health_check"]
    fieldsets = [
        (None, {"fields": ["name", "description", "enabled"]}),
        (
            "When",
            {
                "fields": ["trigger", "health_check", "service", "error_class", "threshold", "window_s"],
                "description": "check_unhealthy: when the health check turns unhealthy (the target is the "
                "check's service unless a service is named). breaker_open: when the service's breaker opens. "
                "pattern_count: when the service reports at least `threshold` errors (of the class, or of any "
                "class when blank) within `window_s` seconds; it fires at most once per window.",
            },
        ),
        (
            "Then",
            {
                "fields": ["action", "parameters"],
                "description": "The run is requested as the rule, under the action's approval policy: a "
                "medium-risk run waits for an operator's approval, a high one for two; critical actions are "
                "never started by a rule.",
            },
        ),
        ("Audit", {"fields": ["audit_reason"]}),
    ]

    # Rules are disabled, not deleted: the firings that name them stay readable.
    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: RemediationRule, form: Any, change: bool) -> None:
        data = {name: form.cleaned_data[name] for name in services.RULE_FIELDS if name in form.cleaned_data}
        reason = form.cleaned_data.get("audit_reason", "")
        if change:
            saved = services.update_rule(rule_id=obj.pk, data=data, actor=admin_actor(request), reason=reason)
        else:
            saved = services.create_rule(data=data, actor=admin_actor(request), reason=reason)
        adopt(obj, saved)

    @admin.display(description="watches")
    def watches(self, rule: RemediationRule) -> SafeString | str:
        return clipped(self._watches(rule), "24em")

    def _watches(self, rule: RemediationRule) -> str:
        if rule.trigger == RemediationRule.Trigger.CHECK_UNHEALTHY:
            check = rule.health_check.name if rule.health_check is not None else "?"
            return f"check {check} → {rule.target()}"
        if rule.trigger == RemediationRule.Trigger.PATTERN_COUNT:
            what = rule.error_class or "any"
            return f"{rule.service}: ≥{rule.threshold} {what} errors in {rule.window_s} s"
        return f"breaker of {rule.service}"

    @admin.display(description="risk")
    def risk(self, rule: RemediationRule) -> str:
        return rule.action.risk

    @admin.display(description="firings")
    def firings_link(self, rule: RemediationRule) -> SafeString:
        url = f"{reverse('admin:healing_rulefiring_changelist')}?rule__id__exact={rule.pk}"
        return format_html('<a href="{}">What it did</a>', url)


# --- firings: read-only ------------------------------------------------------------------------------------


@admin.register(RuleFiring)
class RuleFiringAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "rule", "short_event_key", "short_outcome", "run_link", "run_state"]
    list_display_links = ["created_at"]
    list_filter = ["rule", "created_at"]
    search_fields = ["rule__name", "event_key", "outcome", "detail"]
    list_select_related = ["rule", "run"]
    date_hierarchy = "created_at"
    # The firings only grow: counting all of them on every page would be the slowest query here.
    show_full_result_count = False
    fields = readonly_fields = (
        "created_at",
        "rule",
        "event_key",
        "detail",
        "outcome",
        "run_link",
        "run_state",
    )

    @admin.display(description="event", ordering="event_key")
    def short_event_key(self, firing: RuleFiring) -> SafeString | str:
        return clipped(firing.event_key, "14em")

    @admin.display(description="outcome", ordering="outcome")
    def short_outcome(self, firing: RuleFiring) -> SafeString | str:
        return clipped(firing.outcome, "18em")

    @admin.display(description="run")
    def run_link(self, firing: RuleFiring) -> SafeString | str:
        if firing.run_id is None:
            return "—"
        try:
            url = reverse("admin:healing_healingrun_change", args=[firing.run_id])
        except NoReverseMatch:
            return f"run {firing.run_id}"
        return format_html('<a href="{}">run {}</a>', url, firing.run_id)

    @admin.display(description="run state")
    def run_state(self, firing: RuleFiring) -> SafeString | str:
        if firing.run is None:
            return "—"
        return clipped(
            f"{firing.run.state}: {firing.run.state_reason}" if firing.run.state_reason else firing.run.state
        )

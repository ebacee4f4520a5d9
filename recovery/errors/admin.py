"""The admin of the recovery app: agents and their keys, classification rules, and the errors reported.

Every change goes through recovery.errors.services with the operator's reason, so it is audited exactly once with
source "admin". Error patterns and events are read-only: only intake writes them.
"""

from __future__ import annotations

from typing import Any

import pydantic
from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.formats import localize
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.utils.timezone import localtime

from core.admin_helpers import (
    ReadOnlyAdmin,
    ReasonedDeleteMixin,
    ServiceLayerAdmin,
    admin_actor,
    adopt,
    clipped,
    pretty_json,
    reason_widget,
    truncated,
)
from recovery.errors import models, services
from recovery.errors.models import ClassificationRule, ErrorEvent, ErrorPattern
from recovery.errors.schemas import ErrorIn

# --- Classification rules --------------------------------------------------------------------------------


class TypeNamesField(forms.CharField):
    """The rule's JSON list of type names as one comma-separated line, which is how people read and type it."""

    def prepare_value(self, value: Any) -> Any:
        return ", ".join(value) if isinstance(value, list) else value

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        text = super().to_python(value) or ""
        names = (name.strip() for name in text.replace("\n", ",").split(","))
        return list(dict.fromkeys(name for name in names if name))


class ClassificationRuleForm(forms.ModelForm):
    type_names = TypeNamesField(
        required=False,
        widget=forms.TextInput(attrs={"size": 100}),
        help_text=(
            "Exception type names, comma-separated, case-insensitive. A reported httpx.ConnectTimeout "
            "matches ConnectTimeout or httpx.ConnectTimeout."
        ),
    )
    audit_reason = forms.CharField(
        label="Why are you changing this rule?",
        widget=reason_widget(),
        help_text="Required. Recorded in the audit trail with your name.",
    )

    class Meta:
        model = ClassificationRule
        fields = models.RULE_FIELDS


def criteria_summary(rule: ClassificationRule) -> str:
    parts = []
    if rule.service:
        parts.append(f"service={rule.service}")
    if rule.type_names:
        parts.append("type∈{" + ", ".join(rule.type_names) + "}")
    if rule.status_min is not None or rule.status_max is not None:
        parts.append(f"status {rule.status_min or 0}-{rule.status_max or 999}")
    if rule.message_regex:
        parts.append(f"/{rule.message_regex}/")
    return "; ".join(parts)


class DryRunForm(forms.Form):
    """The fields of an error report. Only pydantic (ErrorIn, as the API uses) validates them."""

    service = forms.CharField(required=False, help_text="A lower-case slug, e.g. openai.")
    operation = forms.CharField(required=False)
    type = forms.CharField(required=False, label="Exception type", help_text="e.g. httpx.ConnectTimeout")
    message = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3, "cols": 80}))
    status_code = forms.CharField(required=False, label="Status code")
    retry_after = forms.CharField(required=False, help_text="Seconds, or an HTTP date.")

    error_in: ErrorIn | None = None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        given = {name: value for name, value in cleaned.items() if value != ""}
        try:
            self.error_in = ErrorIn.model_validate(given)
        except pydantic.ValidationError as error:
            for item in error.errors():
                name = str(item["loc"][0]) if item["loc"] else None
                self.add_error(name if name in self.fields else None, item["msg"])
        return cleaned


def dry_run_url(**params: Any) -> str:
    """The dry-run page filled in with an error already seen; long messages are cut to keep URLs sane."""
    params["message"] = (params.get("message") or "")[:2000]
    query = urlencode({name: value for name, value in params.items() if value not in (None, "")})
    return f"{reverse('admin:recovery_classificationrule_dry_run')}?{query}"


class ClassificationRuleAdmin(ReasonedDeleteMixin, ServiceLayerAdmin):
    form = ClassificationRuleForm
    reason_field = "audit_reason"
    list_display = ["priority", "name", "enabled", "criteria", "verdict", "flags", "builtin"]
    list_display_links = ["name"]
    list_filter = ["enabled", "error_class", "severity", "builtin"]
    search_fields = ["name", "message_regex"]
    # Read in priority order, as the classifier tries them: the built-ins and a team's own fit on one page.
    list_per_page = 100
    readonly_fields = ["builtin", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "description", "enabled", "priority"]}),
        (
            "Criteria",
            {
                "fields": ["type_names", "status_min", "status_max", "message_regex", "service"],
                "description": "Every criterion that is set must match; the lowest priority wins.",
            },
        ),
        (
            "Verdict",
            {
                "fields": [
                    "error_class",
                    "severity",
                    "kind",
                    "retryable",
                    "counts_toward_breaker",
                    "needs_human",
                ]
            },
        ),
        ("Audit", {"fields": ["audit_reason"]}),
        ("Record", {"fields": ["builtin", "created_at", "updated_at"], "classes": ["collapse"]}),
    ]
    actions = ["delete_rules"]
    change_list_template = "admin/rebound/rule_change_list.html"

    @admin.display(description="criteria")
    def criteria(self, rule: ClassificationRule) -> SafeString | str:
        return clipped(criteria_summary(rule), "20em")

    @admin.display(description="verdict", ordering="error_class")
    def verdict(self, rule: ClassificationRule) -> str:
        return f"{rule.error_class} / {rule.kind} ({rule.severity})"

    @admin.display(description="flags")
    def flags(self, rule: ClassificationRule) -> str:
        names = [("retryable", rule.retryable), ("breaker", rule.counts_toward_breaker)]
        names.append(("human", rule.needs_human))
        return " · ".join(name for name, on in names if on) or "—"

    def save_model(self, request: HttpRequest, obj: ClassificationRule, form: Any, change: bool) -> None:
        data = {name: form.cleaned_data[name] for name in models.RULE_FIELDS if name in form.cleaned_data}
        reason = form.cleaned_data.get("audit_reason", "")
        if change:
            # `obj` already carries the new values; the service needs the stored row for the audit's "before".
            stored = ClassificationRule.objects.select_for_update().get(pk=obj.pk)
            saved = services.update_rule(rule=stored, data=data, actor=admin_actor(request), reason=reason)
        else:
            saved = services.create_rule(data=data, actor=admin_actor(request), reason=reason)
        adopt(obj, saved)

    # --- deleting, always with a reason: Django's own delete action and page are replaced ---

    delete_title = "Delete rule"
    delete_intro = (
        "You are about to delete this rule; errors it classified will fall to the next rule that matches:"
    )

    def deleted_message(self, obj: Any, label: str) -> str:
        return f"Deleted the rule “{obj.name}”."

    def _delete(self, request: HttpRequest, rule: ClassificationRule, reason: str) -> bool:
        # The service's audit event writes the admin log entry too (core.audit.services.record).
        services.delete_rule(rule=rule, actor=admin_actor(request), reason=reason)
        return True

    @admin.action(description="Delete selected rules (asks for a reason)", permissions=["delete"])
    def delete_rules(
        self, request: HttpRequest, queryset: QuerySet[ClassificationRule]
    ) -> TemplateResponse | None:
        return self._reasoned_delete_action(request, queryset, "delete_rules", "Delete rules", "rules")

    # --- the dry run ---

    def get_urls(self) -> list[URLPattern]:
        dry_run = path(
            "dry-run/",
            self.admin_site.admin_view(self.dry_run_view),
            name="recovery_classificationrule_dry_run",
        )
        # Before the default patterns, whose "<path:object_id>/" would take "dry-run/" for an object id.
        return [dry_run, *super().get_urls()]

    def dry_run_view(self, request: HttpRequest) -> TemplateResponse:
        """Classify an error with the rules in force, as the API does, without recording anything."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        # A GET form: nothing changes, and a filled-in page can be linked to (from patterns and events).
        bound = any(name in request.GET for name in DryRunForm.base_fields)
        form = DryRunForm(request.GET if bound else None)
        classified = None
        if form.is_valid() and form.error_in is not None:
            classified = services.classify_report(form.error_in.to_report())
        rule = classified.verdict.rule if classified else None
        context = {
            **self.admin_site.each_context(request),
            "title": "Dry run: classify an error",
            "subtitle": None,
            "opts": self.opts,
            "form": form,
            "classified": classified,
            "rule_url": reverse("admin:recovery_classificationrule_change", args=[rule.id]) if rule else None,
        }
        return TemplateResponse(request, "admin/rebound/rule_dry_run.html", context)


# --- Errors: read-only -----------------------------------------------------------------------------------


class ServiceFilter(admin.SimpleListFilter):
    """Services as seen in the patterns: a small table, where the events' distinct services would be a scan."""

    title = "service"
    parameter_name = "service"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        services_seen = ErrorPattern.objects.order_by("service").values_list("service", flat=True).distinct()
        return [(name, name or "(none)") for name in services_seen]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset if value is None else queryset.filter(service=value)


LATEST_EVENTS = 10


class ErrorPatternAdmin(ReadOnlyAdmin):
    list_display = ["service", "error_class", "severity", "type", "template", "total_count", "last_seen_at"]
    list_display_links = ["service", "template"]
    list_filter = ["error_class", "severity", ServiceFilter, "kind"]
    search_fields = ["message_template", "type_name", "service", "fingerprint"]
    date_hierarchy = "last_seen_at"
    show_full_result_count = False
    fieldsets = [
        (None, {"fields": ["service", "operation", "type_name", "message_template", "sample_message"]}),
        ("Verdict", {"fields": ["error_class", "severity", "kind", "reclassify"]}),
        ("Counts", {"fields": ["total_count", "first_seen_at", "last_seen_at", "fingerprint"]}),
        ("Latest events", {"fields": ["latest_events"]}),
    ]
    readonly_fields = [
        "service",
        "operation",
        "type_name",
        "message_template",
        "sample_message",
        "error_class",
        "severity",
        "kind",
        "reclassify",
        "total_count",
        "first_seen_at",
        "last_seen_at",
        "fingerprint",
        "latest_events",
    ]

    @admin.display(description="message template", ordering="message_template")
    def template(self, pattern: ErrorPattern) -> SafeString | str:
        return clipped(pattern.message_template, "18em")

    @admin.display(description="type", ordering="type_name")
    def type(self, pattern: ErrorPattern) -> SafeString | str:
        return clipped(pattern.type_name, "10em")

    @admin.display(description="with today's rules")
    def reclassify(self, pattern: ErrorPattern) -> SafeString:
        url = dry_run_url(
            service=pattern.service,
            operation=pattern.operation,
            type=pattern.type_name,
            message=pattern.sample_message,
        )
        return format_html('<a href="{}">Classify the sample again (dry run)</a>', url)

    @admin.display(description="events")
    def latest_events(self, pattern: ErrorPattern) -> SafeString:
        events = pattern.events.select_related("agent").order_by("-occurred_at")[:LATEST_EVENTS]
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>',
            (
                (
                    reverse("admin:recovery_errorevent_change", args=[event.pk]),
                    localize(localtime(event.occurred_at)),
                    event.agent or "—",
                    event.status_code or "—",
                    truncated(event.message, 100),
                )
                for event in events
            ),
        )
        all_url = f"{reverse('admin:recovery_errorevent_changelist')}?pattern__id__exact={pattern.pk}"
        return format_html(
            "<table><thead><tr><th>occurred</th><th>agent</th><th>status</th><th>message</th></tr></thead>"
            '<tbody>{}</tbody></table><p><a href="{}">All events of this pattern</a> '
            "(events older than the retention period are pruned; the total above keeps counting).</p>",
            rows,
            all_url,
        )


class ErrorEventAdmin(ReadOnlyAdmin):
    list_display = [
        "occurred_at",
        "service",
        "error_class",
        "type",
        "short_message",
        "status_code",
        "pattern_link",
    ]
    list_filter = ["error_class", "severity", ServiceFilter, "agent", "occurred_at"]
    search_fields = ["message", "type_name", "service", "rule_name", "request_id"]
    date_hierarchy = "occurred_at"
    list_select_related = ["agent"]
    show_full_result_count = False
    fieldsets = [
        (None, {"fields": ["occurred_at", "agent", "service", "operation", "request_id"]}),
        ("Error", {"fields": ["type_name", "message", "status_code", "retry_after_s", "context_json"]}),
        ("Verdict", {"fields": ["error_class", "severity", "rule_name", "pattern_link", "reclassify"]}),
    ]
    readonly_fields = [
        "occurred_at",
        "agent",
        "service",
        "operation",
        "request_id",
        "type_name",
        "message",
        "status_code",
        "retry_after_s",
        "context_json",
        "error_class",
        "severity",
        "rule_name",
        "pattern_link",
        "reclassify",
    ]

    @admin.display(description="message")
    def short_message(self, event: ErrorEvent) -> SafeString | str:
        return clipped(event.message, "18em")

    @admin.display(description="type", ordering="type_name")
    def type(self, event: ErrorEvent) -> SafeString | str:
        return clipped(event.type_name, "10em")

    @admin.display(description="pattern")
    def pattern_link(self, event: ErrorEvent) -> SafeString:
        url = reverse("admin:recovery_errorpattern_change", args=[event.pattern_id])
        return format_html('<a href="{}">#{}</a>', url, event.pattern_id)

    @admin.display(description="context")
    def context_json(self, event: ErrorEvent) -> SafeString | str:
        return pretty_json(event.context)

    @admin.display(description="with today's rules")
    def reclassify(self, event: ErrorEvent) -> SafeString:
        url = dry_run_url(
            service=event.service,
            operation=event.operation,
            type=event.type_name,
            message=event.message,
            status_code=event.status_code,
            retry_after=event.retry_after_s,
        )
        return format_html('<a href="{}">Classify this error again (dry run)</a>', url)

"""The admin of the recovery app: agents and their keys, classification rules, and the errors reported.

Every change goes through recovery.services with the operator's reason, so it is audited exactly once with
source "admin". Error patterns and events are read-only: only intake writes them.
"""

from __future__ import annotations

import re
from typing import Any

import pydantic
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import InlineModelAdmin
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.formats import localize
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.utils.timezone import localtime

from healing.admin import (
    CHANGE_FORM_WITH_ACTIONS,
    ReadOnlyAdmin,
    ReadOnlyInlineMixin,
    ReasonedDeleteMixin,
    RoleAdmin,
    ServiceAdmin,
    admin_actor,
    adopt,
    pretty_json,
    reason_widget,
    reasoned_action,
    truncated,
)
from recovery import services
from recovery.models import Agent, ApiKey, ClassificationRule, ErrorEvent, ErrorPattern
from recovery.schemas import ErrorIn

# --- Agents ----------------------------------------------------------------------------------------------

AGENT_FIELDS = ["name", "description"]


class AgentForm(forms.ModelForm):  # type: ignore[type-arg]
    reason = forms.CharField(
        required=False, widget=reason_widget(), help_text="Recorded in the audit trail with your name."
    )

    class Meta:
        model = Agent
        fields = AGENT_FIELDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A new agent may come without a story; a change to an existing one must say why.
        self.fields["reason"].required = self.instance.pk is not None


class ApiKeyInline(ReadOnlyInlineMixin, admin.TabularInline):  # type: ignore[type-arg]
    """An agent's keys, newest first, read-only: keys are issued and revoked by actions, never edited."""

    model = ApiKey
    fields = ["key", "name", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["key", "name", "created_at", "last_used_at", "revoked_at"]
    extra = 0
    can_delete = False
    show_change_link = True

    @admin.display(description="key")
    def key(self, api_key: ApiKey) -> str:
        return str(api_key)


@admin.register(Agent)
class AgentAdmin(ServiceAdmin):
    form = AgentForm
    list_display = ["name", "is_active", "created_at", "last_seen_at", "live_keys"]
    list_filter = ["is_active"]
    search_fields = ["name", "description"]
    readonly_fields = ["is_active", "created_at", "last_seen_at"]
    add_fieldsets = [(None, {"fields": ["name", "description", "reason"]})]
    fieldsets = [
        (None, {"fields": ["name", "description", "reason"]}),
        (
            "Status",
            {
                "fields": ["is_active", "created_at", "last_seen_at"],
                "description": "Activate, deactivate and issue keys with the actions: they ask for a reason.",
            },
        ),
    ]
    actions = ["issue_api_key", "deactivate_agents", "activate_agents"]
    object_actions = ["issue_api_key", "deactivate_agents", "activate_agents"]
    change_form_template = CHANGE_FORM_WITH_ACTIONS

    def get_queryset(self, request: HttpRequest) -> QuerySet[Agent]:
        live = Count("keys", filter=Q(keys__revoked_at__isnull=True))
        return super().get_queryset(request).annotate(live_key_count=live)

    @admin.display(description="live keys", ordering="live_key_count")
    def live_keys(self, agent: Agent) -> int:
        return agent.live_key_count  # type: ignore[attr-defined,no-any-return]

    def get_inlines(self, request: HttpRequest, obj: Any) -> list[type[InlineModelAdmin]]:  # type: ignore[type-arg]
        return [ApiKeyInline] if obj is not None else []

    # Agents are deactivated, never deleted: their keys, errors and audit events must stay explainable.
    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Agent, form: Any, change: bool) -> None:
        reason = form.cleaned_data.get("reason", "")
        if change:
            data = {name: getattr(obj, name) for name in AGENT_FIELDS}
            services.update_agent(agent_id=obj.pk, data=data, actor=admin_actor(request), reason=reason)
            return
        created = services.create_agent(
            name=obj.name, description=obj.description, actor=admin_actor(request), reason=reason
        )
        adopt(obj, created)

    def object_action_applies(self, name: str, obj: Agent) -> bool:
        return {"deactivate_agents": obj.is_active, "activate_agents": not obj.is_active}.get(name, True)

    @admin.action(description="Issue a new API key", permissions=["operate"])
    def issue_api_key(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        for agent in queryset:
            _, plaintext = services.issue_key(actor=admin_actor(request), agent=agent)
            # The only time anyone sees this key: it is stored as a hash.
            message = "New API key for {}: <code>{}</code> Copy it now: it will not be shown again."
            messages.success(request, format_html(message, agent.name, plaintext))
            if not agent.is_active:
                messages.warning(request, f"{agent.name} is deactivated: its keys work once it is activated.")

    @admin.action(description="Deactivate (asks for a reason)", permissions=["operate"])
    def deactivate_agents(self, request: HttpRequest, queryset: QuerySet[Agent]) -> TemplateResponse | None:
        return self._set_active(request, queryset, active=False)

    @admin.action(description="Activate (asks for a reason)", permissions=["operate"])
    def activate_agents(self, request: HttpRequest, queryset: QuerySet[Agent]) -> TemplateResponse | None:
        return self._set_active(request, queryset, active=True)

    def _set_active(
        self, request: HttpRequest, queryset: QuerySet[Agent], *, active: bool
    ) -> TemplateResponse | None:
        verb = "Activate" if active else "Deactivate"

        def apply(agent: Agent, reason: str) -> bool:
            return services.set_agent_active(
                agent=agent, active=active, actor=admin_actor(request), reason=reason
            )

        def done(changed: int, total: int) -> str:
            return f"{verb}d {changed} of {total} selected agents (the others already were)."

        return reasoned_action(
            self,
            request,
            queryset,
            action=f"{verb.lower()}_agents",
            title=f"{verb} agents",
            submit=verb,
            apply=apply,
            done=done,
        )


# --- API keys --------------------------------------------------------------------------------------------

# A whole key pasted into the search box finds its row by prefix (the only part stored in clear).
PASTED_KEY = re.compile(r"^rb_([0-9a-f]+)(_.*)?$")


class KeyStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("live", "live"), ("revoked", "revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> QuerySet[ApiKey]:
        if self.value() in ("live", "revoked"):
            return queryset.filter(revoked_at__isnull=self.value() == "live")
        return queryset


class KeyOwnerFilter(admin.SimpleListFilter):
    title = "owner"
    parameter_name = "owner"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("agent", "agents"), ("user", "users")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> QuerySet[ApiKey]:
        if self.value() in ("agent", "user"):
            return queryset.filter(agent__isnull=self.value() != "agent")
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(RoleAdmin):
    list_display = ["key", "owner", "name", "created_at", "last_used_at", "revoked_at"]
    list_filter = [KeyStatusFilter, KeyOwnerFilter]
    search_fields = ["prefix", "agent__name", "user__username"]
    list_select_related = ["agent", "user"]
    fields = ["key", "owner", "name", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["key", "owner", "name", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke_keys"]
    object_actions = ["revoke_keys"]
    change_form_template = CHANGE_FORM_WITH_ACTIONS

    @admin.display(description="key", ordering="prefix")
    def key(self, api_key: ApiKey) -> str:
        return str(api_key)

    @admin.display(description="owner")
    def owner(self, api_key: ApiKey) -> SafeString:
        if api_key.agent_id:
            url = reverse("admin:recovery_agent_change", args=[api_key.agent_id])
            return format_html('agent <a href="{}">{}</a>', url, api_key.agent)
        return format_html("user {}", api_key.user)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[ApiKey], search_term: str
    ) -> tuple[QuerySet[ApiKey], bool]:
        pasted = PASTED_KEY.match(search_term.strip())
        return super().get_search_results(request, queryset, pasted.group(1) if pasted else search_term)

    # Keys are issued by the agents' action and revoked by the action below; the admin never edits them.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def object_action_applies(self, name: str, obj: ApiKey) -> bool:
        return not obj.is_revoked

    @admin.action(description="Revoke (asks for a reason)", permissions=["operate"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> TemplateResponse | None:
        def apply(api_key: ApiKey, reason: str) -> bool:
            return services.revoke_key(api_key=api_key, actor=admin_actor(request), reason=reason)

        def done(changed: int, total: int) -> str:
            return f"Revoked {changed} of {total} selected keys (the others were revoked already)."

        return reasoned_action(
            self,
            request,
            queryset,
            action="revoke_keys",
            title="Revoke keys",
            submit="Revoke",
            apply=apply,
            done=done,
        )


# --- Classification rules --------------------------------------------------------------------------------


class TypeNamesField(forms.CharField):
    """The rule's JSON list of type names as one comma-separated line, which is how people read and type it."""

    def prepare_value(self, value: Any) -> Any:
        return ", ".join(value) if isinstance(value, list) else value

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        text = super().to_python(value) or ""
        names = (name.strip() for name in text.replace("\n", ",").split(","))
        return list(dict.fromkeys(name for name in names if name))


class RuleForm(forms.ModelForm):  # type: ignore[type-arg]
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
        fields = services.RULE_FIELDS


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


@admin.register(ClassificationRule)
class ClassificationRuleAdmin(ReasonedDeleteMixin, ServiceAdmin):
    form = RuleForm
    reason_field = "audit_reason"
    list_display = [
        "priority",
        "name",
        "enabled",
        "criteria",
        "error_class",
        "severity",
        "kind",
        "flags",
        "builtin",
    ]
    list_display_links = ["name"]
    list_filter = ["enabled", "error_class", "severity", "builtin"]
    search_fields = ["name", "message_regex"]
    # All the rules on one page: they are read in priority order, as the classifier tries them.
    list_per_page = 500
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
    def criteria(self, rule: ClassificationRule) -> str:
        return truncated(criteria_summary(rule), 100)

    @admin.display(description="flags")
    def flags(self, rule: ClassificationRule) -> str:
        names = [("retryable", rule.retryable), ("breaker", rule.counts_toward_breaker)]
        names.append(("human", rule.needs_human))
        return " · ".join(name for name, on in names if on) or "—"

    def save_model(self, request: HttpRequest, obj: ClassificationRule, form: Any, change: bool) -> None:
        data = {name: form.cleaned_data[name] for name in services.RULE_FIELDS if name in form.cleaned_data}
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
        with transaction.atomic():
            self.log_deletions(request, ClassificationRule.objects.filter(pk=rule.pk))
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


@admin.register(ErrorPattern)
class ErrorPatternAdmin(ReadOnlyAdmin):
    list_display = [
        "service",
        "operation",
        "error_class",
        "severity",
        "kind",
        "type_name",
        "template",
        "total_count",
        "first_seen_at",
        "last_seen_at",
    ]
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
    def template(self, pattern: ErrorPattern) -> str:
        return truncated(pattern.message_template) or "—"

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


@admin.register(ErrorEvent)
class ErrorEventAdmin(ReadOnlyAdmin):
    list_display = [
        "occurred_at",
        "service",
        "operation",
        "error_class",
        "severity",
        "type_name",
        "short_message",
        "status_code",
        "rule_name",
        "agent",
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
    def short_message(self, event: ErrorEvent) -> str:
        return truncated(event.message)

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


# Last: the breaker and degradation admins import this module's neighbours, and register on import.
from recovery import (  # noqa: E402, F401
    breaker_admin,
    checkpoint_admin,
    degradation_admin,
    recovery_admin,
    retry_admin,
    saga_admin,
)

"""The admin of agents and API keys: keys issued (shown once), revoked and found by their pasted text; every
change with a reason, through core.access.services."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, TypedDict

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import InlineModelAdmin
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from core.access import services
from core.access.models import Agent, ApiKey
from core.admin_helpers import (
    CHANGE_FORM_WITH_ACTIONS,
    ReadOnlyInlineMixin,
    RoleAdmin,
    ServiceLayerAdmin,
    admin_actor,
    adopt,
    reason_widget,
    reasoned_action,
)

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class LiveKeys(TypedDict):
    """What `AgentAdmin.get_queryset` annotates each agent with."""

    live_key_count: int


# --- Agents ----------------------------------------------------------------------------------------------

AGENT_FIELDS = ["name", "description"]


class AgentForm(forms.ModelForm):
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


class ApiKeyInline(ReadOnlyInlineMixin, admin.TabularInline):
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


class AgentAdmin(ServiceLayerAdmin):
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
    def live_keys(self, agent: WithAnnotations[Agent, LiveKeys]) -> int:
        return agent.live_key_count

    def get_inlines(self, request: HttpRequest, obj: Any) -> list[type[InlineModelAdmin]]:
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
            url = reverse("admin:core_agent_change", args=[api_key.agent_id])
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

"""The admin of graceful degradation: each scope's level (forced and cleared only through actions that ask why),
the history of changes (read-only), and the rules (every change audited).

As everywhere in Rebound's admin, nothing is saved directly: forcing goes through `services.force`,
clearing through `clear` and rule edits through `create_rule` / `update_rule`, each with the operator's reason.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import localize
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.timezone import localtime

from core.admin_helpers import (
    CHANGE_FORM_WITH_ACTIONS,
    CONFIRMED,
    ReadOnlyAdmin,
    ReasonForm,
    ServiceLayerAdmin,
    admin_actor,
    adopt,
    clipped,
    pill,
    pretty_json,
    reason_widget,
    reasoned_action,
    render_reason_page,
)
from recovery.breakers.admin import OVERRIDE_TEMPLATE
from recovery.breakers.models import Service
from recovery.degradation import services
from recovery.degradation.models import (
    GLOBAL_SCOPE,
    DegradationEvent,
    DegradationLevel,
    DegradationRule,
    DegradationState,
)
from recovery.degradation.selectors import view_of

LEVEL_COLORS = {
    "normal": "#2e7d32",  # green
    "degraded": "#b26a00",  # amber
    "minimal": "#c62828",  # red
    "emergency": "#7f0000",  # dark red
}


def level_badge(level: str) -> SafeString:
    """A level as a coloured pill; the name stays in the text for readers without colour."""
    return pill(level, LEVEL_COLORS.get(level, "#9e9e9e"), f"rebound-level-badge rebound-level-{level}")


def scope_label(scope: str) -> str:
    return "the fleet (*)" if scope == GLOBAL_SCOPE else scope


# --- forms -----------------------------------------------------------------------------------------------


def scope_choices() -> list[tuple[str, str]]:
    names = Service.objects.order_by("name").values_list("name", flat=True)
    return [(GLOBAL_SCOPE, scope_label(GLOBAL_SCOPE)), *((name, name) for name in names)]


def expiry_field() -> forms.DateTimeField:
    return forms.DateTimeField(
        required=False,
        label="Expires at",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="The scope returns to its automatic level then; leave empty to keep the level until an "
        "operator clears it.",
    )


class ExpiryMixin:
    """An optional end in the future; the input carries no zone, so the help says which one it is read in."""

    fields: dict[str, forms.Field]
    cleaned_data: dict[str, Any]

    def _say_zone(self) -> None:
        zone = timezone.get_current_timezone_name()
        self.fields["expires_at"].help_text = f"Optional, {zone}. {self.fields['expires_at'].help_text}"

    def clean_expires_at(self) -> datetime | None:
        value: datetime | None = self.cleaned_data.get("expires_at")
        if value is not None and value <= timezone.now():
            raise forms.ValidationError("Must be in the future.")
        return value


class ForceForm(ExpiryMixin, forms.ModelForm):
    """The add page: force a level on any scope, whether it has a row yet or not."""

    scope = forms.ChoiceField(choices=scope_choices)
    level = forms.ChoiceField(choices=DegradationLevel.choices, help_text="normal pins the scope at normal.")
    reason = forms.CharField(
        widget=reason_widget(), help_text="Required. Recorded in the audit trail with your name."
    )
    expires_at = expiry_field()

    class Meta:
        model = DegradationState
        fields: list[str] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._say_zone()

    def validate_unique(self) -> None:
        # A scope with a row already is forced again, not refused: the service finds or creates the row.
        return


class LevelForm(ExpiryMixin, forms.Form):
    """What the "force a level" action asks beside the reason: the level and its optional end."""

    level = forms.ChoiceField(choices=DegradationLevel.choices, help_text="normal pins the scopes at normal.")
    expires_at = expiry_field()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._say_zone()


def _when(value: datetime | None) -> str:
    return localize(localtime(value)) if value else "—"


# --- states ----------------------------------------------------------------------------------------------


class DegradationStateAdmin(ServiceLayerAdmin):
    list_display = ["scope_name", "level", "source", "automatic", "forced", "changed_at"]
    list_display_links = ["scope_name"]
    search_fields = ["scope", "forced_reason", "automatic_reason"]
    readonly_fields = [
        "scope",
        "level",
        "source",
        "automatic_level",
        "automatic_reason",
        "pending_level",
        "pending_since",
        "forced_level",
        "forced_reason",
        "forced_until",
        "forced_by",
        "changed_at",
        "updated_at",
        "history",
    ]
    fieldsets = [
        (None, {"fields": ["scope", "level", "source", "changed_at", "history"]}),
        (
            "Automatic (from the rules)",
            {"fields": ["automatic_level", "automatic_reason", "pending_level", "pending_since"]},
        ),
        (
            "Forced by an operator",
            {
                "fields": ["forced_level", "forced_reason", "forced_until", "forced_by"],
                "description": "Force a level or clear it with the buttons above: each asks for a reason.",
            },
        ),
    ]
    add_fieldsets = [(None, {"fields": ["scope", "level", "reason", "expires_at"]})]
    actions = ["force_level", "clear_forced"]
    object_actions = ["force_level", "clear_forced"]
    change_form_template = CHANGE_FORM_WITH_ACTIONS

    # Rows change only through force and clear (actions and the add page) and the evaluations.
    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # The add page is a form (scope, level, reason, expiry); an existing row is only shown.
        return self.readonly_fields if obj is not None else []

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = ForceForm
        return super().get_form(request, obj, change, **kwargs)

    def object_action_applies(self, name: str, obj: DegradationState) -> bool:
        return name != "clear_forced" or bool(obj.forced_level)

    # --- columns ---

    @admin.display(description="scope", ordering="scope")
    def scope_name(self, state: DegradationState) -> str:
        return scope_label(state.scope)

    @admin.display(description="level in force")
    def level(self, state: DegradationState) -> SafeString:
        return level_badge(view_of(state, state.scope).level)

    @admin.display(description="source")
    def source(self, state: DegradationState) -> str:
        return view_of(state, state.scope).source

    @admin.display(description="automatic")
    def automatic(self, state: DegradationState) -> str:
        text = state.automatic_level
        if state.pending_level:
            text += f" (→ {state.pending_level} pending since {_when(state.pending_since)})"
        return text

    @admin.display(description="forced")
    def forced(self, state: DegradationState) -> SafeString | str:
        return clipped(self._forced(state), "24em")

    def _forced(self, state: DegradationState) -> str:
        if not state.forced_level:
            return "—"
        by = f" by {state.forced_by}" if state.forced_by else ""
        if state.forced_until is None:
            return f"{state.forced_level}{by}, until cleared"
        if view_of(state, state.scope).source != "operator":
            return f"{state.forced_level}{by} (expired {_when(state.forced_until)})"
        return f"{state.forced_level}{by} until {_when(state.forced_until)}"

    @admin.display(description="history")
    def history(self, state: DegradationState) -> SafeString:
        url = f"{reverse('admin:recovery_degradationevent_changelist')}?scope={state.scope}"
        return format_html('<a href="{}">Every change of this level</a>', url)

    # --- the add page: force a level on a scope ---

    def save_model(self, request: HttpRequest, obj: DegradationState, form: Any, change: bool) -> None:
        data = form.cleaned_data
        saved = services.force(
            scope=data["scope"],
            level=data["level"],
            reason=data["reason"],
            expires_at=data.get("expires_at"),
            actor=admin_actor(request),
        )
        adopt(obj, saved)

    # --- actions ---

    @admin.action(description="Force a level (asks for a reason)", permissions=["operate"])
    def force_level(
        self, request: HttpRequest, queryset: QuerySet[DegradationState]
    ) -> TemplateResponse | None:
        form = LevelForm(request.POST if CONFIRMED in request.POST else None)
        title, submit = "Force a degradation level", "Force"
        if form.is_bound and not form.is_valid():
            # A bad level or expiry keeps the page up, as a missing reason does: nothing changes until all is right.
            page = render_reason_page(
                self,
                request,
                ReasonForm(request.POST),
                objects=list(queryset),
                title=title,
                intro="You are about to force a level on these scopes:",
                submit=submit,
                action="force_level",
            )
            return _with_level(page, form)
        level = form.cleaned_data["level"] if form.is_bound else ""
        expires_at = form.cleaned_data["expires_at"] if form.is_bound else None

        def apply(state: DegradationState, reason: str) -> bool:
            services.force(
                scope=state.scope,
                level=level,
                reason=reason,
                expires_at=expires_at,
                actor=admin_actor(request),
            )
            return True

        asked = reasoned_action(
            self,
            request,
            queryset,
            action="force_level",
            title=title,
            submit=submit,
            apply=apply,
            done=lambda changed, total: f"Forced {level} on {changed} of {total} selected scopes.",
        )
        return _with_level(asked, form)

    @admin.action(description="Clear the forced level (asks for a reason)", permissions=["operate"])
    def clear_forced(
        self, request: HttpRequest, queryset: QuerySet[DegradationState]
    ) -> TemplateResponse | None:
        def apply(state: DegradationState, reason: str) -> bool:
            if not state.forced_level:
                return False  # nothing to clear: no audit event, no change
            services.clear(scope=state.scope, reason=reason, actor=admin_actor(request))
            return True

        return reasoned_action(
            self,
            request,
            queryset,
            action="clear_forced",
            title="Clear forced degradation levels",
            submit="Clear",
            apply=apply,
            done=lambda changed, total: (
                f"Cleared the forced level of {changed} of {total} selected scopes (the others had none)."
            ),
        )


def _with_level(page: TemplateResponse | None, form: LevelForm) -> TemplateResponse | None:
    """The shared reason page with the level and expiry fields added (it is rendered lazily, so it can)."""
    if page is None:
        return None
    page.template_name = OVERRIDE_TEMPLATE
    page.context_data = {**(page.context_data or {}), "expiry_form": form}
    return page


# --- events: read-only -----------------------------------------------------------------------------------


class DegradationEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "scope_name", "change", "source", "short_reason", "actor_user"]
    list_display_links = ["created_at"]
    list_filter = ["source", "to_level", ("scope", admin.AllValuesFieldListFilter)]
    search_fields = ["scope", "reason"]
    date_hierarchy = "created_at"
    list_select_related = ["actor_user"]
    # The history only grows: counting all of it on every page would be the slowest query here.
    show_full_result_count = False
    fields = readonly_fields = (
        "created_at",
        "scope",
        "from_level",
        "to_level",
        "source",
        "reason",
        "actor_user",
        "expires_at",
        "signals_json",
    )

    @admin.display(description="scope", ordering="scope")
    def scope_name(self, event: DegradationEvent) -> str:
        return scope_label(event.scope)

    @admin.display(description="change")
    def change(self, event: DegradationEvent) -> SafeString:
        return format_html("{} → {}", level_badge(event.from_level), level_badge(event.to_level))

    @admin.display(description="reason")
    def short_reason(self, event: DegradationEvent) -> SafeString | str:
        return clipped(event.reason, "28em")

    @admin.display(description="signals")
    def signals_json(self, event: DegradationEvent) -> SafeString | str:
        return pretty_json(event.signals)


# --- rules: editable, audited ----------------------------------------------------------------------------


class DegradationRuleForm(forms.ModelForm):
    audit_reason = forms.CharField(
        label="Why are you changing this rule?",
        widget=reason_widget(),
        help_text="Required. Recorded in the audit trail with your name.",
    )

    class Meta:
        model = DegradationRule
        fields = services.RULE_FIELDS


class DegradationRuleAdmin(ServiceLayerAdmin):
    form = DegradationRuleForm
    reason_field = "audit_reason"
    list_display = ["name", "enabled", "signal", "threshold", "level", "service", "builtin"]
    list_filter = ["enabled", "signal", "level", "builtin"]
    search_fields = ["name", "description"]
    list_select_related = ["service"]
    readonly_fields = ["builtin"]
    fieldsets = [
        (None, {"fields": ["name", "description", "enabled"]}),
        (
            "When",
            {
                "fields": ["signal", "threshold", "service"],
                "description": "The rule applies when the signal reaches the threshold. Without a service it "
                "applies to the fleet, except service_breaker_open, which then applies to every service.",
            },
        ),
        ("Then", {"fields": ["level"]}),
        ("Audit", {"fields": ["audit_reason"]}),
        ("Record", {"fields": ["builtin"], "classes": ["collapse"]}),
    ]

    # Rules are disabled, not deleted: the events that name them stay readable.
    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: DegradationRule, form: Any, change: bool) -> None:
        data = {name: form.cleaned_data[name] for name in services.RULE_FIELDS}
        reason = form.cleaned_data.get("audit_reason", "")
        if change:
            saved = services.update_rule(rule_id=obj.pk, data=data, actor=admin_actor(request), reason=reason)
        else:
            saved = services.create_rule(data=data, actor=admin_actor(request), reason=reason)
        adopt(obj, saved)

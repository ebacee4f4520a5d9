"""The admin of services and their circuit breakers: settings, the live breaker, its transitions, overrides.

As everywhere in Rebound's admin, nothing is saved directly: settings go through `services.update_service` and
overrides through `services.set_override`, each with the operator's reason, so that every change lands in the
audit trail exactly once with source "admin". Transitions are read-only: only the breakers write them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.options import InlineModelAdmin
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.template.loader import render_to_string
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
    ReadOnlyInlineMixin,
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
from recovery.breakers import registry, selectors, services
from recovery.breakers.models import SETTINGS_FIELDS, BreakerTransition, Service

# The settings that shape the breaker itself, as opposed to what the service is (kind, criticality, ...).
IDENTITY_FIELDS = ["kind", "criticality", "description"]
BREAKER_FIELDS = [name for name in SETTINGS_FIELDS if name not in IDENTITY_FIELDS]
TRANSITIONS_SHOWN = 20
OVERRIDE_TEMPLATE = "admin/rebound/override_confirmation.html"
PANEL_TEMPLATE = "admin/rebound/breaker_panel.html"

# --- Showing a breaker -----------------------------------------------------------------------------------

BADGE_COLORS = {
    "closed": "#2e7d32",  # green
    "half_open": "#b26a00",  # amber
    "open": "#c62828",  # red
    "forced_open": "#7f0000",  # dark red
    "forced_closed": "#1565c0",  # blue
    "disabled": "#757575",  # grey
    "unknown": "#9e9e9e",  # grey
}


def state_badge(state: str) -> SafeString:
    """A breaker state as a coloured pill; the state's name stays in the text for readers without colour."""
    color = BADGE_COLORS.get(state, BADGE_COLORS["unknown"])
    return pill(state.replace("_", " "), color, f"rebound-breaker-badge rebound-breaker-{state}")


def _rate(value: Any) -> str:
    return f"{float(value or 0):g}%"


def window_summary(window: dict[str, Any] | None) -> str:
    """A window (live, or the snapshot a transition kept) in one line: "3/20 failed (15%); 2 in a row"."""
    if not window:
        return "—"
    parts = [f"{window.get('failures', 0)}/{window.get('calls', 0)} failed ({_rate(window.get('rate'))})"]
    # The live window names it consecutive_failures; a transition's snapshot, consecutive.
    consecutive = window.get("consecutive_failures", window.get("consecutive"))
    if consecutive:
        parts.append(f"{consecutive} in a row")
    if window.get("trial_permits_in_use"):
        parts.append(f"{window['trial_permits_in_use']} trial calls out")
    patterns = window.get("patterns") or []
    if patterns:
        named = (
            f"{p.get('type_name') or p.get('error_class') or '?'} ({p.get('count', 0)})" for p in patterns
        )
        parts.append("patterns: " + ", ".join(named))
    return "; ".join(parts)


def _when(value: datetime | None) -> str:
    return localize(localtime(value)) if value else "—"


def transition_actor(transition: BreakerTransition) -> str:
    return transition.actor_label


def breaker_of(service: Service) -> dict[str, Any]:
    """The live breaker, read once per service and page: the changelist shows it in several columns, and each
    read is a round trip to the breaker store."""
    view = getattr(service, "_rebound_breaker_view", None)
    if view is None:
        view = selectors.breaker_view(service)
        service._rebound_breaker_view = view  # type: ignore[attr-defined]
    return view


def with_pattern_links(window: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The patterns a transition's window saw, each with the admin page of the pattern."""
    patterns = (window or {}).get("patterns") or []
    return [
        {**p, "url": reverse("admin:recovery_errorpattern_change", args=[p["pattern"]])}
        if p.get("pattern")
        else p
        for p in patterns
    ]


def breaker_panel(service: Service) -> SafeString:
    view = breaker_of(service)
    why = view["why"]
    context = {
        "view": view,
        "badge": state_badge(view["state"]),
        "automatic_badge": state_badge(view["automatic_state"]),
        "window": window_summary(view["window"]) if view["window"] is not None else None,
        "why": why,
        "why_badges": (state_badge(why["from_state"]), state_badge(why["to_state"])) if why else None,
        "why_window": window_summary(why["window"]) if why else None,
        "why_patterns": with_pattern_links(why["window"]) if why else [],
        "stored_override": service.override,
        "override_expired": service.override != Service.Override.AUTO and view["override"] is None,
        "transitions_url": f"{reverse('admin:recovery_breakertransition_changelist')}"
        f"?service__id__exact={service.pk}",
    }
    return render_to_string(PANEL_TEMPLATE, context)


# --- Transitions: read-only, inline and on their own -----------------------------------------------------


class LatestTransitions(BaseInlineFormSet):
    """Only the newest transitions: a flapping breaker can have thousands, and the page must stay light.

    The slice is taken here, after the formset has filtered by service (a sliced queryset cannot be filtered).
    """

    def get_queryset(self) -> QuerySet[BreakerTransition]:
        if not hasattr(self, "_latest"):
            self._latest = super().get_queryset()[:TRANSITIONS_SHOWN]
        return self._latest


class TransitionInline(ReadOnlyInlineMixin, admin.TabularInline):
    model = BreakerTransition
    formset = LatestTransitions
    verbose_name_plural = f"transitions (the latest {TRANSITIONS_SHOWN})"
    # A tuple: one sequence for both, which the admin only reads.
    fields = readonly_fields = ("created_at", "change", "reason", "actor_label", "window_label")
    extra = 0
    can_delete = False
    show_change_link = True

    def get_queryset(self, request: HttpRequest) -> QuerySet[BreakerTransition]:
        qs = super().get_queryset(request).select_related("actor_user", "actor_agent")
        return qs.order_by("-created_at", "-id")

    @admin.display(description="change")
    def change(self, transition: BreakerTransition) -> SafeString:
        return format_html("{} → {}", state_badge(transition.from_state), state_badge(transition.to_state))

    @admin.display(description="actor")
    def actor_label(self, transition: BreakerTransition) -> str:
        return transition_actor(transition)

    @admin.display(description="window")
    def window_label(self, transition: BreakerTransition) -> str:
        return window_summary(transition.window)


class BreakerTransitionAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "service", "from_badge", "to_badge", "short_reason", "actor_label"]
    list_display_links = ["created_at"]
    list_filter = ["to_state", "actor", "service"]
    search_fields = ["service__name", "reason"]
    date_hierarchy = "created_at"
    list_select_related = ["service", "actor_user", "actor_agent"]
    # The table only grows: counting all of it on every page would be the slowest query here.
    show_full_result_count = False
    fields = readonly_fields = (
        "created_at",
        "service",
        "from_state",
        "to_state",
        "reason",
        "actor_label",
        "window_label",
        "window_json",
    )

    @admin.display(description="from", ordering="from_state")
    def from_badge(self, transition: BreakerTransition) -> SafeString:
        return state_badge(transition.from_state)

    @admin.display(description="to", ordering="to_state")
    def to_badge(self, transition: BreakerTransition) -> SafeString:
        return state_badge(transition.to_state)

    @admin.display(description="reason")
    def short_reason(self, transition: BreakerTransition) -> SafeString | str:
        return clipped(transition.reason, "16em")

    @admin.display(description="actor", ordering="actor")
    def actor_label(self, transition: BreakerTransition) -> str:
        return transition_actor(transition)

    @admin.display(description="window")
    def window_label(self, transition: BreakerTransition) -> str:
        return window_summary(transition.window)

    @admin.display(description="window as recorded")
    def window_json(self, transition: BreakerTransition) -> SafeString | str:
        return pretty_json(transition.window)


# --- Services --------------------------------------------------------------------------------------------


class ServiceForm(forms.ModelForm):
    audit_reason = forms.CharField(
        label="Why are you changing this service?",
        required=False,
        widget=reason_widget(),
        help_text="Recorded in the audit trail with your name. Required for a change.",
    )

    class Meta:
        model = Service
        fields = ["name", *SETTINGS_FIELDS]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Registering a service may come without a story; changing a breaker's settings must say why.
        self.fields["audit_reason"].required = self.instance.pk is not None


class ExpiryForm(forms.Form):
    """The forcing overrides' optional end: a forgotten override is how a healthy service stays cut off."""

    expires_at = forms.DateTimeField(
        required=False,
        label="Expires at",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="The breaker returns to automatic then; leave empty to keep the override until an operator "
        "ends it.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The input carries no zone: it is read in the current one, so say which.
        zone = timezone.get_current_timezone_name()
        self.fields["expires_at"].help_text = f"Optional, {zone}. {self.fields['expires_at'].help_text}"

    def clean_expires_at(self) -> datetime | None:
        value: datetime | None = self.cleaned_data.get("expires_at")
        if value is not None and value <= timezone.now():
            raise forms.ValidationError("Must be in the future.")
        return value


@dataclass(frozen=True)
class OverrideAction:
    mode: str
    verb: str  # the button and the reason page: "Force open"
    done: str  # the report: "Forced open {changed} of {total} selected services."
    expires: bool  # whether the override may be given an end


OVERRIDE_ACTIONS = {
    "force_open": OverrideAction(
        Service.Override.FORCED_OPEN,
        "Force open",
        "Forced open {changed} of {total} selected services.",
        True,
    ),
    "force_close": OverrideAction(
        Service.Override.FORCED_CLOSED,
        "Force close",
        "Forced closed {changed} of {total} selected services.",
        True,
    ),
    "disable_breakers": OverrideAction(
        Service.Override.DISABLED,
        "Disable",
        "Disabled the breakers of {changed} of {total} selected services.",
        True,
    ),
    "back_to_automatic": OverrideAction(
        Service.Override.AUTO,
        "Return to automatic",
        "Returned {changed} of {total} selected services to automatic (the others already were).",
        False,
    ),
}


class BreakerServiceAdmin(ServiceLayerAdmin):
    form = ServiceForm
    reason_field = "audit_reason"
    list_display = [
        "name",
        "kind",
        "criticality",
        "state",
        "window",
        "override_label",
        "auto_registered",
    ]
    list_filter = ["kind", "criticality", "override", "auto_registered"]
    search_fields = ["name", "description"]
    # Each row reads its breaker from the store: a page must stay a bounded number of round trips.
    list_per_page = 100
    list_max_show_all = 100
    readonly_fields = ["live_breaker", "auto_registered", "created_at", "updated_at"]
    add_fieldsets = [
        (None, {"fields": ["name", *IDENTITY_FIELDS]}),
        ("Breaker settings", {"fields": BREAKER_FIELDS}),
        ("Audit", {"fields": ["audit_reason"]}),
    ]
    fieldsets = [
        (None, {"fields": ["name", *IDENTITY_FIELDS]}),
        (
            "Live breaker",
            {
                "fields": ["live_breaker"],
                "description": "Force open, force close, disable and return to automatic with the buttons "
                "above: each asks for a reason.",
            },
        ),
        ("Breaker settings", {"fields": [*BREAKER_FIELDS]}),
        ("Audit", {"fields": ["audit_reason"]}),
        ("Record", {"fields": ["auto_registered", "created_at", "updated_at"], "classes": ["collapse"]}),
    ]
    actions = list(OVERRIDE_ACTIONS)
    object_actions = list(OVERRIDE_ACTIONS)
    change_form_template = CHANGE_FORM_WITH_ACTIONS

    # --- the list ---

    @admin.display(description="breaker")
    def state(self, service: Service) -> SafeString:
        return state_badge(breaker_of(service)["state"])

    @admin.display(description="window")
    def window(self, service: Service) -> SafeString | str:
        return clipped(window_summary(breaker_of(service)["window"]), "24em")

    @admin.display(description="override", ordering="override")
    def override_label(self, service: Service) -> str:
        if service.override == Service.Override.AUTO:
            return "—"
        if registry.override_in_force(service) == Service.Override.AUTO:
            # Past its end, not yet cleared by the periodic task: no longer in force.
            return f"{service.override} (expired {_when(service.override_until)})"
        if service.override_until is None:
            return f"{service.override}"
        return f"{service.override} until {_when(service.override_until)}"

    # --- the page ---

    @admin.display(description="breaker")
    def live_breaker(self, service: Service) -> SafeString:
        return breaker_panel(service)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))
        # The name is the breaker's key (in the store, the API, the SDKs): it is chosen once.
        return [*fields, "name"] if obj is not None else fields

    def get_inlines(self, request: HttpRequest, obj: Any) -> list[type[InlineModelAdmin]]:
        if obj is None:
            return []
        return [TransitionInline, *self.more_inlines(request)]

    def more_inlines(self, request: HttpRequest) -> list[type[InlineModelAdmin]]:
        """What the rooms above the breakers show on a service's page (recovery/admin.py adds them)."""
        return []

    # Services are never deleted: transitions and audit events point at them, and an agent's next call would
    # register the name again with default settings.
    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Service, form: Any, change: bool) -> None:
        reason = form.cleaned_data.get("audit_reason", "")
        if change:
            data = {name: form.cleaned_data[name] for name in SETTINGS_FIELDS if name in form.cleaned_data}
            saved = services.update_service(
                name=obj.name, data=data, actor=admin_actor(request), reason=reason
            )
            adopt(obj, saved)
            return
        data = {"name": obj.name, **{name: getattr(obj, name) for name in SETTINGS_FIELDS}}
        adopt(obj, services.create_service(data=data, actor=admin_actor(request), reason=reason))

    # --- overrides: actions on the list, and buttons on the page ---

    def object_action_applies(self, name: str, obj: Service) -> bool:
        # No button for the mode the breaker is already in; "return to automatic" only when overridden.
        return obj.override != OVERRIDE_ACTIONS[name].mode

    @admin.action(description="Force open (asks for a reason)", permissions=["operate"])
    def force_open(self, request: HttpRequest, queryset: QuerySet[Service]) -> TemplateResponse | None:
        return self._override(request, queryset, "force_open")

    @admin.action(description="Force close (asks for a reason)", permissions=["operate"])
    def force_close(self, request: HttpRequest, queryset: QuerySet[Service]) -> TemplateResponse | None:
        return self._override(request, queryset, "force_close")

    @admin.action(description="Disable the breaker (asks for a reason)", permissions=["operate"])
    def disable_breakers(self, request: HttpRequest, queryset: QuerySet[Service]) -> TemplateResponse | None:
        return self._override(request, queryset, "disable_breakers")

    @admin.action(description="Return to automatic (asks for a reason)", permissions=["operate"])
    def back_to_automatic(self, request: HttpRequest, queryset: QuerySet[Service]) -> TemplateResponse | None:
        return self._override(request, queryset, "back_to_automatic")

    def _override(
        self, request: HttpRequest, queryset: QuerySet[Service], name: str
    ) -> TemplateResponse | None:
        spec = OVERRIDE_ACTIONS[name]
        if not spec.expires:
            return self._reasoned(request, queryset, name, spec, expires_at=None)
        expiry = ExpiryForm(request.POST if CONFIRMED in request.POST else None)
        if expiry.is_bound and not expiry.is_valid():
            # A bad expiry keeps the page up, as a missing reason does: nothing changes until both are right.
            page = render_reason_page(
                self,
                request,
                ReasonForm(request.POST),
                objects=list(queryset),
                title=f"{spec.verb} breakers",
                intro=f"You are about to {spec.verb.lower()} these services:",
                submit=spec.verb,
                action=name,
            )
            return self._with_expiry(page, expiry)
        expires_at = expiry.cleaned_data["expires_at"] if expiry.is_bound else None
        return self._with_expiry(self._reasoned(request, queryset, name, spec, expires_at), expiry)

    def _reasoned(
        self,
        request: HttpRequest,
        queryset: QuerySet[Service],
        name: str,
        spec: OverrideAction,
        expires_at: datetime | None,
    ) -> TemplateResponse | None:
        def apply(service: Service, reason: str) -> bool:
            if spec.mode == Service.Override.AUTO and service.override == Service.Override.AUTO:
                return False  # nothing to return from: no audit event, no transition
            services.set_override(
                name=service.name,
                mode=spec.mode,
                reason=reason,
                expires_at=expires_at,
                actor=admin_actor(request),
            )
            return True

        return reasoned_action(
            self,
            request,
            queryset,
            action=name,
            title=f"{spec.verb} breakers",
            submit=spec.verb,
            apply=apply,
            done=lambda changed, total: spec.done.format(changed=changed, total=total),
        )

    @staticmethod
    def _with_expiry(page: TemplateResponse | None, expiry: ExpiryForm) -> TemplateResponse | None:
        """The shared reason page, with the expiry field added (the page is rendered lazily, so it can)."""
        if page is None:
            return None
        page.template_name = OVERRIDE_TEMPLATE
        page.context_data = {**(page.context_data or {}), "expiry_form": expiry}
        return page

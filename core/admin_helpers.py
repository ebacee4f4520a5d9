"""The admin conventions every Rebound admin follows, and the (read-only) audit trail.

Two rules shape the whole admin:

* Rebound's roles decide what a user may do, not Django's per-model permissions (no group is given any):
  operators act, viewers and other staff read. `RoleAdmin` maps the one onto the other.
* Every change an operator makes goes through a service with a reason, so that it lands in the audit trail
  exactly once with source "admin". `ServiceLayerAdmin` turns the services' domain errors into form errors, and
  `reasoned_action` asks for the reason before an action runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import csrf_protect_m
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from core.access import roles
from core.api.errors import DomainError
from core.audit.models import AuditEvent
from core.audit.selectors import target_model
from core.audit.services import Actor

REASON_TEMPLATE = "admin/rebound/reason_confirmation.html"
CHANGE_FORM_WITH_ACTIONS = "admin/rebound/change_form_with_actions.html"
# Marks the second POST of an action: the one sent from the reason page, not from the changelist.
CONFIRMED = "rebound_confirmed"
# Where ServiceLayerAdmin keeps a service's refusal between the failed save and the form shown again.
REJECTION_ATTR = "_rebound_rejection"

Fieldsets = list[tuple[str | None, dict[str, Any]]]


def admin_actor(request: HttpRequest) -> Actor:
    return Actor(user=request.user, source=AuditEvent.Source.ADMIN)


REASON_HELP = "Required. Recorded in the audit trail with your name."


def reason_widget() -> forms.Textarea:
    return forms.Textarea(attrs={"rows": 3, "cols": 80})


def audit_reason_field(subject: str) -> forms.CharField:
    """The required `audit_reason` of a form whose save goes through an audited service (a ServiceLayerAdmin
    with reason_field = "audit_reason"): "Why are you changing this <subject>?"."""
    return forms.CharField(
        label=f"Why are you changing this {subject}?", widget=reason_widget(), help_text=REASON_HELP
    )


def outbound_url_field(help_text: str) -> forms.URLField:
    """An optional URL Rebound will call (through the outbound guard, which checks its host when saved)."""
    return forms.URLField(required=False, max_length=2000, assume_scheme="https", help_text=help_text)


def truncated(text: str, length: int = 80) -> str:
    return Truncator(text).chars(length)


# A list column's long text: one line, cut with an ellipsis at the column's width, the whole text on hover. The
# changelists must fit 1280 px without sideways scrolling, and a wrapped message makes each row many lines tall.
CLIP_STYLE = (
    "display: inline-block; max-width: {}; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; "
    "vertical-align: bottom"
)


def clipped(text: str | None, width: str = "22em") -> SafeString | str:
    """Text for a list column, kept to one line of at most `width` (the full text in its title)."""
    line = " ".join((text or "").split())
    if not line:
        return "—"
    return format_html(
        '<span class="truncate" title="{}" style="{}">{}</span>', line, CLIP_STYLE.format(width), line
    )


def pretty_json(value: Any) -> SafeString | str:
    if value is None:
        return "—"
    return format_html(
        '<pre style="white-space: pre-wrap; margin: 0">{}</pre>',
        json.dumps(value, indent=2, ensure_ascii=False),
    )


def pill(text: str, color: str, css_class: str = "") -> SafeString:
    """A state as a coloured pill; its name stays in the text for readers without colour."""
    return format_html(
        '<span{} style="background: {}; color: #fff; padding: 1px 8px; border-radius: 10px; '
        'white-space: nowrap; font-weight: 600">{}</span>',
        format_html(' class="{}"', css_class) if css_class else "",
        color,
        text,
    )


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def adopt(obj: Model, saved: Model) -> None:
    """Copy what a service saved onto the admin's own instance, which the admin then logs and redirects to."""
    for field in saved._meta.concrete_fields:
        setattr(obj, field.attname, getattr(saved, field.attname))
    obj._state.adding = False
    obj._state.db = saved._state.db


# --- Permissions from roles ------------------------------------------------------------------------------


class RoleAdmin(admin.ModelAdmin):
    """Operators may do everything the admin offers; viewers (and any staff) may look.

    `object_actions` names admin actions that are also offered as buttons on an object's own page.
    """

    object_actions: Sequence[str] = ()
    # Configuration rows are short: a hundred to a page (ReadOnlyAdmin's growing tables show 50).
    list_per_page = 100
    # Whether this admin's saves and deletes go through services that audit them. The audit trail's record()
    # writes Django's LogEntry beside each person's audit event (core/audit/services.py), so the admin's own
    # log entries would log every change twice: they are skipped. An admin that saves without a service (none
    # today) sets this False and keeps Django's logging.
    logged_by_services = True

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        return None if self.logged_by_services else super().log_addition(request, obj, message)

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        return None if self.logged_by_services else super().log_change(request, obj, message)

    def log_deletions(self, request: HttpRequest, queryset: Any) -> Any:
        return [] if self.logged_by_services else super().log_deletions(request, queryset)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return roles.is_viewer(request.user)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return roles.is_viewer(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return roles.is_operator(request.user)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return roles.is_operator(request.user)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return roles.is_operator(request.user)

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """For actions declared with permissions=["operate"]: acting on objects one may not edit (keys)."""
        return roles.is_operator(request.user)

    def object_action_applies(self, name: str, obj: Any) -> bool:
        """Whether the button for action `name` makes sense on this object (e.g. no "activate" if active)."""
        return True

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra = dict(extra_context or {})
        if self.object_actions:
            obj = self.get_object(request, unquote(object_id))
            # get_actions has already dropped the actions this user may not run.
            available = self.get_actions(request)
            extra["object_actions"] = [
                (name, action[2])
                for name in self.object_actions
                if (action := available.get(name))
                and obj is not None
                and self.object_action_applies(name, obj)
            ]
        return super().change_view(request, object_id, form_url, extra)


class ReadOnlyAdmin(RoleAdmin):
    """Rows only Rebound itself writes (errors, audit events): whoever may read sees them, nobody edits."""

    # These tables grow (events, transitions, runs): a page of 50 is read at a glance and rendered quickly.
    list_per_page = 50

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyInlineMixin:
    """An inline of rows edited elsewhere (keys by actions, transitions by the breakers): shown, never edited."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return roles.is_viewer(request.user)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- Saving through services -----------------------------------------------------------------------------


def add_domain_error(form: forms.BaseForm, error: DomainError, aliases: dict[str, str]) -> None:
    """A service's refusal as form errors, on the fields it names where the form has them."""
    items = error.errors or [{"field": "", "message": error.message}]
    for item in items:
        name = aliases.get(item.get("field") or "", item.get("field") or "")
        form.add_error(name if name in form.fields else None, item.get("message") or error.message)


def rejecting_form(form_class: type[forms.BaseForm], error: DomainError, aliases: dict[str, str]) -> type:
    class Rejected(form_class):  # type: ignore[valid-type,misc]
        def clean(self) -> dict[str, Any]:
            cleaned = super().clean()
            add_domain_error(self, error, aliases)
            return cleaned

    return Rejected


class ServiceLayerAdmin(RoleAdmin):
    """An admin whose save_model calls a service, never saves directly.

    A service may still refuse after the form validated (DomainError). changeform_view runs in a
    transaction, so the failed save is rolled back; the view then runs once more on the same POST with the
    refusal attached to the form, and the operator sees the page again with the error and their input.

    `reason_field` is the form's reason field: the services call it "reason", and it is dropped from the
    page of a user who may only view. `add_fieldsets` (optional) are the fieldsets of the add page.
    """

    reason_field = "reason"
    add_fieldsets: Fieldsets | None = None

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except DomainError as error:
            setattr(request, REJECTION_ATTR, error)
            return super().changeform_view(request, object_id, form_url, extra_context)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form_class = super().get_form(request, obj, change, **kwargs)
        error = getattr(request, REJECTION_ATTR, None)
        if error is None:
            return form_class
        return rejecting_form(form_class, error, {"reason": self.reason_field})

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None and self.add_fieldsets is not None:
            return self.add_fieldsets
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or self.has_change_permission(request, obj):
            return fieldsets
        return [
            (name, {**options, "fields": [f for f in options["fields"] if f != self.reason_field]})
            for name, options in fieldsets
        ]


# --- Actions that ask why --------------------------------------------------------------------------------


class ReasonForm(forms.Form):
    reason = forms.CharField(widget=reason_widget(), help_text=REASON_HELP)


def render_reason_page(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    form: ReasonForm,
    *,
    objects: Sequence[Model],
    title: str,
    intro: str,
    submit: str,
    action: str | None = None,
) -> TemplateResponse:
    """The page that asks for a reason. With `action`, it posts back to the changelist as that action."""
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "subtitle": None,
        "intro": intro,
        "objects": objects,
        "form": form,
        "submit_label": submit,
        "action": action,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "confirmed_name": CONFIRMED,
        "opts": model_admin.model._meta,
    }
    return TemplateResponse(request, REASON_TEMPLATE, context)


def reasoned_action(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet[Any],
    *,
    action: str,
    title: str,
    submit: str,
    apply: Callable[[Any, str], bool],
    done: Callable[[int, int], str],
) -> TemplateResponse | None:
    """An action that asks why before it acts.

    The changelist's POST shows the reason page; the page posts back with the reason, and then `apply(obj,
    reason)` runs on each object (True when it changed something) and `done(changed, total)` is reported.
    A missing reason shows the page again with the error, and nothing changes.
    """
    objects = list(queryset)
    form = ReasonForm(request.POST if CONFIRMED in request.POST else None)
    if not form.is_valid():
        intro = f"You are about to {submit.lower()} these {model_admin.model._meta.verbose_name_plural}:"
        return render_reason_page(
            model_admin,
            request,
            form,
            objects=objects,
            title=title,
            intro=intro,
            submit=submit,
            action=action,
        )
    reason = form.cleaned_data["reason"]
    changed = 0
    for obj in objects:
        try:
            changed += bool(apply(obj, reason))
        except DomainError as error:
            model_admin.message_user(request, f"{obj}: {error.message}", messages.ERROR)
    model_admin.message_user(request, done(changed, len(objects)), messages.SUCCESS)
    return None


if TYPE_CHECKING:
    _ModelAdminBase = admin.ModelAdmin[Any]
else:
    _ModelAdminBase = object


class ReasonedDeleteMixin(_ModelAdminBase):
    """Deleting always with a reason: Django's unaudited bulk delete action is dropped (subclasses offer an
    action calling `_reasoned_delete_action` instead), and its delete page is replaced by one that asks why.
    Subclasses write `_delete(request, obj, reason)` (through a service, which audits) and may reword the
    page and the message."""

    delete_title: str | None = None  # None: "Delete <verbose name>"
    delete_intro = "You are about to delete:"

    def _delete(self, request: HttpRequest, obj: Any, reason: str) -> bool:
        raise NotImplementedError

    def deleted_message(self, obj: Any, label: str) -> str:
        return f"Deleted “{label}”."

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions: dict[str, Any] = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def _reasoned_delete_action(
        self, request: HttpRequest, queryset: QuerySet[Any], action: str, title: str, plural: str
    ) -> TemplateResponse | None:
        return reasoned_action(
            self,
            request,
            queryset,
            action=action,
            title=title,
            submit="Delete",
            apply=lambda obj, reason: self._delete(request, obj, reason),
            done=lambda changed, total: f"Deleted {changed} of {total} selected {plural}.",
        )

    @csrf_protect_m
    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        model_admin = self
        obj = model_admin.get_object(request, unquote(object_id))
        if not model_admin.has_delete_permission(request, obj):
            raise PermissionDenied
        if obj is None:
            raise Http404("No such object.")
        form = ReasonForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            label = str(obj)
            try:
                self._delete(request, obj, form.cleaned_data["reason"])
            except DomainError as error:
                form.add_error("reason", error.message)
            else:
                model_admin.message_user(request, self.deleted_message(obj, label), messages.SUCCESS)
                opts = model_admin.model._meta
                return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        return render_reason_page(
            model_admin,
            request,
            form,
            objects=[obj],
            title=self.delete_title or f"Delete {model_admin.model._meta.verbose_name}",
            intro=self.delete_intro,
            submit="Delete",
        )


# --- The audit trail -------------------------------------------------------------------------------------


def target_admin_url(event: AuditEvent) -> str | None:
    """The admin page of the event's target, when that model has one (the object may since be gone)."""
    model = target_model(event.target_type)
    if model is None:
        return None
    try:
        return reverse(
            f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[event.target_id]
        )
    except NoReverseMatch:
        return None

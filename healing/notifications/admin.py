"""The admin of notifications: channels (editable by operators, every change audited with a reason; the URL is
write-only: never shown, kept when left blank), silences (set by reviewers and operators with a reason, ended
early with the End button), and deliveries (read-only, by status and channel).

As everywhere in Rebound's admin, nothing is saved directly: a channel through services.create_channel /
update_channel / delete_channel, a silence through services.create_silence / end_silence."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import flatten_fieldsets
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.safestring import SafeString

from core.access import roles
from core.admin_helpers import (
    CHANGE_FORM_WITH_ACTIONS,
    Fieldsets,
    ReadOnlyAdmin,
    ReasonedDeleteMixin,
    ServiceLayerAdmin,
    admin_actor,
    adopt,
    audit_reason_field,
    clipped,
    pill,
    reasoned_action,
)
from healing.notifications import sender, services
from healing.notifications.models import Delivery, NotificationChannel, Silence

STATUS_COLORS = {"pending": "#1565c0", "sent": "#2e7d32", "failed": "#c62828", "silenced": "#757575"}
LEVEL_COLORS = {"info": "#1565c0", "warning": "#b26a00", "critical": "#c62828", "emergency": "#7f0000"}
EDITED = [f for f in services.CHANNEL_FIELDS if f != "url"]


def status_badge(status: str) -> SafeString:
    return pill(status, STATUS_COLORS.get(status, "#9e9e9e"))


def level_badge(level: str) -> SafeString:
    return pill(level or "any", LEVEL_COLORS.get(level, "#9e9e9e"))


# --- channels ----------------------------------------------------------------------------------------------


class SecretUrlInput(forms.PasswordInput):
    """The URL is a secret: the page never holds it (not even hidden in the form)."""

    def __init__(self) -> None:
        super().__init__(attrs={"autocomplete": "off", "size": 80}, render_value=False)


class NotificationChannelForm(forms.ModelForm):
    # Not the model's field: a blank one on a change means "keep the stored URL", which the model would refuse.
    secret_url = forms.CharField(
        label="URL",
        required=False,
        max_length=2000,
        widget=SecretUrlInput(),
        help_text="An apprise URL (slack://…, pagerduty://…, mailto://…, json://host/path, …). Write-only: "
        "leave blank to keep the stored one. A webhook's host (json://, xml://, form://) must be in "
        "OUTBOUND_ALLOWED_HOSTS.",
    )
    audit_reason = audit_reason_field("channel")

    class Meta:
        model = NotificationChannel
        fields = EDITED

    def clean_secret_url(self) -> str:
        url = (self.cleaned_data.get("secret_url") or "").strip()
        if not url and self.instance.pk is None:
            raise forms.ValidationError("A new channel needs its URL.")
        return url


@admin.register(NotificationChannel)
class NotificationChannelAdmin(ReasonedDeleteMixin, ServiceLayerAdmin):
    form = NotificationChannelForm
    reason_field = "audit_reason"
    list_display = ["name", "short_url", "min_level_label", "services_label", "enabled", "updated_at"]
    list_filter = ["enabled", "min_level"]
    search_fields = ["name"]
    readonly_fields = ["masked_url", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "masked_url", "secret_url", "enabled"]}),
        (
            "Routing",
            {
                "fields": ["min_level", "services"],
                "description": "Escalations at the level or above, of one of the services (a JSON list, e.g. "
                '["payments", "openai"]; [] for every service).',
            },
        ),
        ("Why", {"fields": ["audit_reason"]}),
        ("Record", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]
    add_fieldsets: Fieldsets = [
        (None, {"fields": ["name", "secret_url", "enabled"]}),
        ("Routing", {"fields": ["min_level", "services"]}),
        ("Why", {"fields": ["audit_reason"]}),
    ]
    actions = ["delete_channels"]

    @admin.display(description="URL (masked)")
    def short_url(self, channel: NotificationChannel) -> SafeString | str:
        return clipped(self.masked_url(channel), "22em")

    @admin.display(description="URL (masked)")
    def masked_url(self, channel: NotificationChannel) -> str:
        return sender.mask(channel.url) if channel.url else "—"

    @admin.display(description="min level", ordering="min_level")
    def min_level_label(self, channel: NotificationChannel) -> SafeString:
        return level_badge(channel.min_level)

    @admin.display(description="services")
    def services_label(self, channel: NotificationChannel) -> SafeString | str:
        return clipped(", ".join(channel.services or []) or "every service", "18em")

    def save_model(self, request: HttpRequest, obj: NotificationChannel, form: Any, change: bool) -> None:
        reason = form.cleaned_data.get("audit_reason", "")
        url = form.cleaned_data.get("secret_url") or ""
        if change:
            data = {name: form.cleaned_data[name] for name in form.changed_data if name in EDITED}
            if url:
                data["url"] = url
            saved = services.update_channel(
                channel_id=obj.pk, data=data, actor=admin_actor(request), reason=reason
            )
        else:
            data = {name: form.cleaned_data[name] for name in EDITED if name in form.cleaned_data}
            saved = services.create_channel(
                data={**data, "url": url}, actor=admin_actor(request), reason=reason
            )
        adopt(obj, saved)

    def _delete(self, request: HttpRequest, obj: NotificationChannel, reason: str) -> bool:
        services.delete_channel(channel_id=obj.pk, actor=admin_actor(request), reason=reason)
        return True

    @admin.action(description="Delete the selected channels (asks for a reason)", permissions=["delete"])
    def delete_channels(self, request: HttpRequest, queryset: QuerySet[NotificationChannel]) -> Any:
        return self._reasoned_delete_action(
            request, queryset, "delete_channels", "Delete notification channels", "channels"
        )


# --- silences ----------------------------------------------------------------------------------------------


class SilenceForm(forms.ModelForm):
    class Meta:
        model = Silence
        fields = ["service", "level", "ends_at", "reason"]
        help_texts = {
            "service": "Blank: every service.",
            "level": "Escalations at this level or below; blank: every level.",
            "ends_at": "When it ends by itself (in the future).",
            "reason": "Required. Recorded with the silence and in the audit trail with your name.",
        }


@admin.register(Silence)
class SilenceAdmin(ServiceLayerAdmin):
    """Reviewers and operators set silences; nobody edits one (it is history): it is ended early instead."""

    form = SilenceForm
    list_display = [
        "__str__",
        "service_label",
        "level_label",
        "in_force",
        "starts_at",
        "ends_at",
        "created_by",
    ]
    list_filter = ["level", ("ended_at", admin.EmptyFieldListFilter)]
    search_fields = ["service", "reason"]
    list_select_related = ["created_by", "ended_by"]
    fieldsets = [
        (None, {"fields": ["service", "level", "starts_at", "ends_at", "reason", "in_force"]}),
        ("Record", {"fields": ["created_by", "created_at", "ended_at", "ended_by"]}),
    ]
    readonly_fields = flatten_fieldsets(fieldsets)
    add_fieldsets: Fieldsets = [(None, {"fields": ["service", "level", "ends_at", "reason"]})]
    actions = ["end_silences"]
    object_actions = ["end_silences"]
    change_form_template = CHANGE_FORM_WITH_ACTIONS

    def has_add_permission(self, request: HttpRequest) -> bool:
        return roles.is_reviewer(request.user)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_end_permission(self, request: HttpRequest) -> bool:
        return roles.is_reviewer(request.user)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.readonly_fields if obj is not None else []

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        # A silence's own reason stays on its page (ServiceLayerAdmin drops a reason field from read-only pages).
        return self.add_fieldsets if obj is None else self.fieldsets

    @admin.display(description="service")
    def service_label(self, silence: Silence) -> str:
        return silence.service or "every service"

    @admin.display(description="level", ordering="level")
    def level_label(self, silence: Silence) -> SafeString:
        return level_badge(silence.level)

    @admin.display(description="in force", boolean=True)
    def in_force(self, silence: Silence) -> bool:
        now = timezone.now()
        return silence.ended_at is None and silence.starts_at <= now < silence.ends_at

    def object_action_applies(self, name: str, obj: Silence) -> bool:
        return self.in_force(obj)

    def save_model(self, request: HttpRequest, obj: Silence, form: Any, change: bool) -> None:
        saved = services.create_silence(
            service=form.cleaned_data.get("service") or "",
            level=form.cleaned_data.get("level") or "",
            ends_at=form.cleaned_data["ends_at"],
            reason=form.cleaned_data.get("reason") or "",
            actor=admin_actor(request),
        )
        adopt(obj, saved)

    @admin.action(description="End now: notices are sent again (asks for a reason)", permissions=["end"])
    def end_silences(self, request: HttpRequest, queryset: QuerySet[Silence]) -> TemplateResponse | None:
        def apply(silence: Silence, reason: str) -> bool:
            if not self.in_force(silence):
                return False
            services.end_silence(silence_id=silence.pk, actor=admin_actor(request), reason=reason)
            return True

        return reasoned_action(
            self,
            request,
            queryset,
            action="end_silences",
            title="End silences",
            submit="End",
            apply=apply,
            done=lambda changed, total: (
                f"Ended {changed} of {total} selected silences (the others were not in force)."
            ),
        )


# --- deliveries: read-only ---------------------------------------------------------------------------------


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "escalation_label",
        "channel_name",
        "level_label",
        "status_label",
        "attempts",
        "short_error",
    ]
    list_display_links = ["created_at"]
    list_filter = ["status", "channel", "level"]
    search_fields = ["channel_name", "error", "escalation__title"]
    list_select_related = ["escalation"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    fields = readonly_fields = (
        "escalation",
        "notice",
        "channel",
        "channel_name",
        "level",
        "status",
        "silence",
        "attempts",
        "error",
        "next_attempt_at",
        "task_id",
        "sent_at",
        "created_at",
        "updated_at",
    )

    @admin.display(description="escalation", ordering="escalation")
    def escalation_label(self, delivery: Delivery) -> SafeString | str:
        return clipped(str(delivery.escalation), "14em")

    @admin.display(description="status", ordering="status")
    def status_label(self, delivery: Delivery) -> SafeString:
        return status_badge(delivery.status)

    @admin.display(description="level", ordering="level")
    def level_label(self, delivery: Delivery) -> SafeString:
        return level_badge(delivery.level)

    @admin.display(description="error")
    def short_error(self, delivery: Delivery) -> SafeString | str:
        return clipped(delivery.error, "14em")

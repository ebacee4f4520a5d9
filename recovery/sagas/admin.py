"""The admin of transactions (sagas): every step with its compensation attempts, read-only, and two actions.

"Roll back" starts the rollback of open transactions; "retry compensation" resumes a failed rollback from the
step that failed. Both ask for a reason and go through `recovery.sagas`, so each lands in the audit trail once
with source "admin". Nothing else is edited here: steps and attempts are written only by agents and workers.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from core.admin_helpers import (
    CHANGE_FORM_WITH_ACTIONS,
    ReadOnlyAdmin,
    ReadOnlyInlineMixin,
    admin_actor,
    clipped,
    pill,
    pretty_json,
    reasoned_action,
    truncated,
)
from recovery.sagas import selectors, services
from recovery.sagas.models import CompensationAttempt, Transaction, TransactionStep

Status = Transaction.Status

STATUS_COLORS = {
    "open": "#1565c0",  # blue
    "committed": "#2e7d32",  # green
    "rolling_back": "#b26a00",  # amber
    "rolled_back": "#616161",  # grey
    "rollback_failed": "#c62828",  # red
    "done": "#1565c0",
    "compensating": "#b26a00",
    "compensated": "#616161",
    "compensation_failed": "#c62828",
    "running": "#b26a00",
    "success": "#2e7d32",
    "failure": "#c62828",
}


def badge(state: str) -> SafeString:
    """A status as a coloured pill; its name stays in the text for readers without colour."""
    return pill(state.replace("_", " "), STATUS_COLORS.get(state, "#9e9e9e"))


def attempt_line(attempt: CompensationAttempt) -> str:
    parts = [f"#{attempt.number} {attempt.outcome}"]
    if attempt.status_code:
        parts.append(f"HTTP {attempt.status_code}")
    if attempt.error_class:
        parts.append(f"{attempt.error_class}/{attempt.kind}" if attempt.kind else attempt.error_class)
    if attempt.error_type:
        parts.append(attempt.error_type)
    if attempt.message:
        parts.append(truncated(attempt.message, 120))
    if attempt.duration_ms is not None:
        parts.append(f"{attempt.duration_ms:.0f} ms")
    return " · ".join(parts)


class CompensationAttemptInline(ReadOnlyInlineMixin, admin.TabularInline):
    model = CompensationAttempt
    fields = readonly_fields = (
        "number",
        "outcome",
        "status_code",
        "error_class",
        "kind",
        "error_type",
        "message",
        "duration_ms",
        "task_id",
        "started_at",
        "finished_at",
    )
    extra = 0
    can_delete = False


class StepInline(ReadOnlyInlineMixin, admin.TabularInline):
    model = TransactionStep
    fields = readonly_fields = (
        "seq",
        "name",
        "idempotency_key",
        "compensation_kind",
        "status_badge",
        "attempts",
        "attempt_history",
        "compensated_at",
    )
    extra = 0
    can_delete = False
    show_change_link = True

    def get_queryset(self, request: HttpRequest) -> QuerySet[TransactionStep]:
        return super().get_queryset(request).prefetch_related("attempt_rows").order_by("-seq")

    @admin.display(description="status")
    def status_badge(self, step: TransactionStep) -> SafeString:
        return badge(step.status)

    @admin.display(description="compensation attempts")
    def attempt_history(self, step: TransactionStep) -> SafeString | str:
        rows = sorted(step.attempt_rows.all(), key=lambda a: a.number)
        if not rows:
            return "—"
        return format_html(
            '<ul style="margin: 0; padding-left: 1em">{}</ul>',
            format_html_join("", "<li>{}</li>", ((attempt_line(a),) for a in rows)),
        )


class TransactionAdmin(ReadOnlyAdmin):
    list_display = ["short_name", "status_badge", "agent", "task", "step_total", "needs_human", "created_at"]
    list_filter = ["status", "needs_human", "created_at"]
    search_fields = ["id", "name", "agent__name", "task__task_id", "rollback_reason"]
    list_select_related = ["agent", "task", "created_by"]
    date_hierarchy = "created_at"
    fields = readonly_fields = (
        "id",
        "name",
        "status_badge",
        "agent",
        "created_by",
        "task",
        "deadline_at",
        "rollback_reason",
        "needs_human",
        "fence",
        "created_at",
        "updated_at",
        "finished_at",
        "audit_trail",
    )
    inlines = [StepInline]
    actions = ["roll_back", "retry_compensation"]
    object_actions = ["roll_back", "retry_compensation"]
    change_form_template = CHANGE_FORM_WITH_ACTIONS

    def get_queryset(self, request: HttpRequest) -> QuerySet[Transaction]:
        return super().get_queryset(request).annotate(step_count=Count("steps"))

    @admin.display(description="status", ordering="status")
    def status_badge(self, txn: Transaction) -> SafeString:
        return badge(txn.status)

    @admin.display(description="name", ordering="name")
    def short_name(self, txn: Transaction) -> SafeString | str:
        return clipped(txn.name, "20em")

    @admin.display(description="steps", ordering="step_count")
    def step_total(self, txn: Transaction) -> int:
        return getattr(txn, "step_count", 0)

    @admin.display(description="audit")
    def audit_trail(self, txn: Transaction) -> SafeString:
        url = reverse("admin:core_auditevent_changelist")
        return format_html(
            '<a href="{}?target_type=recovery.transaction&target_id={}">Every audit event on this transaction</a>',
            url,
            txn.pk,
        )

    def object_action_applies(self, name: str, obj: Transaction) -> bool:
        return {
            "roll_back": obj.status == Status.OPEN,
            "retry_compensation": obj.status == Status.ROLLBACK_FAILED,
        }[name]

    @admin.action(description="Roll back (asks for a reason)", permissions=["operate"])
    def roll_back(self, request: HttpRequest, queryset: QuerySet[Transaction]) -> TemplateResponse | None:
        def apply(txn: Transaction, reason: str) -> bool:
            if txn.status != Status.OPEN:
                return False
            _, started = services.request_rollback(
                transaction_id=txn.pk, reason=reason, actor=admin_actor(request)
            )
            return started

        return reasoned_action(
            self,
            request,
            queryset,
            action="roll_back",
            title="Roll back transactions",
            submit="Roll back",
            apply=apply,
            done=lambda changed, total: (
                f"Started the rollback of {changed} of {total} selected transactions "
                "(only open ones can be rolled back)."
            ),
        )

    @admin.action(description="Retry compensation (asks for a reason)", permissions=["operate"])
    def retry_compensation(
        self, request: HttpRequest, queryset: QuerySet[Transaction]
    ) -> TemplateResponse | None:
        def apply(txn: Transaction, reason: str) -> bool:
            return services.retry_compensation(
                transaction_id=txn.pk, reason=reason, actor=admin_actor(request)
            )

        return reasoned_action(
            self,
            request,
            queryset,
            action="retry_compensation",
            title="Retry the failed compensation",
            submit="Retry compensation",
            apply=apply,
            done=lambda changed, total: (
                f"Resumed the rollback of {changed} of {total} selected transactions "
                "(only failed rollbacks can be retried)."
            ),
        )


class TransactionStepAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "name", "status_badge", "compensation_kind", "attempts", "compensated_at"]
    list_filter = ["status", "compensation_kind"]
    search_fields = ["name", "idempotency_key", "transaction__id", "transaction__name"]
    list_select_related = ["transaction"]
    fields = readonly_fields = (
        "transaction_link",
        "seq",
        "name",
        "idempotency_key",
        "status_badge",
        "compensation_shown",
        "policy_shown",
        "attempts",
        "fence",
        "last_error_shown",
        "created_at",
        "compensated_at",
    )
    inlines = [CompensationAttemptInline]

    @admin.display(description="status", ordering="status")
    def status_badge(self, step: TransactionStep) -> SafeString:
        return badge(step.status)

    @admin.display(description="transaction")
    def transaction_link(self, step: TransactionStep) -> SafeString:
        url = reverse("admin:recovery_transaction_change", args=[step.transaction_id])
        return format_html('<a href="{}">{}</a>', url, step.transaction)

    @admin.display(description="compensation (secrets hidden)")
    def compensation_shown(self, step: TransactionStep) -> SafeString | str:
        return pretty_json(selectors.compensation_json(step))

    @admin.display(description="retry policy (as recorded)")
    def policy_shown(self, step: TransactionStep) -> SafeString | str:
        if not step.policy_snapshot:
            return "— (the policy for each failure's error class and kind)"
        return pretty_json(step.policy_snapshot)

    @admin.display(description="last error")
    def last_error_shown(self, step: TransactionStep) -> SafeString | str:
        return pretty_json(step.last_error)

    def get_model_perms(self, request: HttpRequest) -> dict[str, bool]:
        # Reached from a transaction's page; not a list of its own in the admin's index.
        return {}

    def get_queryset(self, request: HttpRequest) -> QuerySet[TransactionStep]:
        return super().get_queryset(request).select_related("transaction")

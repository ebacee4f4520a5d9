"""The admin of server-side retries: jobs with their attempts, read-only, and two audited actions.

Only Rebound's workers write jobs and attempts; operators cancel a pending or running job and run a failed or
cancelled one again, each through `retry_jobs` with a reason, so that it lands in the audit trail once with
source "admin". Secrets in stored requests are shown redacted, as in the API.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
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
from recovery.retries import selectors, services
from recovery.retries.models import RetryAttempt, RetryJob

State = RetryJob.State
STATE_COLORS = {
    "pending": "#1565c0",
    "running": "#b26a00",
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "cancelled": "#757575",
}


def state_badge(state: str) -> SafeString:
    return pill(state, STATE_COLORS.get(state, "#9e9e9e"))


class AttemptInline(ReadOnlyInlineMixin, admin.TabularInline):
    model = RetryAttempt
    fields = readonly_fields = (
        "number",
        "outcome",
        "status_code",
        "error_class",
        "kind",
        "error_type",
        "short_message",
        "duration_ms",
        "started_at",
        "finished_at",
    )
    extra = 0
    can_delete = False
    ordering = ["number"]

    @admin.display(description="message")
    def short_message(self, attempt: RetryAttempt) -> str:
        return truncated(attempt.message, 120)


class RetryJobAdmin(ReadOnlyAdmin):
    list_display = [
        "short_id",
        "service",
        "short_operation",
        "state_label",
        "attempts",
        "next_attempt_at",
        "created_at",
    ]
    list_display_links = ["short_id"]
    list_filter = ["state", "needs_human", "kind", "service"]
    search_fields = ["idempotency_key", "operation", "task_name", "service__name", "agent__name"]
    list_select_related = ["service", "agent", "created_by"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    fieldsets = [
        (None, {"fields": ["service", "operation", "kind", "state_label", "needs_human", "owner"]}),
        ("Progress", {"fields": ["attempts", "next_attempt_at", "deadline_at", "finished_at"]}),
        ("What runs", {"fields": ["idempotency_key", "request_json", "task_json", "policy_json"]}),
        ("Outcome", {"fields": ["last_error_json", "result_json"]}),
        ("Record", {"fields": ["id", "fence", "created_at", "updated_at"], "classes": ["collapse"]}),
    ]
    readonly_fields = [
        "id",
        "service",
        "operation",
        "kind",
        "state_label",
        "needs_human",
        "owner",
        "attempts",
        "next_attempt_at",
        "deadline_at",
        "finished_at",
        "idempotency_key",
        "request_json",
        "task_json",
        "policy_json",
        "last_error_json",
        "result_json",
        "fence",
        "created_at",
        "updated_at",
    ]
    inlines = [AttemptInline]
    actions = ["cancel_jobs", "rerun_jobs"]
    object_actions = ["cancel_jobs", "rerun_jobs"]
    change_form_template = CHANGE_FORM_WITH_ACTIONS

    @admin.display(description="job", ordering="created_at")
    def short_id(self, job: RetryJob) -> str:
        return str(job.pk)[:8]

    @admin.display(description="operation", ordering="operation")
    def short_operation(self, job: RetryJob) -> SafeString | str:
        return clipped(job.operation, "18em")

    @admin.display(description="state", ordering="state")
    def state_label(self, job: RetryJob) -> SafeString:
        return state_badge(job.state)

    @admin.display(description="for")
    def owner(self, job: RetryJob) -> str:
        if job.agent_id:
            return f"agent {job.agent}"
        return f"user {job.created_by}" if job.created_by_id else "—"

    @admin.display(description="request (secrets hidden)")
    def request_json(self, job: RetryJob) -> SafeString | str:
        return pretty_json(selectors.request_shown(job))

    @admin.display(description="task (secrets hidden)")
    def task_json(self, job: RetryJob) -> SafeString | str:
        return pretty_json(selectors.task_shown(job))

    @admin.display(description="policy as the job runs it")
    def policy_json(self, job: RetryJob) -> SafeString | str:
        return pretty_json(job.policy_snapshot)

    @admin.display(description="last error")
    def last_error_json(self, job: RetryJob) -> SafeString | str:
        return pretty_json(job.last_error)

    @admin.display(description="result")
    def result_json(self, job: RetryJob) -> SafeString | str:
        return pretty_json(job.result)

    def object_action_applies(self, name: str, obj: RetryJob) -> bool:
        if name == "cancel_jobs":
            return obj.state in (State.PENDING, State.RUNNING)
        return obj.state in (State.FAILED, State.CANCELLED)

    @admin.action(description="Cancel (asks for a reason)", permissions=["operate"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[RetryJob]) -> TemplateResponse | None:
        def apply(job: RetryJob, reason: str) -> bool:
            services.cancel_job(job_id=job.pk, actor=admin_actor(request), reason=reason)
            return True

        return reasoned_action(
            self,
            request,
            queryset,
            action="cancel_jobs",
            title="Cancel retry jobs",
            submit="Cancel",
            apply=apply,
            done=lambda changed, total: f"Cancelled {changed} of {total} selected jobs.",
        )

    @admin.action(description="Run again (asks for a reason)", permissions=["operate"])
    def rerun_jobs(self, request: HttpRequest, queryset: QuerySet[RetryJob]) -> TemplateResponse | None:
        def apply(job: RetryJob, reason: str) -> bool:
            services.rerun_job(job_id=job.pk, actor=admin_actor(request), reason=reason)
            return True

        return reasoned_action(
            self,
            request,
            queryset,
            action="rerun_jobs",
            title="Run retry jobs again",
            submit="Run again",
            apply=apply,
            done=lambda changed, total: f"Queued {changed} of {total} selected jobs to run again.",
        )

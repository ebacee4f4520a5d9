"""The admin of tasks and checkpoints: tasks with their newest checkpoints (metadata only), a checkpoint's
state as readable JSON with its integrity checked, a diff between two checkpoints of a task, and marking a
task abandoned (asks for a reason, audited). Only the services write: nothing here saves a model directly."""

from __future__ import annotations

import difflib
import json
from typing import Any, cast

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import Http404, HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from core.admin_helpers import (
    CHANGE_FORM_WITH_ACTIONS,
    ReadOnlyAdmin,
    ReadOnlyInlineMixin,
    admin_actor,
    clipped,
    pretty_json,
    reasoned_action,
)
from recovery.checkpoints import codec, services
from recovery.checkpoints.codec import CheckpointCorrupt
from recovery.checkpoints.models import Checkpoint, Task

CHECKPOINTS_SHOWN = 50
DIFF_TEMPLATE = "admin/rebound/checkpoint_diff.html"
# A pretty state past this is cut on the page (the API serves all of it): a browser chokes on a huge <pre>.
SHOWN_STATE_CHARS = 1_000_000
DIFF_CONTEXT_LINES = 3


def pretty_state(raw: bytes) -> str:
    return json.dumps(json.loads(raw), indent=2, ensure_ascii=False, sort_keys=True)


def integrity(checkpoint: Checkpoint) -> tuple[bool, str, bytes | None]:
    """(intact, what the check found, the canonical JSON when intact)."""
    try:
        raw = codec.decode(checkpoint)
    except CheckpointCorrupt as error:
        return False, error.message, None
    return True, f"intact: {checkpoint.size_bytes} bytes, SHA-256 {checkpoint.sha256}", raw


def integrity_badge(intact: bool, text: str) -> SafeString:
    color = "#2e7d32" if intact else "#c62828"
    return format_html(
        '<span style="background: {}; color: #fff; padding: 1px 8px; border-radius: 10px; font-weight: 600">'
        "{}</span> {}",
        color,
        "intact" if intact else "CORRUPT",
        text,
    )


def diff_url(task_pk: int, a: int | None = None, b: int | None = None) -> str:
    url = reverse("admin:recovery_task_diff", args=[task_pk])
    query = {k: v for k, v in {"a": a, "b": b}.items() if v is not None}
    return f"{url}?{urlencode(query)}" if query else url


# --- tasks --------------------------------------------------------------------------------------------------


class LatestCheckpoints(BaseInlineFormSet):
    """Only the newest checkpoints, sliced after the formset filtered by task (a slice cannot be filtered)."""

    def get_queryset(self) -> QuerySet[Checkpoint]:
        if not hasattr(self, "_latest"):
            self._latest = super().get_queryset()[:CHECKPOINTS_SHOWN]
        return self._latest


class CheckpointInline(ReadOnlyInlineMixin, admin.TabularInline):
    model = Checkpoint
    formset = LatestCheckpoints
    verbose_name_plural = f"checkpoints (the newest {CHECKPOINTS_SHOWN}, metadata only)"
    fields = readonly_fields = (
        "seq",
        "created_at",
        "progress",
        "step",
        "size_bytes",
        "stored_bytes",
        "short_sha",
        "links",
    )
    extra = 0
    can_delete = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Checkpoint]:
        # Never the data column: a task's page must not read megabytes of states it does not show.
        # The task and agent too: each row shows the checkpoint's name, "agent/task #seq".
        return super().get_queryset(request).select_related("task__agent").defer("data").order_by("-seq")

    @admin.display(description="SHA-256")
    def short_sha(self, checkpoint: Checkpoint) -> str:
        return f"{checkpoint.sha256[:12]}…"

    @admin.display(description="")
    def links(self, checkpoint: Checkpoint) -> SafeString:
        state = reverse("admin:recovery_checkpoint_change", args=[checkpoint.pk])
        previous = (
            diff_url(checkpoint.task_id, checkpoint.seq - 1, checkpoint.seq) if checkpoint.seq > 1 else ""
        )
        if not previous:
            return format_html('<a href="{}">state</a>', state)
        return format_html('<a href="{}">state</a> · <a href="{}">diff with previous</a>', state, previous)


class StaleFilter(admin.SimpleListFilter):
    title = "stale"
    parameter_name = "stale"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Stale (running, gone quiet)"), ("no", "Not stale")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Task]) -> QuerySet[Task]:
        if self.value() == "yes":
            return queryset.filter(status=Task.Status.RUNNING, stale_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(stale_at__isnull=True)
        return queryset


class TaskAdmin(ReadOnlyAdmin):
    list_display = ["short_task_id", "agent", "short_name", "status", "last_seq", "last_activity", "stale_at"]
    list_filter = ["status", StaleFilter, "agent"]
    search_fields = ["task_id", "name", "agent__name"]
    list_select_related = ["agent"]
    date_hierarchy = "started_at"
    show_full_result_count = False
    fields = readonly_fields = (
        "agent",
        "task_id",
        "name",
        "status",
        "last_seq",
        "started_at",
        "last_checkpoint_at",
        "last_heartbeat_at",
        "stale_at",
        "finished_at",
        "fork_origin",
        "metadata_json",
        "diff_link",
    )
    inlines = [CheckpointInline]
    actions = ["mark_abandoned"]
    object_actions = ["mark_abandoned"]
    change_form_template = CHANGE_FORM_WITH_ACTIONS

    def get_queryset(self, request: HttpRequest) -> QuerySet[Task]:
        return super().get_queryset(request).select_related("agent")

    @admin.display(description="task id", ordering="task_id")
    def short_task_id(self, task: Task) -> SafeString | str:
        return clipped(task.task_id, "18em")

    @admin.display(description="name", ordering="name")
    def short_name(self, task: Task) -> SafeString | str:
        return clipped(task.name, "16em")

    @admin.display(description="last activity")
    def last_activity(self, task: Task) -> Any:
        signs = [t for t in (task.started_at, task.last_checkpoint_at, task.last_heartbeat_at) if t]
        return max(signs)

    @admin.display(description="forked from")
    def fork_origin(self, task: Task) -> SafeString | str:
        if task.forked_from_id is None:
            return "—"
        origin = Checkpoint.objects.filter(pk=task.forked_from_id).only("pk", "seq", "task").first()
        if origin is None:
            return "—"
        url = reverse("admin:recovery_checkpoint_change", args=[origin.pk])
        return format_html('<a href="{}">{} #{}</a>', url, origin.task, origin.seq)

    @admin.display(description="metadata")
    def metadata_json(self, task: Task) -> SafeString | str:
        return pretty_json(task.metadata)

    @admin.display(description="compare")
    def diff_link(self, task: Task) -> SafeString | str:
        if task.last_seq < 2:
            return "—"
        return format_html('<a href="{}">Diff two checkpoints of this task</a>', diff_url(task.pk))

    def object_action_applies(self, name: str, obj: Task) -> bool:
        return not obj.is_finished

    @admin.action(description="Mark abandoned (asks for a reason)", permissions=["operate"])
    def mark_abandoned(self, request: HttpRequest, queryset: QuerySet[Task]) -> TemplateResponse | None:
        def apply(task: Task, reason: str) -> bool:
            if task.is_finished:
                return False
            _, changed = services.complete(
                task=task, status=Task.Status.ABANDONED, reason=reason, actor=admin_actor(request)
            )
            return changed

        return reasoned_action(
            self,
            request,
            queryset.select_related("agent"),
            action="mark_abandoned",
            title="Mark tasks abandoned",
            submit="Mark abandoned",
            apply=apply,
            done=lambda changed, total: (
                f"Marked {changed} of {total} selected tasks abandoned (the others had already ended)."
            ),
        )

    # --- the diff ---

    def get_urls(self) -> list[URLPattern]:
        diff = path(
            "<path:object_id>/diff/", self.admin_site.admin_view(self.diff_view), name="recovery_task_diff"
        )
        return [diff, *super().get_urls()]

    def diff_view(self, request: HttpRequest, object_id: str) -> TemplateResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        task = self.get_object(request, unquote(object_id))
        if task is None:
            raise Http404("No such task.")
        form = DiffForm(task, request.GET or None)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Diff of two checkpoints of {task}",
            "subtitle": None,
            "opts": self.opts,
            "original": task,
            "form": form,
        }
        if form.is_valid():
            context.update(diff_of(task, form.cleaned_data["a"], form.cleaned_data["b"]))
        return TemplateResponse(request, DIFF_TEMPLATE, context)


class DiffForm(forms.Form):
    a = forms.TypedChoiceField(coerce=int, label="From checkpoint")
    b = forms.TypedChoiceField(coerce=int, label="To checkpoint")

    def __init__(self, task: Task, data: Any = None) -> None:
        seqs = list(Checkpoint.objects.filter(task=task).order_by("-seq").values_list("seq", flat=True))
        # Unbound: propose the newest against the one before it.
        initial = {"b": seqs[0], "a": seqs[1]} if len(seqs) > 1 else {}
        super().__init__(data, initial=initial)
        choices = [(seq, f"#{seq}") for seq in seqs]
        for name in ("a", "b"):
            cast(forms.TypedChoiceField, self.fields[name]).choices = choices


def diff_of(task: Task, a: int, b: int) -> dict[str, Any]:
    """The unified diff of two checkpoints' pretty states, line by line with a kind for colouring."""
    found = {c.seq: c for c in Checkpoint.objects.filter(task=task, seq__in=[a, b])}
    sides, states = [], []
    for seq in (a, b):
        intact, text, raw = integrity(found[seq])
        sides.append({"seq": seq, "intact": intact, "integrity": text})
        states.append(raw)
    if None in states:
        return {"sides": sides, "lines": None}
    before, after = (pretty_state(raw).splitlines() for raw in states if raw is not None)
    lines = [
        (_kind(line), line)
        for line in difflib.unified_diff(before, after, f"#{a}", f"#{b}", n=DIFF_CONTEXT_LINES, lineterm="")
    ]
    return {"sides": sides, "lines": lines}


def _kind(line: str) -> str:
    if line.startswith(("---", "+++")):
        return "file"
    if line.startswith("@@"):
        return "hunk"
    return {"+": "added", "-": "removed"}.get(line[:1], "context")


# --- checkpoints --------------------------------------------------------------------------------------------


class CheckpointAdmin(ReadOnlyAdmin):
    list_display = ["task_label", "seq", "progress", "short_step", "size_bytes", "stored_bytes", "created_at"]
    list_select_related = ["task__agent"]
    search_fields = ["task__task_id", "task__agent__name", "step"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    fields = readonly_fields = (
        "task_link",
        "seq",
        "created_at",
        "progress",
        "step",
        "completed_steps",
        "metadata_json",
        "size_bytes",
        "stored_bytes",
        "encoding",
        "sha256",
        "integrity_status",
        "compare",
        "state",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Checkpoint]:
        # The list never reads the data column; the page reads it once, for the check and the state.
        return super().get_queryset(request).select_related("task__agent").defer("data")

    @admin.display(description="task", ordering="task")
    def task_label(self, checkpoint: Checkpoint) -> SafeString | str:
        return clipped(str(checkpoint.task), "20em")

    @admin.display(description="step", ordering="step")
    def short_step(self, checkpoint: Checkpoint) -> SafeString | str:
        return clipped(checkpoint.step, "16em")

    @admin.display(description="task")
    def task_link(self, checkpoint: Checkpoint) -> SafeString:
        url = reverse("admin:recovery_task_change", args=[checkpoint.task_id])
        return format_html('<a href="{}">{}</a>', url, checkpoint.task)

    @admin.display(description="metadata")
    def metadata_json(self, checkpoint: Checkpoint) -> SafeString | str:
        return pretty_json(checkpoint.metadata)

    @admin.display(description="integrity")
    def integrity_status(self, checkpoint: Checkpoint) -> SafeString:
        intact, text, _ = self._checked(checkpoint)
        return integrity_badge(intact, text)

    @admin.display(description="compare")
    def compare(self, checkpoint: Checkpoint) -> SafeString | str:
        if checkpoint.seq < 2:
            return "—"
        url = diff_url(checkpoint.task_id, checkpoint.seq - 1, checkpoint.seq)
        return format_html('<a href="{}">Diff with checkpoint {}</a>', url, checkpoint.seq - 1)

    @admin.display(description="state")
    def state(self, checkpoint: Checkpoint) -> SafeString | str:
        intact, _, raw = self._checked(checkpoint)
        if not intact or raw is None:
            return "Not shown: the stored state failed its check."
        text = pretty_state(raw)
        cut = len(text) > SHOWN_STATE_CHARS
        return format_html(
            '<pre style="white-space: pre-wrap; margin: 0; max-height: 60em; overflow: auto">{}</pre>{}',
            text[:SHOWN_STATE_CHARS],
            f"… cut at {SHOWN_STATE_CHARS:,} characters; the API serves all of it." if cut else "",
        )

    @staticmethod
    def _checked(checkpoint: Checkpoint) -> tuple[bool, str, bytes | None]:
        # The page shows the check and the state: decompress and hash once.
        cached: tuple[bool, str, bytes | None] | None = getattr(checkpoint, "_rebound_checked", None)
        if cached is None:
            cached = integrity(checkpoint)
            checkpoint._rebound_checked = cached  # type: ignore[attr-defined]
        return cached

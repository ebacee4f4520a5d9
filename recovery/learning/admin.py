"""The learning room's admin: the effectiveness rows read-only, with a "forget" action (services.reset, with a
reason), and the figures panel that recovery/admin.py adds to the error pattern's and the service's pages (the
errors and breakers rooms sit below learning and never import it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.formats import localize
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.utils.timezone import localtime

from core.admin_helpers import ReadOnlyAdmin, admin_actor, clipped, reasoned_action
from core.infra.conf import rebound
from recovery.learning import selectors, services, stats
from recovery.learning.models import Effectiveness

if TYPE_CHECKING:
    _ModelAdminBase = admin.ModelAdmin[Any]
else:
    _ModelAdminBase = object

# The panel on a pattern's or a service's page shows this many rows; the changelist behind its link has them all.
ROWS_SHOWN = 50
PANEL_TITLE = "What recovery has learned"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def figures_of(row: Effectiveness) -> stats.Figures:
    """One row's figures decayed to now, with the settings in force (the changelist's columns)."""
    return selectors.figures_of(row)


def changelist_url(**filters: str) -> str:
    return f"{reverse('admin:recovery_effectiveness_changelist')}?{urlencode(filters)}"


def figures_table(rows: list[selectors.Row], *, all_url: str) -> SafeString:
    """The rows as a table: decayed tries and successes, the rate with its Wilson bounds, whether the planner
    trusts it, the time to recover and the delay that worked, the plain totals."""
    if not rows:
        return format_html(
            "<p>{}</p>",
            "Nothing learned yet: no plan, server-side retry or healing run has ended with a result here (or "
            "it was forgotten).",
        )
    body = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} of {}</td><td>{}</td><td>{} to {}</td>"
        "<td>{}</td><td>{}</td><td>{}</td><td>{} / {} / {}</td><td>{}</td></tr>",
        (
            (
                r.scope,
                r.error_class or "any",
                r.action,
                stats.words(r.action),
                f"{r.figures.successes:.1f}",
                f"{r.figures.tries:.1f}",
                _percent(r.figures.success_rate),
                _percent(r.figures.lower_bound),
                _percent(r.figures.upper_bound),
                "yes" if r.figures.trusted else "not yet",
                _seconds(r.figures.recover_s),
                _seconds(r.figures.delay_s),
                r.total_successes,
                r.total_tries,
                r.total_unknown,
                localize(localtime(r.last_result_at)),
            )
            for r in rows[:ROWS_SHOWN]
        ),
    )
    half_life = rebound("LEARNING_HALF_LIFE_DAYS")
    min_tries = rebound("LEARNING_MIN_TRIES")
    return format_html(
        "<table><thead><tr><th>scope</th><th>class</th><th>action</th><th>in words</th><th>recovered</th>"
        "<th>rate</th><th>bounds (95 %)</th><th>trusted</th><th>time to recover</th><th>delay that worked</th>"
        "<th>successes / tries / unknown (all time)</th><th>last result</th></tr></thead><tbody>{}</tbody>"
        "</table><p>Tries and successes are weighted: a result counts half as much every {} days. The planner "
        'trusts a figure from {} tries and prefers another action only when proven better. <a href="{}">'
        "Every row, and forget them</a>.</p>",
        body,
        half_life,
        min_tries,
        all_url,
    )


class LearnedFiguresMixin(_ModelAdminBase):
    """Adds the learned figures to an object's page as a read-only panel of their own."""

    def learned_rows(self, obj: Any) -> list[selectors.Row]:
        raise NotImplementedError

    def learned_url(self, obj: Any) -> str:
        raise NotImplementedError

    @admin.display(description="figures")
    def learned(self, obj: Any) -> SafeString:
        return figures_table(self.learned_rows(obj), all_url=self.learned_url(obj))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, "learned"] if obj is not None else fields

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = list(super().get_fieldsets(request, obj))
        if obj is None:
            return fieldsets
        return [*fieldsets, (PANEL_TITLE, {"fields": ["learned"], "classes": ["collapse"]})]


class PatternFiguresMixin(LearnedFiguresMixin):
    """For the error pattern's page: how each action worked for this pattern."""

    def learned_rows(self, obj: Any) -> list[selectors.Row]:
        return selectors.statistics(fingerprint=obj.fingerprint, limit=ROWS_SHOWN)

    def learned_url(self, obj: Any) -> str:
        return changelist_url(scope="pattern", fingerprint=obj.fingerprint)


class ServiceFiguresMixin(LearnedFiguresMixin):
    """For the service's page: how each action worked for its error classes (service scope) and its patterns."""

    def learned_rows(self, obj: Any) -> list[selectors.Row]:
        return selectors.statistics(service=obj.name, limit=ROWS_SHOWN)

    def learned_url(self, obj: Any) -> str:
        return changelist_url(service=obj.name)


class EffectivenessAdmin(ReadOnlyAdmin):
    # Seven columns at most (tests/core/test_admin_columns.py): the scope is told in "where".
    list_display = ["where", "action_label", "recovered", "rate", "bounds", "trusted", "last_result_at"]
    list_display_links = ["where", "action_label"]
    list_filter = ["scope", "error_class", "service"]
    search_fields = ["service", "fingerprint", "action"]
    date_hierarchy = "last_result_at"
    fieldsets = [
        (None, {"fields": ["scope", "service", "error_class", "fingerprint", "pattern_link", "action"]}),
        (
            "Figures, as of now",
            {"fields": ["recovered", "rate", "bounds", "trusted", "recover_time", "delay_that_worked"]},
        ),
        (
            "All time",
            {
                "fields": [
                    "total_tries",
                    "total_successes",
                    "total_unknown",
                    "first_result_at",
                    "last_result_at",
                ]
            },
        ),
    ]
    readonly_fields = [
        "scope",
        "service",
        "error_class",
        "fingerprint",
        "pattern_link",
        "action",
        "recovered",
        "rate",
        "bounds",
        "trusted",
        "recover_time",
        "delay_that_worked",
        "total_tries",
        "total_successes",
        "total_unknown",
        "first_result_at",
        "last_result_at",
    ]
    actions = ["forget"]

    @admin.display(description="pattern or service", ordering="scope")
    def where(self, row: Effectiveness) -> SafeString | str:
        if row.scope == Effectiveness.Scope.PATTERN:
            return clipped(f"pattern {row.fingerprint[:12]} ({row.service})", "14em")
        return clipped(f"service {row.service} / {row.error_class or 'any class'}", "14em")

    @admin.display(description="action", ordering="action")
    def action_label(self, row: Effectiveness) -> SafeString | str:
        return clipped(row.action, "11em")

    @admin.display(description="pattern")
    def pattern_link(self, row: Effectiveness) -> SafeString | str:
        if not row.fingerprint:
            return "—"
        url = f"{reverse('admin:recovery_errorpattern_changelist')}?{urlencode({'q': row.fingerprint})}"
        return format_html('<a href="{}">The error pattern</a>', url)

    @admin.display(description="recovered (weighted)")
    def recovered(self, row: Effectiveness) -> str:
        f = figures_of(row)
        return f"{f.successes:.1f} of {f.tries:.1f}"

    @admin.display(description="rate")
    def rate(self, row: Effectiveness) -> str:
        return _percent(figures_of(row).success_rate)

    @admin.display(description="bounds (95 %)")
    def bounds(self, row: Effectiveness) -> str:
        f = figures_of(row)
        return f"{_percent(f.lower_bound)} to {_percent(f.upper_bound)}"

    @admin.display(description="trusted", boolean=True)
    def trusted(self, row: Effectiveness) -> bool:
        return figures_of(row).trusted

    @admin.display(description="time to recover")
    def recover_time(self, row: Effectiveness) -> str:
        return _seconds(figures_of(row).recover_s)

    @admin.display(description="delay that worked")
    def delay_that_worked(self, row: Effectiveness) -> str:
        return _seconds(figures_of(row).delay_s)

    @admin.action(
        description="Forget what was learned for these rows' patterns or services (asks for a reason)",
        permissions=["operate"],
    )
    def forget(self, request: HttpRequest, queryset: QuerySet[Effectiveness]) -> TemplateResponse | None:
        forgotten = [0]

        def apply(row: Effectiveness, reason: str) -> bool:
            # A pattern row forgets its pattern, a service row its service (and that service's patterns): the
            # granularity of services.reset. A row already gone with an earlier one forgets nothing more.
            if row.scope == Effectiveness.Scope.PATTERN:
                deleted = services.reset(
                    fingerprint=row.fingerprint, actor=admin_actor(request), reason=reason
                )
            else:
                deleted = services.reset(service=row.service, actor=admin_actor(request), reason=reason)
            forgotten[0] += deleted
            return deleted > 0

        return reasoned_action(
            self,
            request,
            queryset,
            action="forget",
            title="Forget what was learned",
            submit="Forget",
            apply=apply,
            done=lambda changed, total: (
                f"Forgot {forgotten[0]} rows for {changed} of {total} selected rows' patterns or services."
            ),
        )

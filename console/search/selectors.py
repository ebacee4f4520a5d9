"""What the search box finds, grouped by kind: services, error patterns, tasks, escalations, healing runs and
agents. Each group is read through the selectors of the room that owns it, capped at `LIMIT` hits, with a count
of the rest only when there is a rest: a constant number of queries per group, whatever the fleet's size."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import QuerySet
from django.urls import reverse
from django.utils.http import urlencode
from django.utils.text import Truncator

from core.access import selectors as access_selectors
from core.api.errors import NotFound
from healing.actions import selectors as run_selectors
from healing.escalations import selectors as escalation_selectors
from recovery.breakers import selectors as breaker_selectors
from recovery.checkpoints import selectors as checkpoint_selectors
from recovery.errors import selectors as error_selectors

LIMIT = 20
MAX_QUERY = 200
LABEL_CHARS = 140
# "#12", "12", "esc-12", "esc 12", "E12": an escalation's number.
ESCALATION_NUMBER = re.compile(r"(?:#|esc[- ]?|e)?\s*([0-9]{1,18})", re.IGNORECASE)
# "run 7", "run #7", "#7", "7", "r7": a healing run's number.
RUN_NUMBER = re.compile(r"(?:run\s*#?|#|r)?\s*([0-9]{1,18})", re.IGNORECASE)


@dataclass(frozen=True)
class Hit:
    label: str
    url: str
    detail: str = ""


@dataclass
class Group:
    kind: str  # the section's data-kind: service | pattern | task | escalation | run | agent
    title: str
    hits: list[Hit] = field(default_factory=list)
    more: int = 0  # how many matched beyond the hits shown
    more_url: str = ""  # where all of them are listed


def _label(text: str) -> str:
    return Truncator(" ".join(text.split())).chars(LABEL_CHARS)


def _admin(name: str, *args: Any) -> str:
    return reverse(f"admin:{name}", args=args)


def _changelist(name: str, q: str) -> str:
    return f"{_admin(name)}?{urlencode({'q': q})}"


def _capped(qs: QuerySet[Any], limit: int = LIMIT) -> tuple[list[Any], int]:
    """At most `limit` rows, and how many more match (counted only when the page is full)."""
    rows = list(qs[:limit])
    more = qs.count() - limit if len(rows) == limit else 0
    return rows, max(more, 0)


def services(q: str) -> Group:
    rows, more = _capped(breaker_selectors.services().filter(name__icontains=q))
    hits = [
        Hit(row.name, reverse("console:service", args=[row.name]), f"{row.kind} · {row.criticality}")
        for row in rows
    ]
    return Group("service", "Services", hits, more, _changelist("recovery_service_changelist", q))


def patterns(q: str) -> Group:
    rows, more = _capped(error_selectors.patterns(search=q))
    hits = [
        Hit(
            _label(
                f"{row.service or '(no service)'} · {row.type_name or row.error_class}: {row.message_template}"
            ),
            _admin("recovery_errorpattern_change", row.pk),
            f"{row.error_class} · seen {row.total_count} times · {row.fingerprint[:12]}",
        )
        for row in rows
    ]
    return Group("pattern", "Error patterns", hits, more, _changelist("recovery_errorpattern_changelist", q))


def tasks(q: str) -> Group:
    # The task id as typed, or its beginning: ids are long and people paste a prefix.
    rows, more = _capped(checkpoint_selectors.tasks().filter(task_id__startswith=q))
    rows.sort(key=lambda row: row.task_id != q)  # the exact id first
    hits = [
        Hit(
            _label(f"{row.task_id} · {row.agent_name}"),
            _admin("recovery_task_change", row.pk),
            f"{row.status}" + (f" · {row.name}" if row.name else ""),
        )
        for row in rows
    ]
    return Group("task", "Tasks", hits, more, _changelist("recovery_task_changelist", q))


def _escalation_hit(row: Any) -> Hit:
    return Hit(
        _label(f"#{row.pk} {row.title}"),
        _admin("healing_escalation_change", row.pk),
        f"{row.level} · {row.state}" + (f" · {row.service}" if row.service else ""),
    )


def escalations(q: str) -> Group:
    """The escalation a number names (#12, 12, esc-12, E12), then those whose title holds the text."""
    hits: list[Hit] = []
    number = ESCALATION_NUMBER.fullmatch(q)
    if number:
        with contextlib.suppress(NotFound):  # no such escalation: only the titles below
            hits.append(_escalation_hit(escalation_selectors.get_escalation(number.group(1))))
    titled = escalation_selectors.queue().filter(title__icontains=q)
    if hits and number:
        titled = titled.exclude(pk=int(number.group(1)))
    rows, more = _capped(titled, LIMIT - len(hits))
    hits.extend(_escalation_hit(row) for row in rows)
    return Group("escalation", "Escalations", hits, more, _changelist("healing_escalation_changelist", q))


def runs(q: str) -> Group:
    """The healing run a number names (run 7, #7, 7, r7)."""
    number = RUN_NUMBER.fullmatch(q)
    hits: list[Hit] = []
    if number:
        try:
            row = run_selectors.run(number.group(1))
        except NotFound:
            row = None
        if row is not None:
            hits.append(
                Hit(
                    _label(f"run {row.pk} · {row.action.name} on {row.service}"),
                    _admin("healing_healingrun_change", row.pk),
                    f"{row.state} · {row.risk} risk",
                )
            )
    return Group("run", "Healing runs", hits)


def agents(q: str) -> Group:
    rows, more = _capped(access_selectors.agents(search=q))
    hits = [
        Hit(row.name, _admin("core_agent_change", row.pk), "active" if row.is_active else "deactivated")
        for row in rows
    ]
    return Group("agent", "Agents", hits, more, _changelist("core_agent_changelist", q))


SEARCHES: list[Callable[[str], Group]] = [services, patterns, tasks, escalations, runs, agents]


def search(q: str) -> list[Group]:
    """Every kind that matched, in a fixed order (an empty query finds nothing: the page shows a hint)."""
    if not q:
        return []
    groups = (find(q) for find in SEARCHES)
    return [group for group in groups if group.hits]

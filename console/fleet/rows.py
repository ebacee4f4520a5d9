"""The fleet table's rows as HTML, built in Python.

The template language costs some thirty variable look-ups and filters a row: on a page of 500 services that was
half the page's server time (docs/benchmarks.md, "Console"). The page shell, the filters and the banner stay in
templates; only the repeated row is built here, every value that is not a number or a slug escaped.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.timesince import timesince

from console.fleet.selectors import Row

DASH = '<span class="muted">—</span>'
FORCED = ' <span class="small muted">forced</span>'


def render(rows: list[Row], links: dict[str, str], now: datetime | None = None) -> SafeString:
    """Every row's `<tr>`, in order, as one string (the tbody's content)."""
    now = now or datetime.now(UTC)
    return mark_safe("".join(_row(row, links, now) for row in rows))  # each part escaped in _row


def _row(row: Row, links: dict[str, str], now: datetime) -> str:
    name = escape(row.name)
    return (
        f'<tr data-service="{name}" data-breaker="{row.state}">'
        f'<td><a class="truncate" href="{links["service"]}{name}/" title="{name}">{name}</a></td>'
        f"<td>{_breaker(row, now)}</td>"
        f"<td>{_pill(row.health) if row.health else DASH}</td>"
        f"<td>{_pill(row.degradation)}{FORCED if row.degradation_forced else ''}</td>"
        f'<td><div>{row.spark}<span class="small{"" if row.failures else " muted"}">'
        f"{row.error_rate:.1f}% of {row.calls}</span></div></td>"
        f"<td>{_escalations(row, links)}</td>"
        f"<td>{_pattern(row, links)}</td>"
        "</tr>"
    )


def _pill(value: str) -> str:
    text = escape(value)
    return f'<span class="pill {text}">{text}</span>'


def _breaker(row: Row, now: datetime) -> str:
    pill = f'<span class="pill {escape(row.state)} breaker-state">{escape(row.label)}</span>'
    if row.since is None:
        return pill
    since = row.since.astimezone(UTC)
    return (
        f'{pill} <time class="small muted" datetime="{since.isoformat()}" '
        f'title="since {since:%Y-%m-%d %H:%M:%S} UTC">{escape(timesince(since, now))}</time>'
    )


def _escalations(row: Row, links: dict[str, str]) -> str:
    if not row.escalations:
        return DASH
    name = escape(row.name)
    return " ".join(
        f'<a class="pill {level}" href="{links["queue"]}?service={name}&amp;level={level}">{n} {level}</a>'
        for level, n in row.escalations
    )


def _pattern(row: Row, links: dict[str, str]) -> str:
    pattern = row.pattern
    if pattern is None:
        return DASH
    title = escape(pattern.message_template or pattern.type_name)
    text = escape(pattern.message_template or pattern.type_name or pattern.error_class)
    return (
        f'<a class="truncate" href="{links["pattern"]}{pattern.pk}/change/" title="{title}">{text}</a> '
        f'<span class="small muted">&times;{pattern.recent}</span>'
    )

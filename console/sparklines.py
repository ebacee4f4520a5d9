"""Sparklines as inline SVG, drawn on the server: no JavaScript and no chart library for a row of the fleet.

`sparkline(points)` takes one (calls, failures) pair per minute, oldest first, and draws the calls as a grey
line scaled to the busiest minute and the failure rate of each minute as a red line scaled to 100 %, with a
title saying the totals. Pure: numbers in, markup out (escaped), so the fleet page can draw hundreds of them.
"""

from __future__ import annotations

from functools import lru_cache

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

PAD = 1.0  # keeps a line at 0 or at the top from being cut in half by the edge


def sparkline(points: list[tuple[int, int]], width: int = 120, height: int = 24) -> SafeString:
    """An `<svg class="spark">` of calls (grey) and failure rate (red) per point, titled with the totals."""
    calls = sum(max(0, c) for c, _ in points)
    failures = sum(max(0, min(f, c)) for c, f in points)
    summary = f"{calls} calls, {_percent(failures, calls)} errors in {len(points)} min"
    lines = []
    if calls:
        busiest = max(c for c, _ in points)
        lines.append(_polyline([max(0, c) / busiest for c, _ in points], width, height, "#8a939e"))
    if failures:
        rates = [min(f, c) / c if c > 0 else 0.0 for c, f in points]
        lines.append(_polyline(rates, width, height, "#b3261e"))
    if not lines:  # no traffic: a flat grey line along the bottom
        lines.append(_polyline([0.0, 0.0], width, height, "#c4cad1"))
    label = escape(summary)
    return mark_safe(  # every value in it is a number, or escaped above
        f'<svg class="spark" role="img" aria-label="{label}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><title>{label}</title>{"".join(lines)}</svg>'
    )


def _percent(part: int, whole: int) -> str:
    if not whole:
        return "0%"
    return f"{_n(100.0 * part / whole)}%"


def _polyline(values: list[float], width: int, height: int, colour: str) -> str:
    """Values between 0 and 1, spread over the width, 1 at the top. Inside a run of equal values only its ends
    are drawn (the same line): a quiet hour is a few points, not sixty, on a page of hundreds of rows."""
    if len(values) == 1:
        values = values * 2
    xs = _xs(len(values), width)
    span = height - 2 * PAD
    last = len(values) - 1
    coords = [
        f"{xs[i]},{_n(PAD + span * (1.0 - v))}"
        for i, v in enumerate(values)
        if i in (0, last) or not (values[i - 1] == v == values[i + 1])
    ]
    return (
        f'<polyline fill="none" stroke="{colour}" stroke-width="1.2" stroke-linejoin="round" '
        f'points="{" ".join(coords)}"/>'
    )


@lru_cache(maxsize=64)
def _xs(count: int, width: int) -> tuple[str, ...]:
    """The x of each of `count` points over the width (the same for every row of a page)."""
    step = (width - 2 * PAD) / (count - 1)
    return tuple(_n(PAD + i * step) for i in range(count))


def _n(value: float) -> str:
    # One decimal is finer than a pixel; fewer characters in a page of 500 rows.
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text

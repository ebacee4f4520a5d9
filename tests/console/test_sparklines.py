"""The fleet's sparklines (console/sparklines.py): inline SVG from calls and failures per minute."""

from __future__ import annotations

import re

from console.sparklines import sparkline


def _points(svg: str) -> list[list[tuple[float, float]]]:
    lines = re.findall(r'points="([^"]+)"', svg)
    return [[tuple(map(float, pair.split(","))) for pair in line.split()] for line in lines]  # type: ignore[misc]


def test_it_draws_an_svg_titled_with_the_totals() -> None:
    svg = str(sparkline([(10, 1), (20, 0), (10, 4)]))
    assert svg.startswith('<svg class="spark" role="img" aria-label="40 calls, 12.5% errors in 3 min"')
    assert "<title>40 calls, 12.5% errors in 3 min</title>" in svg
    assert 'width="120" height="24"' in svg


def test_it_draws_calls_scaled_to_the_busiest_minute_and_the_failure_rate_to_100_percent() -> None:
    calls, rates = _points(str(sparkline([(10, 0), (20, 0), (10, 10)], width=101, height=12)))
    assert [y for _, y in calls] == [6, 1, 6]  # the busiest minute touches the top (1 px of padding)
    assert [y for _, y in rates] == [11, 11, 1]  # every call failed in the last minute
    assert [x for x, _ in calls] == [1, 50.5, 100]


def test_it_draws_no_failure_line_without_failures() -> None:
    assert str(sparkline([(5, 0)] * 60)).count("<polyline") == 1


def test_it_draws_a_flat_line_without_traffic() -> None:
    svg = str(sparkline([(0, 0)] * 60))
    assert "0 calls, 0% errors in 60 min" in svg
    assert _points(svg) == [[(1, 23), (119, 23)]]


def test_it_copes_with_a_single_point_and_no_points() -> None:
    assert len(_points(str(sparkline([(3, 1)])))[0]) == 2
    assert "0 calls" in str(sparkline([]))


def test_it_never_counts_more_failures_than_calls() -> None:
    assert "4 calls, 100% errors" in str(sparkline([(4, 9)]))

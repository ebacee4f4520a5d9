"""The drill's plot (drill/plot.py): a PNG of sensible size from hand-made runs."""

from __future__ import annotations

import struct
from pathlib import Path

from drill import plot
from tests.support.drill import good_run, run_data

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk (it always comes first)."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def test_it_writes_a_png_of_sensible_size(tmp_path: Path) -> None:
    path = tmp_path / "img" / "drill.png"

    written = plot.write([good_run()], path)

    assert written == path
    assert png_size(path) == (1000, 650)
    assert 10_000 < path.stat().st_size < 1_000_000


def test_it_plots_two_runs_and_a_run_without_an_outage(tmp_path: Path) -> None:
    plot.write([good_run(), good_run()], tmp_path / "two.png")
    plot.write([run_data(outages=())], tmp_path / "calm.png")

    assert png_size(tmp_path / "two.png") == (1000, 650)
    assert png_size(tmp_path / "calm.png") == (1000, 650)

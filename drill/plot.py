"""The drill's plot (the PNG of docs/drill.md): time since t0 on the x axis, the outage shaded; on top the
recoverable tasks each fleet completed so far, below the calls each fleet sent to the service that went down,
per second. Drawn with matplotlib's Agg canvas on a Figure of its own (no pyplot: no display, no global state
shared between threads)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from drill.records import FLEETS, Fleet, RunData

COLOURS: dict[Fleet, str] = {"rebound": "#1f77b4", "naive": "#d62728"}
SIZE_IN = (10.0, 6.5)
DPI = 100


def write(runs: Sequence[RunData], path: Path) -> Path:
    """The plot of the last run (with two runs, the first run's rebound fleet dashed beside it, to show what
    learning changed), written as a PNG at `path` (its folder created)."""
    if not runs:
        raise ValueError("a plot needs at least one run")
    last = runs[-1]
    figure = Figure(figsize=SIZE_IN, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    completed, calls = figure.subplots(2, 1, sharex=True)
    end = _end(runs)
    for axes in (completed, calls):
        for outage in last.outages:
            axes.axvspan(outage.from_s, outage.to_s, color="0.85", label=f"{outage.service} down")
        axes.grid(True, alpha=0.3)
    for fleet in FLEETS:
        label = fleet if len(runs) == 1 else f"{fleet} (run {len(runs)})"
        _completed(completed, last, fleet, end, label, "-")
        _calls(calls, last, fleet, end, label, "-")
    if len(runs) > 1:
        _completed(completed, runs[0], "rebound", end, "rebound (run 1, nothing learned)", "--")
        _calls(calls, runs[0], "rebound", end, "rebound (run 1, nothing learned)", "--")
    completed.set_ylabel("recoverable tasks completed")
    completed.set_title(
        f"Chaos drill {last.scenario!r}, seed {last.seed}, {last.agents_per_fleet} agents per fleet"
    )
    completed.legend(loc="upper left", fontsize="small")
    dead = ", ".join(sorted({o.service for o in last.outages})) or "none"
    calls.set_ylabel(f"calls to the dead service\n({dead}) per second")
    calls.set_xlabel("seconds since the start of the faults")
    calls.set_xlim(0, end)
    calls.legend(loc="upper right", fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=DPI)
    return path


def _end(runs: Sequence[RunData]) -> float:
    latest = [run.ended_s for run in runs] + [c.t_s for run in runs for c in run.calls]
    return max(1.0, math.ceil(max(latest, default=1.0)))


def _completed(axes: Axes, run: RunData, fleet: Fleet, end: float, label: str, style: str) -> None:
    """A step line: how many recoverable tasks of the fleet had completed at each moment."""
    times = sorted(
        t.ended_s
        for t in run.tasks
        if t.fleet == fleet and not t.permanent and t.status == "completed" and t.ended_s is not None
    )
    xs = [0.0, *times, end]
    ys = [0, *range(1, len(times) + 1), len(times)]
    axes.step(xs, ys, where="post", color=COLOURS[fleet], linestyle=style, label=label)


def _calls(axes: Axes, run: RunData, fleet: Fleet, end: float, label: str, style: str) -> None:
    """Calls per whole second to the services that had an outage (whether down at the time or not: the shape
    after the outage shows how fast each fleet came back)."""
    dead = {o.service for o in run.outages}
    seconds = int(end)
    counts = [0] * (seconds + 1)
    for call in run.calls:
        if call.fleet == fleet and call.service in dead and 0 <= call.t_s <= end:
            counts[min(int(call.t_s), seconds)] += 1
    axes.step(range(seconds + 1), counts, where="post", color=COLOURS[fleet], linestyle=style, label=label)

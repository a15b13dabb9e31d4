"""<report-dir>/<gpu>/<suite>-<engine>.png: each stack's frontier beside its parts', one panel per stack.

Drawn on the controller from the rows' levels (so it is the same with xdist and with --results).
Uses matplotlib's Figure directly: no pyplot state, no display backend.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_infer.analysis.curve import Sweeps

if TYPE_CHECKING:
    from pytest_infer.session import InferSession
    from pytest_infer.space import Stack

VERDICT_COLOUR = {"passed": "tab:green", "failed": "tab:red", "skipped": "tab:gray", "xfail": "tab:orange"}


def _sweeps(label: str, props: dict[str, Any]) -> Sweeps | None:
    levels = props.get("levels") or []
    return Sweeps.from_records(label, levels) if levels else None


def write_plots(infer: InferSession, suite: str) -> list[Path]:
    """One PNG per engine with measured stacks; returns the files written."""
    from matplotlib.figure import Figure

    written: list[Path] = []
    by_id = {s.id: s for s in infer.stacks}
    for engine in infer.engines:
        measured: dict[Stack, Sweeps] = {}
        for row in infer.rows.values():
            stack = by_id.get(row.stack)
            sw = _sweeps(stack.label, row.props) if stack is not None and stack.engine == engine else None
            if stack is not None and sw is not None:
                measured[stack] = sw
        panels = [s for s in measured if s.opts and any(p in measured for p in s.parts())]
        if not panels:
            continue
        cols = min(3, len(panels))
        rows = math.ceil(len(panels) / cols)
        fig = Figure(figsize=(5 * cols, 4 * rows), layout="constrained")
        for i, stack in enumerate(panels):
            ax = fig.add_subplot(rows, cols, i + 1)
            for part in (p for p in stack.parts() if p in measured):
                _draw(ax, measured[part], lw=1.0, alpha=0.7)
            row = infer.rows[stack.id]
            _draw(ax, measured[stack], lw=2.5, alpha=1.0, colour=VERDICT_COLOUR.get(row.outcome, "black"))
            ax.set_title(f"{stack.label}: {row.outcome}", fontsize=10)
            ax.set_xlabel("interactivity (tok/s/user)")
            ax.set_ylabel("throughput (tok/s/GPU)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(f"{infer.gpu} {engine}: each stack (bold) against its parts; dots are single repeats")
        path = infer.report_dir / f"{suite}-{engine}.png"
        fig.savefig(path, dpi=90)
        written.append(path)
    return written


def _draw(ax: Any, sw: Sweeps, lw: float, alpha: float, colour: str | None = None) -> None:
    xs = [p.interactivity for p in sw.mean.frontier]
    ys = [p.throughput for p in sw.mean.frontier]
    line = ax.plot(xs, ys, marker="o", lw=lw, alpha=alpha, label=sw.name, color=colour)[0]
    for curve in sw.repeats:
        ax.scatter([p.interactivity for p in curve.frontier], [p.throughput for p in curve.frontier],
                   s=8, alpha=0.35, color=line.get_color())

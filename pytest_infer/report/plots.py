"""<report-dir>/<gpu>/<suite>-<engine>.png: each stack's frontier beside its parts', one panel per stack.

Drawn on the controller from the rows' levels (so it is the same with xdist and with --results).
Uses matplotlib's Figure directly: no pyplot state, no display backend.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pytest_infer.analysis.curve import Sweeps
from pytest_infer.report.rows import Row
from pytest_infer.space import Stack

VERDICT_COLOUR = {"passed": "tab:green", "failed": "tab:red", "skipped": "tab:gray", "xfail": "tab:orange"}


def _sweeps(label: str, row: Row) -> Sweeps | None:
    levels = [lv for lv in row.data.levels or [] if not lv.problems]  # the curve the verdict used
    return Sweeps.from_records(label, (lv.model_dump() for lv in levels)) if levels else None


def write_plots(rows: list[Row], stacks: Sequence[Stack], engines: Sequence[str], gpu: str,
                path_of: Callable[[str], Path]) -> list[Path]:
    """One PNG per engine with measured stacks (at path_of(engine)); returns the files written."""
    from matplotlib.figure import Figure

    written: list[Path] = []
    by_id = {s.id: s for s in stacks}
    by_stack = {r.stack: r for r in rows}
    for engine in engines:
        measured: dict[Stack, Sweeps] = {}
        for row in rows:
            stack = by_id.get(row.stack)
            sw = _sweeps(stack.label, row) if stack is not None and stack.engine == engine else None
            if stack is not None and sw is not None:
                measured[stack] = sw
        panels = [s for s in measured if s.opts and any(p in measured for p in s.parts())]
        if not panels:
            continue
        cols = min(3, len(panels))
        nrows = math.ceil(len(panels) / cols)
        fig = Figure(figsize=(5 * cols, 4 * nrows), layout="constrained")
        for i, stack in enumerate(panels):
            ax = fig.add_subplot(nrows, cols, i + 1)
            for part in (p for p in stack.parts() if p in measured):
                _draw(ax, measured[part], lw=1.0, alpha=0.7)
            row = by_stack[stack.id]
            colour = VERDICT_COLOUR.get(row.outcome, "black")
            _draw(ax, measured[stack], lw=2.5, alpha=1.0, colour=colour)
            if row.data.extended_levels:  # the saturated flat extension the verdict used, dashed
                for part in [stack, *(p for p in stack.parts() if p in measured)]:
                    sw = measured[part]
                    if sw.saturated:
                        top = sw.mean.frontier[0]
                        lo = min(float(x) for x in row.data.extended_levels)
                        ax.plot([lo, top.interactivity], [top.throughput] * 2, ls="--", lw=1.0,
                                color=colour if part == stack else "gray", label=f"{sw.name} flat (saturated)")
            variant = f" [{stack.variant}]" if stack.variant else ""
            eff = f", efficiency {row.data.efficiency:.2f}" if row.data.efficiency is not None else ""
            _dress(ax, f"{stack.label}{variant}: {row.outcome}{eff}")
        title = f"{gpu} {engine}: each stack (bold) against its parts; dots are single repeats"
        fig.suptitle(textwrap.fill(title, 45 * cols), fontsize=10)  # one panel is too narrow for one line
        path = path_of(engine)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
        written.append(path)
    return written


def write_engines_plot(rows: list[Row], stacks: Sequence[Stack], gpu: str, path: Path) -> Path | None:
    """<suite>-engines.png: each stack measured on two or more engines, one panel, the engines' curves
    side by side (same workload and client, so the curves compare). None when fewer than two engines."""
    from matplotlib.figure import Figure

    by_id = {s.id: s for s in stacks}
    curves: dict[tuple[str, str], dict[str, Sweeps]] = {}
    for row in rows:
        stack = by_id.get(row.stack)
        sw = _sweeps(f"{stack.engine} ({row.outcome})", row) if stack is not None else None
        if stack is not None and sw is not None:
            curves.setdefault((stack.label, stack.variant), {})[stack.engine] = sw
    panels = [(k, v) for k, v in curves.items() if len(v) > 1]
    if not panels:
        return None
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(5 * cols, 4 * nrows), layout="constrained")
    for i, ((label, variant), engines) in enumerate(panels):
        ax = fig.add_subplot(nrows, cols, i + 1)
        for _, sw in sorted(engines.items()):
            _draw(ax, sw, lw=2.0, alpha=1.0)
        _dress(ax, f"{label}{f' [{variant}]' if variant else ''}")
    fig.suptitle(f"{gpu}: each stack on every engine that ran it (same workload, same client)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def _dress(ax: Any, title: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("interactivity (tok/s/user)")
    ax.set_ylabel("throughput (tok/s/GPU)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _draw(ax: Any, sw: Sweeps, lw: float, alpha: float, colour: str | None = None) -> None:
    xs = [p.interactivity for p in sw.mean.frontier]
    ys = [p.throughput for p in sw.mean.frontier]
    line = ax.plot(xs, ys, marker="o", lw=lw, alpha=alpha, label=sw.name, color=colour)[0]
    for curve in sw.repeats:
        ax.scatter([p.interactivity for p in curve.frontier], [p.throughput for p in curve.frontier],
                   s=8, alpha=0.35, color=line.get_color())

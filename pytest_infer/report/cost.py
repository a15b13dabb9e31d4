"""Cost per million output tokens at matched interactivity (issue 17, part 5), from matrices/prices.yaml.

At each interactivity level of the reference (base's frontier, so every stack is priced at the same
places), a stack's output tokens per device-second on its mean curve: cost = price per device-hour /
(output tok/s/device x 3600) x 1e6. Energy per output token where the levels carry device power
(measure/power.py): a level's joules over its output tokens = its mean power / its output tok/s (the joules
are power_w x duration_s, the tokens output_throughput x duration_s), at the same interactivity levels,
linear between the stack's measured levels (each concurrency's mean over repeats), empty outside them.
Without readings the table says why (the sampler's reason) rather than guessing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from tabulate import tabulate

from pytest_infer.analysis.curve import Sweeps
from pytest_infer.matrix import PricesFile
from pytest_infer.report.rows import Row


def _output_curve(row: Row) -> Sweeps | None:
    levels = [lv for lv in row.data.levels or [] if not lv.problems and lv.per_gpu_output_throughput]
    if not levels:
        return None
    return Sweeps.from_records(row.stack, ({"repeat": lv.repeat, "concurrency": lv.concurrency,
                                            "interactivity": lv.interactivity,
                                            "per_gpu_throughput": lv.per_gpu_output_throughput} for lv in levels))


def joules_per_token(row: Row) -> list[tuple[float, float]]:
    """(interactivity, J per output token) of each concurrency with power readings, mean over repeats,
    interactivity ascending."""
    by_conc: dict[int, list[tuple[float, float]]] = {}
    for lv in row.data.levels or []:
        out = (lv.per_gpu_output_throughput or 0.0) * (row.data.gpus or 0)  # output tok/s, whole deployment
        if lv.problems or lv.power_w is None or out <= 0:
            continue
        by_conc.setdefault(lv.concurrency, []).append((lv.interactivity, lv.power_w / out))
    points = [(float(np.mean([x for x, _ in ps])), float(np.mean([j for _, j in ps]))) for ps in by_conc.values()]
    return sorted(points)


def _joules_at(points: list[tuple[float, float]], x: float) -> float | None:
    if not points or not points[0][0] <= x <= points[-1][0]:
        return None  # no extrapolation
    return float(np.interp(x, [p for p, _ in points], [j for _, j in points]))


def _power_note(rows: Sequence[Row], vendor: str) -> str:
    """Why the levels carry no power: the sampler's reasons, or (stored before it existed) where it would read."""
    notes = list(dict.fromkeys(r.data.power_note for r in rows if r.data.power_note))
    if notes:
        return f"Energy per token: not measured: {'; '.join(notes[:2])}."
    if vendor == "cpu":
        where = "/sys/class/powercap" if os.path.isdir("/sys/class/powercap") else "no /sys/class/powercap here"
        return f"Energy per token: not measured (no power reading stored with these levels; RAPL: {where})."
    tool = "nvidia-smi" if vendor == "nvidia" else "amd-smi"
    return f"Energy per token: not measured (no power reading stored with these levels; {tool} would give it)."


def _energy_table(rows: Sequence[Row], xs: Sequence[float], vendor: str) -> str:
    """J per output token per stack at the interactivity levels `xs`, or the note saying why there is none."""
    points = [(row, joules_per_token(row)) for row in rows]
    if not any(p for _, p in points):
        return f"\n{_power_note(rows, vendor)}\n"
    table = []
    for row, pts in points:
        cells = [f"{j:.3g}" if (j := _joules_at(pts, x)) is not None else "" for x in xs]
        table.append([f"`{row.stack}`", *cells])
    without = [r for r, p in points if not p]
    why = (" No readings for " + ", ".join(f"`{r.stack}`" for r in without)
           + (f": {'; '.join(dict.fromkeys(r.data.power_note for r in without if r.data.power_note))}"
              if any(r.data.power_note for r in without) else "") + ".") if without else ""
    notes = list(dict.fromkeys(r.data.power_note for r, p in points if p and r.data.power_note))
    how = f" Read with: {'; '.join(notes[:2])}." if notes else ""
    return ("\nJoules per output token at matched interactivity: the level's mean device power (all its devices) "
            "over its output tokens per second, linear between each stack's measured levels, empty outside them."
            f"{how}{why}\n\n"
            + tabulate(table, tablefmt="github", disable_numparse=True,
                       headers=["stack", *(f"at {x:.1f} tok/s/user (J/token)" for x in xs)]) + "\n")


def cost_table(rows: Sequence[Row], prices: PricesFile, gpu: str, vendor: str) -> str:
    tiers = prices.prices.get(gpu)
    curves = [(r, c) for r in rows if (c := _output_curve(r)) is not None]
    ref = next((c for r, c in curves if r.data.stack.split("@")[0].endswith("-base")), None)
    if ref is None and curves:
        ref = curves[0][1]
    xs = [p.interactivity for p in ref.mean.frontier] if ref is not None else []
    measured = [r for r, _ in curves]
    if not tiers:
        energy = _energy_table(measured, xs, vendor) if xs and any(joules_per_token(r) for r in measured) else ""
        return f"\n## Cost\n\nNo price for {gpu} in matrices/prices.yaml: no cost table.\n{energy}"
    if not xs:
        return ""
    names = ", ".join(f"{k} {v:g}" for k, v in tiers.items())
    table = []
    for row, curve in curves:
        cells = []
        for x in xs:
            y = curve.mean.at(x)
            cells.append(" / ".join(f"{price / (y * 3600) * 1e6:.3g}" for price in tiers.values())
                         if y and y > 0 else "")
        table.append([f"`{row.stack}`", *cells])
    return (f"\n## Cost\n\n{prices.currency} per million output tokens at matched interactivity, at each price "
            f"tier ({names} {prices.currency} per device-hour, matrices/prices.yaml), on each stack's mean curve; "
            "empty where a stack does not reach that interactivity.\n\n"
            + tabulate(table, tablefmt="github", disable_numparse=True,
                       headers=["stack", *(f"at {x:.1f} tok/s/user ({' / '.join(tiers)})" for x in xs)]) + "\n"
            + _energy_table(measured, xs, vendor))

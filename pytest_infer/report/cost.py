"""Cost per million output tokens at matched interactivity (issue 17, part 5), from matrices/prices.yaml.

At each interactivity level of the reference (base's frontier, so every stack is priced at the same
places), a stack's output tokens per device-second on its mean curve: cost = price per device-hour /
(output tok/s/device x 3600) x 1e6. Energy per token needs device power read during the run; no
reading is taken in this version, and the table says so rather than guessing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

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


def _power_note(vendor: str) -> str:
    if vendor == "cpu":
        where = "/sys/class/powercap" if os.path.isdir("/sys/class/powercap") else "no /sys/class/powercap here"
        return f"Energy per token: not measured (no power reading is taken on cpu; {where})."
    tool = "nvidia-smi" if vendor == "nvidia" else "amd-smi"
    return f"Energy per token: not measured (power is not sampled during the run in this version; {tool} could)."


def cost_table(rows: Sequence[Row], prices: PricesFile, gpu: str, vendor: str) -> str:
    tiers = prices.prices.get(gpu)
    if not tiers:
        return f"\n## Cost\n\nNo price for {gpu} in matrices/prices.yaml: no cost table.\n"
    curves = [(r, c) for r in rows if (c := _output_curve(r)) is not None]
    ref = next((c for r, c in curves if r.data.stack.split("@")[0].endswith("-base")), None)
    if ref is None and curves:
        ref = curves[0][1]
    if ref is None:
        return ""
    xs = [p.interactivity for p in ref.mean.frontier]
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
            f"empty where a stack does not reach that interactivity. {_power_note(vendor)}\n\n"
            + tabulate(table, tablefmt="github", disable_numparse=True,
                       headers=["stack", *(f"at {x:.1f} tok/s/user ({' / '.join(tiers)})" for x in xs)]) + "\n")

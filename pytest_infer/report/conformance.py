"""The conformance matrix: one row per stack: accuracy ± stderr, parity against its references (difference
and interval, margin), the floor, greedy-output agreement, MTP acceptance."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from pytest_infer.report.markdown import verdict_of
from pytest_infer.report.rows import Row, StackRow


def _check(p: StackRow, prefix: str) -> str:
    cells = []
    for c in p.checks or []:
        if not c.check.startswith(prefix):
            continue
        name = c.check.removeprefix(prefix).strip()
        value, low, high, threshold = c.value or 0.0, c.low or 0.0, c.high or 0.0, c.threshold or 0.0
        if c.check == "parity":
            cell = f"no reference and no floor: {c.verdict}"
        elif prefix == "parity" and c.low is not None:
            cell = (f"vs {name.removeprefix('vs ')}: {value:+.3f} [{low:+.3f}, {high:+.3f}] "
                    f"margin {-threshold:.2f}{' unpaired' if c.method.startswith('unpaired') else ''}"
                    f" {c.verdict}")
        elif prefix == "output agreement":
            cell = f"{value:.3f} [{low:.3f}, {high:.3f}] ≥ {threshold:.2f} {c.verdict}"
        else:
            cell = f"{value:.3f} ≥ {threshold:.2f} {c.verdict}"
        cells.append(cell)
    return "; ".join(cells)


def _cell(row: Row) -> list[Any]:
    p = row.data
    score = (f"{p.score:.4f}" + (f" ± {p.stderr:.4f}" if p.stderr is not None else "")) if p.score is not None else ""
    accept = f"{p.mtp_acceptance_rate:.3f}" if p.mtp_acceptance_rate is not None else ""
    lines = [ln for ln in row.detail.splitlines() if ln.strip()]
    detail = " ".join(" ".join(lines[:1]).split())
    if row.outcome in ("passed", "failed") and p.checks is not None:
        failing = [c.message for c in p.checks if c.verdict == "fail"]
        detail = failing[0] if failing else str(lines[0]) if lines else ""
    if len(detail) > 400:
        detail = detail[:397] + "..."
    return [f"`{row.stack}`", verdict_of(row), score, p.n if p.n is not None else "", _check(p, "parity"),
            _check(p, "floor"), _check(p, "output agreement"), accept, detail]


def intro(confidence: float) -> str:
    return (f"Accuracy with lm-eval against each deployment. Parity: {confidence:.0%} interval on stack − reference "
            f"(paired Newcombe on per-sample outcomes; unpaired normal on score ± stderr rows, marked); pass when "
            f"it lies above −margin, fail when below, otherwise inconclusive. Greedy agreement: share of "
            f"identical greedy outputs on a fixed prompt set against the same-precision reference.\n\n")


def table(rows: list[Row]) -> str:
    return tabulate([_cell(r) for r in rows], tablefmt="github", disable_numparse=True, headers=[
        "stack", "verdict", "accuracy ± stderr", "n", "parity (stack − reference [interval])", "floor",
        "greedy agreement [interval]", "MTP acceptance", "details"]) + "\n"

"""<report-dir>/<gpu>/conformance.md: one row per stack: accuracy ± stderr, parity against its
references (difference and interval, margin), the floor, greedy-output agreement, MTP acceptance."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tabulate import tabulate

if TYPE_CHECKING:
    from pytest_infer.session import InferSession, Row


def _check(props: dict[str, Any], prefix: str) -> str:
    cells = []
    for c in props.get("checks") or []:
        if not str(c["check"]).startswith(prefix):
            continue
        name = str(c["check"]).removeprefix(prefix).strip()
        if c["check"] == "parity":
            cell = f"no reference and no floor: {c['verdict']}"
        elif prefix == "parity" and c.get("low") is not None:
            cell = (f"vs {name.removeprefix('vs ')}: {c['value']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] "
                    f"margin {-c['threshold']:.2f}{' unpaired' if str(c['method']).startswith('unpaired') else ''}"
                    f" {c['verdict']}")
        elif prefix == "output agreement":
            cell = f"{c['value']:.3f} [{c['low']:.3f}, {c['high']:.3f}] ≥ {c['threshold']:.2f} {c['verdict']}"
        else:
            cell = f"{c['value']:.3f} ≥ {c['threshold']:.2f} {c['verdict']}"
        cells.append(cell)
    return "; ".join(cells)


def _cell(row: Row) -> list[Any]:
    from pytest_infer.report.markdown import VERDICT

    p = row.props
    verdict = VERDICT.get(row.outcome, row.outcome)
    if row.outcome == "skipped" and str(row.detail).startswith("inconclusive"):
        verdict = "inconclusive"
    score = f"{p['score']:.4f}" + (f" ± {p['stderr']:.4f}" if "stderr" in p else "") if "score" in p else ""
    accept = f"{p['mtp_acceptance_rate']:.3f}" if "mtp_acceptance_rate" in p else ""
    lines = [ln for ln in str(row.detail).splitlines() if ln.strip()]
    detail = " ".join(" ".join(lines[:1]).split())
    if row.outcome in ("passed", "failed") and "checks" in p:
        failing = [str(c["message"]) for c in p["checks"] if c["verdict"] == "fail"]
        detail = failing[0] if failing else str(lines[0]) if lines else ""
    if len(detail) > 400:
        detail = detail[:397] + "..."
    return [f"`{row.stack}`", verdict, score, p.get("n", ""), _check(p, "parity"), _check(p, "floor"),
            _check(p, "output agreement"), accept, detail]


def write_conformance(infer: InferSession) -> Path:
    from pytest_infer.report.markdown import rows_in_order

    rows = rows_in_order(infer)
    table = tabulate([_cell(r) for r in rows], tablefmt="github", disable_numparse=True, headers=[
        "stack", "verdict", "accuracy ± stderr", "n", "parity (stack − reference [interval])", "floor",
        "greedy agreement [interval]", "MTP acceptance", "details"])
    versions = ", ".join(f"{e} {v or 'not installed'}" for e, v in infer.versions.items())
    conf = infer.matrix.thresholds.confidence
    text = (f"# Conformance matrix: {infer.gpu}\n\n"
            f"Model `{infer.model}`; {versions}; written {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC.\n"
            f"Accuracy with lm-eval against each deployment. Parity: {conf:.0%} interval on stack − reference "
            f"(paired Newcombe on per-sample outcomes; unpaired normal on score ± stderr rows, marked); pass when "
            f"it lies above −margin, fail when below, otherwise inconclusive. Greedy agreement: share of "
            f"identical greedy outputs on a fixed prompt set against the same-precision reference.\n\n"
            f"{table}\n")
    infer.report_dir.mkdir(parents=True, exist_ok=True)
    path = infer.report_dir / "conformance.md"
    path.write_text(text)
    return path

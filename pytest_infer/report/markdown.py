"""<report-dir>/<gpu>/composability.md: one row per stack, its ratio to its best part and the verdict,
with skip and xfail reasons shown in full."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tabulate import tabulate

if TYPE_CHECKING:
    from pytest_infer.session import InferSession, Row

VERDICT = {"passed": "PASS", "failed": "FAIL", "skipped": "skip", "xfail": "xfail (known broken)",
           "XPASS": "XPASS", "XPASS(strict)": "XPASS (registry out of date)", "not run": "not run"}


def _cell(row: Row) -> list[Any]:
    p = row.props
    verdict = VERDICT.get(row.outcome, row.outcome)
    if row.outcome == "skipped" and str(row.detail).startswith("inconclusive"):
        verdict = "inconclusive"
    ratio = f"{p['worst_ratio']:.3f}" if "worst_ratio" in p else ""
    where = (f"{p['worst_interactivity']:.1f}" if "worst_interactivity" in p else "")
    vs = (f"{p['best_part']} ({p['stack_throughput']:.0f} vs {p['part_throughput']:.0f})" if "best_part" in p else "")
    levels = ", ".join(f"{k}: {v:.2f}" for k, v in p.get("ratios", {}).items())
    lines = [ln for ln in str(row.detail).splitlines() if ln.strip()]
    detail = " ".join(" ".join(lines[:2]).split())  # the full text (log tails) is in JUnit and runs/<stack>/
    if len(detail) > 500:
        detail = detail[:497] + "..."
    return [f"`{row.stack}`", verdict, ratio, where, vs, levels, detail]


def rows_in_order(infer: InferSession) -> list[Row]:
    order = {s.id: i for i, s in enumerate(infer.stacks)}
    return sorted(infer.rows.values(), key=lambda r: order.get(r.stack, len(order)))


def write_matrix(infer: InferSession) -> Path:
    rows = rows_in_order(infer)
    table = tabulate([_cell(r) for r in rows], tablefmt="github", headers=[
        "stack", "verdict", "worst ratio to best part", "at tok/s/user", "best part there (tok/s/GPU)",
        "ratio per matched level", "details"])
    tol = infer.matrix.thresholds.composability_tolerance
    versions = ", ".join(f"{e} {v or 'not installed'}" for e, v in infer.versions.items())
    suite = infer.suite or "composability"
    text = (f"# {suite.capitalize()} matrix: {infer.gpu}\n\n"
            f"Model `{infer.model}`; {versions}; written {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC.\n"
            + (f"Each stack against the best of its parts (proper subsets) at matched interactivity "
               f"(tok/s/user = 1000 / median TPOT), per-GPU throughput; fail below {1 - tol:.2f}.\n\n"
               if suite == "composability" else "Each stack launched and asked for one greedy completion.\n\n")
            + f"{table}\n")
    infer.report_dir.mkdir(parents=True, exist_ok=True)
    path = infer.report_dir / f"{suite}.md"
    path.write_text(text)
    return path


def summary_lines(infer: InferSession) -> list[str]:
    return [f"{r.stack}: {VERDICT.get(r.outcome, r.outcome)}"
            + (f" ratio {r.props['worst_ratio']:.3f} vs {r.props['best_part']}" if "worst_ratio" in r.props else "")
            for r in rows_in_order(infer)]

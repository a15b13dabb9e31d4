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
    if "worst_low" in p and p.get("interval_method") != "point":
        ratio += f" [{p['worst_low']:.3f}, {p['worst_high']:.3f}]"
    where = (f"{p['worst_interactivity']:.1f}" if "worst_interactivity" in p else "")
    vs = (f"{p['best_part']} ({p['stack_throughput']:.0f} vs {p['part_throughput']:.0f})" if "best_part" in p else "")
    levels = ", ".join(f"{k}: {v:.2f}" for k, v in p.get("ratios", {}).items())
    lines = [ln for ln in str(row.detail).splitlines() if ln.strip()]
    detail = " ".join(" ".join(lines[:2]).split())  # the full text (log tails) is in JUnit and runs/<stack>/
    if len(detail) > 500:
        detail = detail[:497] + "..."
    accept = f"{p['mtp_acceptance_rate']:.2f}" if "mtp_acceptance_rate" in p else ""
    return [f"`{row.stack}`", verdict, ratio, where, vs, levels, accept, detail]


def rows_in_order(infer: InferSession) -> list[Row]:
    order = {s.id: i for i, s in enumerate(infer.stacks)}
    return sorted(infer.rows.values(), key=lambda r: order.get(r.stack, len(order)))


def _levels_table(rows: list[Row]) -> str:
    """Per stack and concurrency: means over repeats, and the engine metrics that explain them."""
    import statistics

    from pytest_infer.measure.metrics import pooled_acceptance

    out: list[list[Any]] = []
    for row in rows:
        by_conc: dict[int, list[dict[str, Any]]] = {}
        for lv in row.props.get("levels") or []:
            by_conc.setdefault(int(lv["concurrency"]), []).append(lv)
        for conc, lvs in sorted(by_conc.items()):
            ys = [float(lv["per_gpu_throughput"]) for lv in lvs]
            spread = f" ± {statistics.stdev(ys):.0f}" if len(ys) > 1 else ""
            metrics = [lv.get("metrics") or {} for lv in lvs]
            rate = pooled_acceptance(metrics)
            accept = f"{rate:.2f}" if rate is not None else ""
            kv = [v.get("kv_cache_usage_max", 0.0) for m in metrics for v in m.values()]
            pre = sum(v.get("preemptions", 0.0) for m in metrics for v in m.values())
            steal = [m["host"]["cpu_steal_pct"] for m in metrics if "cpu_steal_pct" in m.get("host", {})]
            out.append([f"`{row.stack}`", conc, len(lvs),
                        f"{statistics.mean(float(lv['interactivity']) for lv in lvs):.1f}",
                        f"{statistics.mean(ys):.0f}{spread}",
                        f"{statistics.mean(float(lv.get('per_decode_gpu_output_throughput', 0)) for lv in lvs):.0f}",
                        accept, f"{max(kv):.1%}" if kv else "", f"{pre:.0f}" if metrics[0] else "",
                        f"{max(steal):.1f}%" if steal else ""])
    if not out:
        return ""
    return "\n## Levels\n\nMeans over repeats; engine metrics scraped from every role during each level.\n\n" + tabulate(
        out, tablefmt="github", headers=["stack", "concurrency", "repeats", "tok/s/user", "tok/s/GPU (± sd)",
                                         "output tok/s per decode GPU", "MTP acceptance", "KV cache max",
                                         "preemptions", "host CPU steal (max)"]) + "\n"


def write_matrix(infer: InferSession, plots: list[Path] | None = None) -> Path:
    if infer.suite == "conformance":
        from pytest_infer.report.conformance import write_conformance

        return write_conformance(infer)
    rows = rows_in_order(infer)
    suite = infer.suite or "composability"
    ref = "baseline" if suite == "regression" else "best part"
    table = tabulate([_cell(r) for r in rows], tablefmt="github", disable_numparse=True, headers=[
        "stack", "verdict", f"worst ratio to {ref} [interval]", "at tok/s/user", f"{ref} there (tok/s/GPU)",
        "ratio per matched level", "MTP acceptance", "details"])
    tol, conf, noise = infer.stats.tolerance, infer.stats.confidence, infer.stats.session_noise
    versions = ", ".join(f"{e} {v or 'not installed'}" for e, v in infer.versions.items())
    intro = ""
    if suite == "regression":
        from pytest_infer.regression import markdown_intro

        intro = markdown_intro(infer)
    text = (f"# {suite.capitalize()} matrix: {infer.gpu}\n\n"
            f"Model `{infer.model}`; {versions}; written {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC.\n"
            + (f"Each stack against the best of its parts (proper subsets) at matched interactivity "
               f"(tok/s/user = 1000 / median TPOT), per-GPU throughput, {infer.matrix.workload(infer.gpu).repeats} "
               f"repeat(s) per level: pass when the {conf:.0%} interval on the ratio is at or above "
               f"{1 - tol:.2f}, fail when it is all below, otherwise inconclusive"
               + (f" (intervals include a between-session noise of {noise:.0%}, log-SD, from an A/A "
                  f"calibration)" if noise else "") + ".\n\n"
               if suite == "composability" else intro if suite == "regression"
               else "Each stack launched and asked for one greedy completion.\n\n")
            + f"{table}\n" + (_levels_table(rows) if suite in ("composability", "regression") else "")
            + "".join(f"\n![{p.stem}]({p.name})\n" for p in plots or []))
    infer.report_dir.mkdir(parents=True, exist_ok=True)
    path = infer.report_dir / f"{suite}.md"
    path.write_text(text)
    return path


def summary_lines(infer: InferSession) -> list[str]:
    """One line per stack; a stack that did not pass says why (the first line of its reason, cut short:
    the matrix has all of it), so a CI log shows the cause without opening the report."""
    def why(r: Row) -> str:
        if r.outcome == "passed" or not r.detail:
            return ""
        first = str(r.detail).splitlines()[0]
        return f": {first[:240]}{'...' if len(first) > 240 else ''}"

    return [f"{r.stack}: {VERDICT.get(r.outcome, r.outcome)}"
            + (f" ratio {r.props['worst_ratio']:.3f} vs {r.props['best_part']}" if "worst_ratio" in r.props else "")
            + why(r) for r in rows_in_order(infer)]

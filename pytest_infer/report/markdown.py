"""<report-dir>/<gpu>/<suite>.md: one row per stack, its ratio to its reference (best part, or baseline)
and the verdict, with skip and xfail reasons in full; then the levels with their engine metrics."""

from __future__ import annotations

import datetime
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tabulate import tabulate

from pytest_infer.measure.evidence import FAILED
from pytest_infer.measure.metrics import pooled_acceptance
from pytest_infer.report.rows import Row, StackRow
from pytest_infer.store.store import SKIPPED, Store

if TYPE_CHECKING:
    from pytest_infer.run import Run

VERDICT = {"passed": "PASS", "failed": "FAIL", "skipped": "skip", "xfail": "xfail (known broken)",
           "XPASS": "XPASS", "XPASS(strict)": "XPASS (registry out of date)", "not run": "not run"}


def verdict_of(row: Row) -> str:
    return "inconclusive" if row.inconclusive else VERDICT.get(row.outcome, row.outcome)


def header(title: str, run: Run) -> str:
    """What was measured: this machine's engine and model for a live run; for a replay, the data's own
    engines, versions, GPUs, models and dates (and the files skipped), never this machine's."""
    written = f"written {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
    if not run.replay:
        versions = ", ".join(f"{e} {v or 'not installed'}" for e, v in run.versions.items())
        return f"# {title} matrix: {run.gpu}\n\nModel `{run.model}`; {versions}; {written}.\n"
    return f"# {title} matrix: {run.gpu} (replayed)\n\n{replayed_data(run)}; {written}.\n"


def replayed_data(run: Run) -> str:
    root = run.paths.replayed if run.paths.replayed.is_dir() else run.options.results
    assert root is not None
    ms = [m for m in Store(root).all() if m.gpu == run.gpu]

    def listed(values: Iterable[str]) -> str:
        got = sorted({v for v in values if v})
        return ", ".join(f"`{v}`" for v in got) if got else "unknown"

    skipped = root / SKIPPED
    lines = skipped.read_text().splitlines() if skipped.is_file() else []
    text = (f"Replayed from `{run.options.results}`: {len(ms)} measurement(s); engines "
            f"{listed(f'{m.engine} {m.engine_version}' for m in ms)}; GPUs {listed(m.gpu for m in ms)}; models "
            f"{listed(m.model for m in ms)}; measured {listed(d for m in ms for d in m.date.split(', '))}")
    if lines:
        text += f"; {len(lines)} file(s) skipped:\n\n" + "".join(f"- {ln}\n" for ln in lines) + "\n"
    return text


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _ratio(p: StackRow) -> str:
    text = f"{p.worst_ratio:.3f}" if p.worst_ratio is not None else ""
    if p.worst_low is not None and p.worst_high is not None and p.interval_method != "point":
        text += f" [{p.worst_low:.3f}, {p.worst_high:.3f}]"
    return text


def _efficiency(p: StackRow) -> str:
    eff = f"{p.efficiency:.2f}" if p.efficiency is not None else ""
    lo, hi = p.efficiency_low, p.efficiency_high
    if eff and lo is not None and hi is not None and lo != hi:
        eff += f" [{lo:.2f}, {hi:.2f}]"
    if eff and p.efficiency_interactivity is not None:
        eff += f" at {p.efficiency_interactivity:.1f}"
    return eff


def _cell(row: Row, with_efficiency: bool = False) -> list[Any]:
    """The compact row: what a reader scans first (the explanations are in the details below)."""
    p = row.data
    where = f"{p.worst_interactivity:.1f}" if p.worst_interactivity is not None else ""
    cells = [f"`{row.stack}`", verdict_of(row), _ratio(p), where]
    if with_efficiency:
        cells.insert(3, _efficiency(p))
    return cells


def _details(row: Row, ref: str) -> str:
    """A stack's explanation under the compact matrix: its reference there, each level, the reason."""
    p = row.data
    facts = []
    if p.best_part is not None:
        facts.append(f"{ref} there (tok/s/GPU): {p.best_part} ({p.stack_throughput or 0:.0f} vs "
                     f"{p.part_throughput or 0:.0f})")
    ext = set(p.extended_levels or [])
    if p.ratios:
        facts.append("ratio per matched level: " + ", ".join(
            f"{k}: {v:.2f}{EXTENDED if k in ext else ''}" for k, v in p.ratios.items()))
    if p.efficiencies and len(p.efficiencies) > 1:
        facts.append("stacking efficiency per level: " + ", ".join(f"{k}: {v:.2f}" for k, v in p.efficiencies.items()))
    if p.split is not None and p.split_efficiency is not None:
        facts.append(f"efficiency against its best-predicting sub-stacks ({p.split}): {p.split_efficiency:.2f} "
                     f"[{p.split_efficiency_low or 0:.2f}, {p.split_efficiency_high or 0:.2f}]")
    if p.mtp_acceptance_rate is not None:
        facts.append(f"MTP acceptance {p.mtp_acceptance_rate:.2f}")
    lines = [ln for ln in row.detail.splitlines() if ln.strip()]
    detail = " ".join(" ".join(lines[:2]).split())  # the full text (log tails) is in JUnit and runs/<stack>/
    if len(detail) > 1500:
        detail = detail[:1497] + "..."
    if not facts and not detail:
        return ""
    return (f"- `{row.stack}`: {verdict_of(row)}" + "".join(f"; {f}" for f in facts)
            + (f". {detail}" if detail else "") + "\n")


EXTENDED = "†"  # a ratio whose level one side reached only through a saturated sweep's flat extension


def throughput_table(rows: list[Row], ref: str) -> str:
    """The compact matrix (stack, verdict, ratio with its interval, efficiency, where), then per stack the
    explanation: a row hundreds of characters wide is unreadable on GitHub and in a terminal."""
    efficiency = any(r.data.efficiency is not None for r in rows)
    headers = ["stack", "verdict", f"worst ratio to {ref} [interval]", "at tok/s/user"]
    if efficiency:  # 1.0: the optimizations stack as independent factors (README: stacking efficiency)
        headers.insert(3, "stacking efficiency [interval] at tok/s/user")
    table = tabulate([_cell(r, efficiency) for r in rows], tablefmt="github", disable_numparse=True,
                     headers=headers) + "\n"
    details = "".join(_details(r, ref) for r in rows)
    if details:
        table += "\n### Details\n\n" + details
    notes = [f"- `{r.stack}`: {r.data.saturation}" for r in rows if r.data.saturation]
    bad = [f"- `{r.stack}`: {item}" for r in rows for item in r.data.failed_levels or []]
    if notes:
        table += (f"\n{EXTENDED} a level served by the flat extension of a saturated sweep (its best point serves "
                  "lower interactivity; built from clean levels only):\n\n" + "\n".join(notes) + "\n")
    if bad:
        table += ("\nLevels that do not count (failed requests, no tokens, requests cut short; in no curve):\n\n"
                  + "\n".join(bad) + "\n")
    return table


def levels_table(rows: list[Row]) -> str:
    """Per stack and concurrency: means over repeats, and the engine metrics that explain them."""
    out: list[list[Any]] = []
    for row in rows:
        by_conc: dict[int, list[Any]] = {}
        for lv in row.data.levels or []:
            by_conc.setdefault(lv.concurrency, []).append(lv)
        for conc, lvs in sorted(by_conc.items()):
            ys = [lv.per_gpu_throughput for lv in lvs]
            spread = f" ± {statistics.stdev(ys):.0f}" if len(ys) > 1 else ""
            metrics = [lv.metrics or {} for lv in lvs]
            rate = pooled_acceptance(metrics)
            accept = f"{rate:.2f}" if rate is not None else ""
            kv = [v.get("kv_cache_usage_max", 0.0) for m in metrics for v in m.values()]
            pre = sum(v.get("preemptions", 0.0) for m in metrics for v in m.values())
            steal = [m["host"]["cpu_steal_pct"] for m in metrics if "cpu_steal_pct" in m.get("host", {})]
            counted = [lv for lv in lvs if not lv.problems]
            requests = (f"{sum(lv.completed or 0 for lv in lvs)}/{sum(lv.num_prompts or 0 for lv in lvs)}"
                        f" ({sum(lv.failed or 0 for lv in lvs)} failed)" if lvs[0].completed is not None else "")
            if len(counted) < len(lvs):
                requests += f", {len(lvs) - len(counted)} not counted"
            out.append([f"`{row.stack}`", conc, len(lvs), requests,
                        f"{statistics.mean(lv.interactivity for lv in lvs):.1f}",
                        f"{statistics.mean(ys):.0f}{spread}",
                        f"{statistics.mean(lv.per_decode_gpu_output_throughput for lv in lvs):.0f}",
                        accept, f"{max(kv):.1%}" if kv else "", f"{pre:.0f}" if metrics[0] else "",
                        f"{max(steal):.1f}%" if steal else ""])
    if not out:
        return ""
    return ("\n## Levels\n\nMeans over repeats; engine metrics scraped from every role "
            "during each level.\n\n") + tabulate(
        out, tablefmt="github", headers=["stack", "concurrency", "repeats", "completed/requests", "tok/s/user",
                                         "tok/s/GPU (± sd)",
                                         "output tok/s per decode GPU", "MTP acceptance", "KV cache max",
                                         "preemptions", "host CPU steal (max)"]) + "\n"


def applied_table(rows: list[Row]) -> str:
    """Per stack, what its deployment reported about itself against what the stack claims (its serving
    roles' non-default arguments, engine config, /metrics counters and ranks): the stack is what it claims.
    Empty when no row has any (a replay, an engine that declares no evidence)."""
    out: list[list[str]] = []
    for row in rows:
        text = row.data.applied
        failed = next((t for t in (row.data.message, row.detail) if t and t.startswith(FAILED)), None)
        if text is None and failed is not None:
            text = "CONTRADICTED: " + failed.splitlines()[0].removeprefix(f"{FAILED}: ")
        if text is not None:
            out.append([f"`{row.stack}`", " ".join(text.replace("|", "\\|").split())])
    if not out:
        return ""
    return ("\n## Applied configuration\n\nWhat each deployment reported about itself after traffic (its serving "
            "roles' non-default arguments and engine config lines, /metrics counters and engine ranks) against what "
            "its stack claims; a contradiction fails the stack.\n\n"
            + tabulate(out, tablefmt="github", disable_numparse=True, headers=["stack", "evidence"]) + "\n")


def summary_lines(rows: list[Row]) -> list[str]:
    """One line per stack; a stack that did not pass says why (the first line of its reason, cut short:
    the matrix has all of it), so a CI log shows the cause without opening the report."""
    def why(r: Row) -> str:
        if r.outcome == "passed" or not r.detail:
            return ""
        first = r.detail.splitlines()[0]
        return f": {first[:240]}{'...' if len(first) > 240 else ''}"

    return [f"{r.stack}: {VERDICT.get(r.outcome, r.outcome)}"
            + (f" ratio {r.data.worst_ratio:.3f} vs {r.data.best_part}" if r.data.worst_ratio is not None else "")
            + why(r) for r in rows]

"""Composability: does each stack beat the best of its parts at matched interactivity?"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_infer.analysis.checks import Verdict, acceptance_collapse, composability
from pytest_infer.analysis.curve import Sweeps
from pytest_infer.analysis.efficiency import Efficiency, against_best_prediction, stacking_efficiency
from pytest_infer.measure.runner import MeasurementFailed, failure_of
from pytest_infer.report import markdown
from pytest_infer.report.cost import cost_table
from pytest_infer.report.plots import write_engines_plot, write_plots
from pytest_infer.report.rows import Row, StackRow
from pytest_infer.space import Stack
from pytest_infer.store.records import Measurement
from pytest_infer.suite.base import (
    DataProblems,
    Result,
    Suite,
    acceptance,
    clean_levels,
    measured_row,
    outcome_of,
    with_problems,
    with_verdict,
)


def with_efficiency(row: StackRow, effs: list[Efficiency]) -> StackRow:
    """The stacking efficiency on the row: its lowest level with the interval, and every level's value."""
    if effs:
        worst = min(effs, key=lambda e: e.interval.ratio)
        row.efficiency, row.efficiency_low = round(worst.interval.ratio, 4), round(worst.interval.low, 4)
        row.efficiency_high, row.efficiency_interactivity = round(worst.interval.high, 4), round(worst.interactivity, 2)
        row.efficiencies = {f"{e.interactivity:.2f}": round(e.interval.ratio, 4) for e in effs}
    return row


def sweeps(m: Measurement, name: str) -> Sweeps | None:
    """The curve of a measurement's clean levels (a level with failed requests is in none); None when
    no level counts."""
    levels = clean_levels(m)
    return Sweeps.from_records(name, (lv.model_dump() for lv in levels)) if levels else None


class Composability(Suite):
    name = "composability"
    properties_of_row = (*Suite.properties_of_row, "efficiency", "efficiency_low", "efficiency_high",
                         "efficiency_interactivity", "split", "split_efficiency", "split_efficiency_low",
                         "split_efficiency_high")
    _efficiency: dict[str, list[Efficiency]]
    _split: dict[str, tuple[str, list[Efficiency]]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._efficiency = {}  # stack id -> its efficiency, from verdict() to check()
        self._split = {}  # stack id -> (the best-predicting split of sub-stacks, its efficiency)

    def check(self, stack: Stack) -> Result:
        verdict, m, part_problems = self.verdict(stack)
        if m.warnings:  # what the data cannot show (e.g. a format without request counts)
            verdict.message += "\nwarnings: " + "; ".join(m.warnings)
        row = with_verdict(measured_row(stack, m), verdict)
        with_efficiency(row, self._efficiency.pop(stack.id, []))
        if (split := self._split.pop(stack.id, None)) is not None:
            worst = min(split[1], key=lambda e: e.interval.ratio).interval
            row.split, row.split_efficiency = split[0], round(worst.ratio, 4)
            row.split_efficiency_low, row.split_efficiency_high = round(worst.low, 4), round(worst.high, 4)
        if part_problems:  # every one on the row; the message names the first few
            row.failed_levels = [*(row.failed_levels or []),
                                 *(bad.describe(who, limit=None) for who, bad in part_problems)]
        return Result(outcome_of(verdict), verdict.message, row)

    def verdict(self, stack: Stack) -> tuple[Verdict, Measurement, list[tuple[str, DataProblems]]]:
        """The stack against the best of its measurable parts at matched interactivity, on clean levels
        only; failed requests in the stack fail it, in a part leave it at best inconclusive."""
        stats = self.run.stats()
        self.selection.fail_fast_on_broken_part(stack, failure_of(self.lab.measure))
        m = self.lab.measure(stack)
        own = DataProblems.of(m)
        mine = sweeps(m, stack.label)
        if mine is None:
            return Verdict(stack.id, "composability", "fail", stats.tolerance,
                           own.describe(stack.label) + "; no level counts, nothing to compare"), m, []
        if not stack.opts:
            verdict = Verdict(stack.id, "composability", "pass", stats.tolerance,
                              f"reference measured: {len(clean_levels(m))} level(s) over {len(m.sweeps())} "
                              f"repeat(s)")
            return with_problems(verdict, own, []), m, []
        parts, notes, measured = [], [], {}
        part_problems: list[tuple[str, DataProblems]] = []
        for part in stack.parts():
            if self.selection.unsupported(part):
                continue
            try:
                measured[part.label] = pm = self.lab.measure(part)
            except MeasurementFailed as exc:
                notes.append(f"part {part.label} could not be measured: {str(exc).splitlines()[0]}")
                continue
            if bad := DataProblems.of(pm):
                part_problems.append((f"part {part.label}", bad))
            if (sw := sweeps(pm, part.label)) is not None:
                parts.append(sw)
        verdict = composability(mine, parts, stats)
        verdict.stack = stack.id
        by_label = {sw.name: sw for sw in parts}
        singles = [by_label.get(o) for o in stack.opts]
        if len(stack.opts) >= 2 and "base" in by_label and all(singles):
            self._efficiency[stack.id] = stacking_efficiency(mine, by_label["base"], [s for s in singles if s],
                                                             stats.confidence, stats.bootstrap_from)
        if len(stack.opts) >= 3 and "base" in by_label:
            split = against_best_prediction(mine, by_label["base"], stack.opts, by_label, stats.confidence,
                                            stats.bootstrap_from)
            if split is not None:
                self._split[stack.id] = split
        collapse = self._mtp_collapse(stack, m, measured.get("mtp"))
        if collapse:
            verdict.verdict = "fail"
            verdict.message = f"{collapse}; throughput: {verdict.message}"
        verdict = with_problems(verdict, own, [bad.describe(who) for who, bad in part_problems])
        if notes:
            verdict.message += "\n" + "\n".join(notes)
        return verdict, m, part_problems

    def _mtp_collapse(self, stack: Stack, m: Measurement, mtp: Measurement | None) -> str | None:
        """MTP's acceptance rate in the stack against MTP alone, from the scraped engine metrics."""
        if "mtp" not in stack.opts or stack.opts == ("mtp",) or mtp is None:
            return None
        rate, alone = acceptance(m), acceptance(mtp)
        if rate is None or alone is None:
            return None
        return acceptance_collapse(stack.id, rate, alone, self.run.matrix.thresholds.mtp_acceptance_collapse)

    def report(self, rows: list[Row]) -> Path:
        run, st = self.run, self.run.stats()
        plots = write_plots(rows, self.selection.stacks, run.engines, run.gpu,
                            lambda engine: run.paths.plot(self.name, engine))
        both = write_engines_plot(rows, self.selection.stacks, run.gpu, run.paths.plot(self.name, "engines"))
        plots += [both] if both is not None else []
        intro = (f"Each stack against the best of its parts (proper subsets) at matched interactivity "
                 f"(tok/s/user = 1000 / median TPOT), per-GPU throughput, {run.workload.repeats} "
                 f"repeat(s) per level: pass when the {st.confidence:.0%} interval on the ratio is at or above "
                 f"{1 - st.tolerance:.2f}, fail when it is all below, otherwise inconclusive"
                 + (f" (intervals include a between-session noise of {st.session_noise:.0%}, log-SD, from an A/A "
                    f"calibration)" if st.session_noise else "") + ".\n\n")
        text = (markdown.header("Composability", run) + intro + markdown.throughput_table(rows, "best part")
                + cost_table(rows, run.matrix.prices, run.gpu, run.vendor)
                + markdown.levels_table(rows) + markdown.applied_table(rows)
                + "".join(f"\n![{p.stem}]({p.name})\n" for p in plots))
        return markdown.write(run.paths.matrix(self.name), text)

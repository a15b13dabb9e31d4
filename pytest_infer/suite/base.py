"""What a suite is: its check of one stack, the known-broken kinds it expects, how it measures, its report,
its plan client and its JUnit properties. The test files under suites/ call `Suite.run_test`, which
records the row and turns the result into pass, fail or skip the same way for every suite."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

import pytest

from pytest_infer.analysis.checks import Verdict
from pytest_infer.measure.load import Target, bench_argv
from pytest_infer.measure.metrics import pooled_acceptance
from pytest_infer.measure.runner import MeasurementFailed
from pytest_infer.replay.replay import ReplayError, is_store, replay_store
from pytest_infer.report.rows import PROPERTY, LevelRow, Row, StackRow
from pytest_infer.run import usage
from pytest_infer.space import Stack
from pytest_infer.store.records import Level, Measurement

if TYPE_CHECKING:
    from pytest_infer.deployment import Deployment
    from pytest_infer.lab import Lab
    from pytest_infer.matrix import Matrix
    from pytest_infer.run import Run
    from pytest_infer.selection import Selection

Outcome = Literal["pass", "fail", "inconclusive", "skip"]


@dataclass
class Result:
    """What a suite's check of one stack saw: how the test ends, why, and the row for the reports."""

    outcome: Outcome
    message: str
    row: StackRow


class Suite(ABC):
    name: ClassVar[str]
    # Known-broken kinds this suite does not measure, so does not expect to fail: a known slowdown still
    # has to give right answers (conformance), a known accuracy loss still has to be fast, both start.
    unaffected_by: ClassVar[tuple[str, ...]] = ("silent accuracy",)
    with_parts: ClassVar[bool] = True  # measures a stack's parts as references (interleaved with it)
    fresh: ClassVar[bool] = False  # measures anew in every session (a stored sweep is not a result)
    properties_of_row: ClassVar[tuple[str, ...]] = (
        "verdict", "worst_ratio", "worst_low", "worst_high", "worst_interactivity", "best_part", "stack_throughput",
        "part_throughput", "mtp_acceptance_rate", "repeats_needed", "failed_levels", "saturation",
        "extended_levels")

    def __init__(self, run: Run, selection: Selection, lab: Lab) -> None:
        self.run = run
        self.selection = selection
        self.lab = lab

    # ---- before the run -----------------------------------------------------------------------------
    @classmethod
    def default_stacks(cls, matrix: Matrix, gpu: str) -> list[str]:
        """--stack expressions when none is given: every stack."""
        return []

    @classmethod
    def replayed(cls, run: Run) -> list[Stack] | None:
        """--infer-results of foreign result files: ingested into a store, the stacks they hold. None for
        no --infer-results, or for a plain store (replayed as it is). Raises pytest.UsageError."""
        root = run.options.results
        if root is None:
            return None
        if not root.is_dir():
            raise usage(f"--results {root}: not a directory")
        if is_store(root):
            return None
        try:
            return replay_store(root, run.matrix, run.gpu, list(run.engines), run.paths.replayed)
        except ReplayError as exc:
            raise usage(str(exc)) from None

    def plan_client(self, stack: Stack, dep: Deployment) -> tuple[str, list[str]]:
        """The client the suite points at the front door: the load at the first level (the others differ
        in --max-concurrency and --num-prompts)."""
        w = self.run.workload
        c = w.concurrency[0]
        return "load", bench_argv(Target(dep.endpoint_url, dep.served_name, dep.model), w, c,
                                  self.run.paths.bench_result(stack.id, c, 0))

    # ---- one stack ----------------------------------------------------------------------------------
    @abstractmethod
    def check(self, stack: Stack) -> Result:
        """Raises MeasurementFailed when the stack cannot be measured."""

    def failed_words(self, exc: Exception) -> str:
        return "could not be measured"

    def errors(self) -> tuple[type[Exception], ...]:
        """What check() raises when the stack cannot be judged (its message is the reason)."""
        return (MeasurementFailed,)

    def run_test(self, item: pytest.Item, stack: Stack) -> None:
        try:
            result = self.check(stack)
        except self.errors() as exc:
            self.record(item, StackRow(stack=stack.id, message=str(exc)))
            failure = f"{stack.id}: {self.failed_words(exc)}: {exc}"
        else:
            failure = ""
        if failure:  # raised outside the handler: no "During handling of the above exception" in the report
            pytest.fail(failure, pytrace=False)
        self.record(item, result.row)
        if result.outcome == "fail":
            pytest.fail(f"{stack.id} {self.name}: {result.message}", pytrace=False)
        if result.outcome == "inconclusive":
            pytest.skip(f"inconclusive: {result.message}")
        if result.outcome == "skip":
            pytest.skip(result.message)

    def record(self, item: pytest.Item, row: StackRow) -> None:
        """The row on the test report: the reports read it back (also under xdist), JUnit keeps it."""
        item.user_properties.append((PROPERTY, row.dumps()))
        item.user_properties.extend(self.properties(row))

    def properties(self, row: StackRow) -> list[tuple[str, object]]:
        """JUnit properties besides the row itself: the numbers a CI dashboard reads."""
        values = row.model_dump(include=set(self.properties_of_row), exclude_none=True)
        return [(k, values[k]) for k in self.properties_of_row if k in values]

    # ---- after the run ------------------------------------------------------------------------------
    @abstractmethod
    def report(self, rows: list[Row]) -> Path:
        """Write the suite's matrix (<report-dir>/<gpu>/<suite>.md); returns its path."""


def measured_row(stack: Stack, m: Measurement | None, message: str = "") -> StackRow:
    """The row of a measured deployment: its levels with the engine metrics, and the MTP acceptance."""
    row = StackRow(stack=stack.id, message=message or None)
    if m is None:
        return row
    row.gpus, row.decode_gpus, row.launch_s = m.gpus, m.decode_gpus, round(m.launch_s, 1)
    row.engine_version, row.date = m.engine_version or None, m.date or None
    row.levels = [LevelRow(concurrency=lv.concurrency, repeat=lv.repeat, interactivity=round(lv.interactivity, 2),
                           per_gpu_throughput=round(lv.per_gpu_throughput, 1),
                           per_decode_gpu_output_throughput=round(lv.per_decode_gpu_output_throughput, 1),
                           per_gpu_output_throughput=round(lv.per_gpu_output_throughput, 2),
                           median_ttft_ms=round(lv.median_ttft_ms, 1), metrics=lv.metrics or None,
                           num_prompts=lv.num_prompts, completed=lv.completed, failed=lv.failed,
                           problems=lv.problems() or None,
                           power_w=None if lv.power_w is None else round(lv.power_w, 1),
                           energy_j=None if lv.energy_j is None else round(lv.energy_j, 1))
                  for lv in m.levels]
    problems = DataProblems.of(m)
    row.failed_levels = [*problems.fatal, *problems.tolerated] or None
    if (rate := acceptance(m)) is not None:
        row.mtp_acceptance_rate = round(rate, 4)
    row.warnings = list(m.warnings) or None
    row.applied = m.evidence.summary() if m.evidence is not None else None
    row.power_note = m.power_note or None
    return row


@dataclass(frozen=True)
class DataProblems:
    """Levels of a measurement that do not count (failed requests, no tokens, requests cut short): they
    never enter a curve. `fatal` fail the stack; `tolerated` (within a failure threshold the replayed
    data declares) leave it at best inconclusive."""

    fatal: tuple[str, ...] = ()
    tolerated: tuple[str, ...] = ()

    @classmethod
    def of(cls, m: Measurement) -> DataProblems:
        fatal: list[str] = []
        tolerated: list[str] = []
        for lv in m.levels:
            (tolerated if lv.tolerated else fatal).extend(
                f"{p} (within the data's failure threshold {lv.failure_threshold:.0%})" if lv.tolerated else p
                for p in lv.problems())
        return cls(tuple(fatal), tuple(tolerated))

    def __bool__(self) -> bool:
        return bool(self.fatal or self.tolerated)

    def describe(self, who: str, limit: int | None = 3) -> str:
        """One line naming the levels; the first `limit` of them (None: all)."""
        items = [*self.fatal, *self.tolerated]
        shown = items if limit is None else items[:limit]
        more = f" (and {len(items) - len(shown)} more)" if len(shown) < len(items) else ""
        return f"{who}: level(s) that do not count: {'; '.join(shown)}{more}"


def with_problems(verdict: Verdict, own: DataProblems, part_problems: list[str]) -> Verdict:
    """Failed requests never pass: the stack's own fail it (tolerated ones: at best inconclusive); a
    part's leave a passing stack inconclusive, its comparison having lost the part's levels."""
    if own.fatal:
        verdict.verdict = "fail"
        verdict.message = f"{own.describe(verdict.stack)}; on the levels that count: {verdict.message}"
    elif own.tolerated or part_problems:
        why = [own.describe(verdict.stack)] if own.tolerated else []
        if verdict.verdict == "pass":
            verdict.verdict = "inconclusive"
        verdict.message = "; ".join([*why, *part_problems]) + f"; on the levels that count: {verdict.message}"
    return verdict


def clean_levels(m: Measurement) -> list[Level]:
    """The levels a curve is built from: every request completed with its tokens."""
    return [lv for lv in m.levels if lv.ok]


def with_verdict(row: StackRow, verdict: Verdict) -> StackRow:
    """A throughput verdict on the row: the ratio at the worst matched level and at every level."""
    row.verdict, row.message, row.tolerance = verdict.verdict, verdict.message, verdict.tolerance
    row.repeats_needed = verdict.repeats_needed or None
    worst = verdict.worst
    if worst is not None:
        row.worst_ratio, row.worst_low = round(worst.ratio, 4), round(worst.interval.low, 4)
        row.worst_high, row.interval_method = round(worst.interval.high, 4), worst.interval.method
        row.worst_interactivity, row.best_part = round(worst.interactivity, 2), worst.part
        row.stack_throughput, row.part_throughput = round(worst.stack_throughput, 1), round(worst.part_throughput, 1)
        row.ratios = {f"{lc.interactivity:.2f}": round(lc.ratio, 4) for lc in verdict.levels}
        extended = [lc for lc in verdict.levels if lc.extended]
        row.extended_levels = [f"{lc.interactivity:.2f}" for lc in extended] or None
        row.saturation = extended[0].note if extended else None
        row.intervals = {f"{lc.interactivity:.2f}": [round(lc.interval.low, 4), round(lc.interval.high, 4)]
                         for lc in verdict.levels}
    return row


def outcome_of(verdict: Verdict) -> Outcome:
    return "fail" if verdict.verdict == "fail" else "inconclusive" if verdict.verdict == "inconclusive" else "pass"


def acceptance(m: Measurement) -> float | None:
    """Speculative-decoding acceptance over every level and role of a measurement."""
    return pooled_acceptance(lv.metrics for lv in m.levels)

"""The conformance checks of one stack: accuracy (lm-eval), parity against its reference, the model's floor,
and greedy-output agreement for optimizations that should not change answers.

References: every stack against `base` (FP8, one node, no speculation) with the loosest margin of its
optimizations; a stack with a precision optimization (fp4) also against that precision alone, with the
margins of its other optimizations -- so fp4+mtp answers for MTP's loss against fp4, and for FP4's loss
against fp8. Output agreement compares with the same-precision reference (FP4 changes answers by design).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pytest_infer.accuracy.lmeval import GSM8K, Task
from pytest_infer.accuracy.runner import AccuracyResult, AccuracyRunner, AccuracyStore
from pytest_infer.analysis.parity import (
    ParityVerdict,
    agreement,
    agreement_check,
    floor_check,
    non_inferiority,
    paired_difference,
    unpaired_difference,
)
from pytest_infer.builder import load_task_writer
from pytest_infer.matrix import AccuracySpec, Matrix
from pytest_infer.measure.runner import MeasurementFailed, failure_of
from pytest_infer.replay.evals import EvalRowError, group, read_rows
from pytest_infer.report import conformance, markdown
from pytest_infer.report.rows import CheckRow, Row, StackRow
from pytest_infer.run import usage
from pytest_infer.space import Stack
from pytest_infer.suite.base import Result, Suite

if TYPE_CHECKING:
    from pytest_infer.deployment import Deployment
    from pytest_infer.lab import Lab
    from pytest_infer.run import Run
    from pytest_infer.selection import Selection

DEFAULT_SPEC = AccuracySpec(task=GSM8K, api="chat", num_fewshot=5, max_tokens=4096, concurrency=32)


def accuracy_spec(matrix: Matrix, model: str) -> AccuracySpec:
    """How lm-eval scores this model: its models.yaml `accuracy:`, else GSM8K 5-shot as InferenceX runs it."""
    m = matrix.models.get(model)
    return m.accuracy if m is not None and m.accuracy is not None else DEFAULT_SPEC


class ConformanceError(ValueError):
    """--results for the conformance suite that cannot be replayed (one line naming the file)."""


def replayed_stacks(root: Path, kinds: list[str], optimizations: list[str], gpu: str,
                    engines: list[str] | None) -> list[Stack] | None:
    """--results DIR: None for a results store (replayed per stack, paired), else the stacks of the
    accuracy rows found (unpaired). Raises ConformanceError when DIR holds neither."""
    if accuracy_root(root).is_dir() and any(accuracy_root(root).glob("*.json")):
        return None
    try:
        rows = read_rows(root)
    except EvalRowError as exc:
        raise ConformanceError(str(exc)) from None
    if not rows:
        raise ConformanceError(f"--results {root}: no accuracy results (neither a results store with accuracy/ "
                               "nor rows with task, score, score_se, n_eff, hw, framework, precision)")
    stacks = group(rows, kinds, optimizations, gpu, engines)
    if not stacks:
        raise ConformanceError(f"--results {root}: {len(rows)} accuracy rows, none for {gpu}"
                               + (f" with {', '.join(engines)}" if engines else ""))
    order = {o: i for i, o in enumerate(optimizations)}
    return sorted(stacks, key=lambda s: (s.engine, s.variant, len(s.opts), [order[o] for o in s.opts]))


def accuracy_root(results: Path) -> Path:
    return results if results.name == "accuracy" else results / "accuracy"


@dataclass
class Outcome:
    """What the conformance test of one stack saw."""

    stack: Stack
    result: AccuracyResult
    checks: list[ParityVerdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> Literal["pass", "fail", "inconclusive"]:
        kinds = {c.verdict for c in self.checks}
        return "fail" if "fail" in kinds else "inconclusive" if "inconclusive" in kinds else "pass"

    def message(self) -> str:
        r = self.result
        head = (f"{r.task} {r.score:.4f}" + (f" ± {r.stderr:.4f}" if r.stderr is not None else "") + f" (n={r.n})"
                if r.score is not None else f"{r.task}: no score")
        lines = [head + (f"; {r.note}" if r.note else "")]
        order = {"fail": 0, "inconclusive": 1, "pass": 2}
        lines += [f"{c.check}: {c.verdict}: {c.message}" for c in sorted(self.checks, key=lambda c: order[c.verdict])]
        return "\n".join(lines + self.notes)

    def row(self) -> StackRow:
        r = self.result
        row = StackRow(stack=self.stack.id, message=self.message(), verdict=self.verdict, task=r.task, n=r.n,
                       paired=r.paired)
        if r.score is not None:
            row.score = round(r.score, 4)
        if r.stderr is not None:
            row.stderr = round(r.stderr, 4)
        if (acc := r.mtp_acceptance) is not None:
            row.mtp_acceptance_rate = round(acc, 4)
        if r.launch_s:
            row.launch_s, row.eval_s, row.greedy_s = round(r.launch_s, 1), round(r.eval_s, 1), round(r.greedy_s, 1)
        row.checks = [CheckRow(check=c.check, verdict=c.verdict, value=c.value, low=c.low, high=c.high,
                               threshold=c.threshold, method=c.method, n=c.n, message=c.message)
                      for c in self.checks]
        return row


class Conformance(Suite):
    name = "conformance"
    unaffected_by = ("silent performance",)
    with_parts = False  # one launch per stack, its references launched on their own

    def __init__(self, run: Run, selection: Selection, lab: Lab) -> None:
        super().__init__(run, selection, lab)
        matrix = run.matrix
        self.model = matrix.models.get(run.model)
        self.spec = accuracy_spec(matrix, run.model)
        self.confidence = matrix.thresholds.confidence
        self.results = run.options.results
        self._runners: dict[str, AccuracyRunner] = {}
        self._rows: dict[Stack, AccuracyResult] | None = None
        if selection.replayed is not None and self.results is not None:  # published rows, not a store
            self._rows = group(read_rows(self.results), list(matrix.gpus), run.optimizations, run.gpu,
                               list(run.options.engines) or None)

    @classmethod
    def replayed(cls, run: Run) -> list[Stack] | None:
        """Accuracy: a store, or published score rows (their stacks)."""
        root = run.options.results
        if root is None:
            return None
        if not root.is_dir():
            raise usage(f"--results {root}: not a directory")
        try:
            return replayed_stacks(root, list(run.matrix.gpus), run.optimizations, run.gpu,
                                   list(run.options.engines) or None)
        except ConformanceError as exc:
            raise usage(str(exc)) from None

    def task(self) -> Task:
        """The task, with the module that writes it when it is written locally."""
        writer = load_task_writer(self.spec.writer) if self.spec.writer else self.lab.builder
        return Task(self.spec, writer)

    def plan_client(self, stack: Stack, dep: Deployment) -> tuple[str, list[str]]:
        """lm-eval against the front door, with the paths and cache the run would use."""
        accuracy, paths = self._runner(stack.engine), self.run.paths
        try:
            task_file, key = accuracy.task_file(), accuracy.key(stack)
        except ImportError as exc:  # GSM8K's task file starts from lm-eval's own, not installed here
            task_file, key = accuracy.task.path(paths.tasks), f"KEY-once-{exc.name}-is-installed"
        cache = paths.lm_eval_cache(accuracy.store.root, stack.id, key)
        args = accuracy.task.argv(dep.endpoint_url, dep.served_name, paths.lm_eval_output(stack.id), cache,
                                  task_file)
        return "accuracy", ["python", "-m", "lm_eval", *args]

    # ---- accuracy results -----------------------------------------------------------------------
    def accuracy(self, stack: Stack) -> AccuracyResult:
        if self._rows is not None:
            got = self._rows.get(stack)
            if got is None:
                raise MeasurementFailed(f"no accuracy row for {stack.id} in {self.results}")
            return got
        return self._runner(stack.engine).accuracy(stack)

    def _runner(self, engine: str) -> AccuracyRunner:
        if engine in self._runners:
            return self._runners[engine]
        runner = self.lab.runner(engine)
        root = accuracy_root(self.results) if self.results is not None else self.run.paths.accuracy_results
        accuracy = AccuracyRunner(runner=runner, task=self.task(),
                                  store=AccuracyStore(root, read_only=self.results is not None),
                                  replay=self.results is not None, fresh=self.run.options.fresh, log=runner.log)
        self._runners[engine] = accuracy
        return accuracy

    # ---- checks ---------------------------------------------------------------------------------
    def reference(self, stack: Stack) -> Stack:
        """The same-precision reference: fp4 for fp4+mtp, base for mtp. A precision change that declares an
        output agreement (one meant to be lossless) is compared against the reference without it."""
        opts = self.run.matrix.optimizations
        return stack.with_opts(o for o in stack.opts if opts[o].precision and opts[o].output_agreement is None)

    def margin(self, opts: tuple[str, ...]) -> float:
        return max((self.run.matrix.optimizations[o].accuracy_margin for o in opts), default=0.0)

    def agreement_threshold(self, opts: tuple[str, ...]) -> float | None:
        """Lossless optimizations only (each declares a threshold); several stacked may each flip
        near-ties, so the loosest of theirs applies."""
        got = [self.run.matrix.optimizations[o].output_agreement for o in opts]
        if not got or any(t is None for t in got):
            return None
        return min(t for t in got if t is not None)

    def _part(self, part: Stack, outcome: Outcome) -> AccuracyResult | None:
        why = self.selection.unsupported(part)
        if why:
            outcome.notes.append(f"reference {part.label} not compared: {why}")
            return None
        try:
            return self.accuracy(part)
        except MeasurementFailed as exc:
            outcome.notes.append(f"reference {part.label} could not be measured: {str(exc).splitlines()[0]}")
            return None

    def parity(self, stack: AccuracyResult, ref: AccuracyResult, margin: float, check: str,
               stack_label: str, ref_label: str) -> ParityVerdict:
        if stack.paired and ref.paired:
            diff = paired_difference(stack.samples, ref.samples, self.confidence)
        else:
            if stack.score is None or ref.score is None or stack.stderr is None or ref.stderr is None:
                raise ValueError(f"{stack.stack} or {ref.stack}: no score ± stderr to compare")
            diff = unpaired_difference(stack.score, stack.stderr, ref.score, ref.stderr, min(stack.n, ref.n),
                                       self.confidence)
        return non_inferiority(diff, margin, check, stack_label, ref_label, self.confidence)

    def properties(self, row: StackRow) -> list[tuple[str, object]]:
        values = row.model_dump(include={"score", "stderr", "n", "mtp_acceptance_rate", "verdict"}, exclude_none=True)
        out: list[tuple[str, object]] = list(values.items())
        for c in row.checks or []:
            name = c.check.replace(" ", "_")
            out.append((name, c.verdict))
            if c.value is not None:
                out.append((f"{name}_value", round(c.value, 4)))
            if c.low is not None and c.high is not None:
                out.append((f"{name}_interval", f"[{c.low:.4f}, {c.high:.4f}]"))
        return out

    def check(self, stack: Stack) -> Result:
        out = self.outcome(stack)
        return Result(out.verdict, out.message(), out.row())

    def outcome(self, stack: Stack) -> Outcome:
        """Raises MeasurementFailed when the stack itself cannot be measured (or is known broken and a
        part of it already failed under the same entry: not launched, as in the composability suite)."""
        if self._rows is None:
            self.selection.fail_fast_on_broken_part(stack, failure_of(self.accuracy))
        result = self.accuracy(stack)
        out = Outcome(stack, result)
        self._where(stack, out)
        floor = self.floor(result)
        if floor is not None and result.score is not None:
            out.checks.append(floor_check(result.score, result.stderr, result.n, floor, result.task, self.confidence))
        if not stack.opts:
            return out
        base, ref = stack.with_opts(()), self.reference(stack)
        lossless = tuple(o for o in stack.opts if o not in ref.opts)
        comparisons = [(base, stack.opts)] + ([(ref, lossless)] if ref not in (base, stack) else [])
        got: dict[Stack, AccuracyResult | None] = {}
        for part, opts in comparisons:
            got[part] = measured = self._part(part, out)
            if measured is not None:
                out.checks.append(self.parity(result, measured, self.margin(opts), f"parity vs {part.label}",
                                              stack.label, part.label))
        if not out.checks:  # nothing to hold the score against: never a silent pass (a 0.000 run looks fine)
            out.checks.append(ParityVerdict("parity", "inconclusive", f"{stack.label}: no reference measured and no "
                                            f"accuracy floor for {result.model} ({result.task}) to judge "
                                            f"{result.score} against", 0.0, result.score))
        threshold = self.agreement_threshold(lossless) if lossless else None
        reference = got.get(ref)
        if threshold is not None and reference is not None:
            if result.greedy and reference.greedy:
                out.checks.append(agreement_check(agreement(result.greedy, reference.greedy, self.confidence),
                                                  threshold, stack.label, ref.label))
            else:
                out.notes.append(f"output agreement vs {ref.label} not compared: no greedy outputs "
                                 f"({'published rows' if self._rows is not None else 'none stored'})")
        return out

    def _where(self, stack: Stack, out: Outcome) -> None:
        """Where to look next: the stored per-sample outcomes and the deployment's logs."""
        if self._rows is not None or stack.engine not in self._runners:
            return
        runner = self._runners[stack.engine]
        out.notes.append(f"per-sample outcomes: {runner.store.path(stack.id, out.result.key)}; "
                         f"server logs: {self.run.paths.logs(stack.id, 'accuracy')}")

    def floor(self, result: AccuracyResult) -> float | None:
        """The model's floor for the task: its own (published rows: the model whose checkpoint they name),
        else the matrices' default for the task family."""
        matrix = self.run.matrix
        model = self.model
        if self._rows is not None:
            model = next((m for m in matrix.models.values() if result.model.lower() in
                          {c.lower() for by_vendor in m.checkpoints.values() for c in by_vendor.values()}), None)
        own = model.floor(result.task) if model is not None else None
        if own is not None:
            return own
        return matrix.default_floor.get(result.task, matrix.default_floor.get(result.task.split("_")[0]))

    def report(self, rows: list[Row]) -> Path:
        text = (markdown.header("Conformance", self.run)
                + conformance.intro(self.confidence) + conformance.table(rows) + markdown.applied_table(rows))
        return markdown.write(self.run.paths.matrix(self.name), text)

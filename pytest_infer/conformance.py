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
from typing import TYPE_CHECKING, Any

from pytest_infer.analysis.parity import (
    ParityVerdict,
    agreement,
    agreement_check,
    floor_check,
    non_inferiority,
    paired_difference,
    unpaired_difference,
)
from pytest_infer.measure.accuracy import AccuracyResult, AccuracyRunner, AccuracyStore
from pytest_infer.measure.evaltask import GSM8K, AccuracySpec
from pytest_infer.space import Stack

if TYPE_CHECKING:
    from pytest_infer.matrix import Matrix
    from pytest_infer.session import InferSession

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
    from pytest_infer.measure.evals import EvalRowError, group, read_rows

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
    def verdict(self) -> str:
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

    def row(self) -> dict[str, Any]:
        r = self.result
        out: dict[str, Any] = {"task": r.task, "n": r.n, "paired": r.paired}
        if r.score is not None:
            out["score"] = round(r.score, 4)
        if r.stderr is not None:
            out["stderr"] = round(r.stderr, 4)
        if (acc := r.mtp_acceptance) is not None:
            out["mtp_acceptance_rate"] = round(acc, 4)
        if r.launch_s:
            out.update(launch_s=round(r.launch_s, 1), eval_s=round(r.eval_s, 1), greedy_s=round(r.greedy_s, 1))
        out["checks"] = [{"check": c.check, "verdict": c.verdict, "value": c.value, "low": c.low, "high": c.high,
                          "threshold": c.threshold, "method": c.method, "n": c.n, "message": c.message}
                         for c in self.checks]
        return out


class Conformance:
    def __init__(self, infer: InferSession) -> None:
        self.infer = infer
        matrix = infer.matrix
        model = matrix.models.get(infer.model)
        self.model = model
        self.spec = accuracy_spec(matrix, infer.model)
        self.confidence = matrix.thresholds.confidence
        results = infer.config.getoption("results")
        self.results = Path(results).resolve() if results else None
        self._runners: dict[str, AccuracyRunner] = {}
        self._rows: dict[Stack, AccuracyResult] | None = None
        if infer.replayed is not None and self.results is not None:  # published rows, not a store
            from pytest_infer.measure.evals import group, read_rows

            engines = infer.config.getoption("engine") or None
            self._rows = group(read_rows(self.results), list(matrix.gpus), list(matrix.optimizations), infer.gpu,
                               engines)

    # ---- accuracy results -----------------------------------------------------------------------
    def accuracy(self, stack: Stack) -> AccuracyResult:
        from pytest_infer.measure.runner import MeasurementFailed

        if self._rows is not None:
            got = self._rows.get(stack)
            if got is None:
                raise MeasurementFailed(f"no accuracy row for {stack.id} in {self.results}")
            return got
        return self._runner(stack.engine).accuracy(stack)

    def _runner(self, engine: str) -> AccuracyRunner:
        if engine not in self._runners:
            runner = self.infer.runner(engine)
            root = (accuracy_root(self.results) if self.results is not None
                    else self.infer.report_dir / "results" / "accuracy")
            self._runners[engine] = AccuracyRunner(
                runner=runner, spec=self.spec, store=AccuracyStore(root, read_only=self.results is not None),
                task_dir=self.infer.report_dir / "tasks", replay=self.results is not None,
                fresh=bool(self.infer.config.getoption("infer_fresh")), log=runner.log)
        return self._runners[engine]

    # ---- checks ---------------------------------------------------------------------------------
    def reference(self, stack: Stack) -> Stack:
        """The same-precision reference: fp4 for fp4+mtp, base for mtp. A precision change that declares an
        output agreement (one meant to be lossless) is compared against the reference without it."""
        opts = self.infer.matrix.optimizations
        return stack.with_opts(o for o in stack.opts if opts[o].precision and opts[o].output_agreement is None)

    def margin(self, opts: tuple[str, ...]) -> float:
        return max((self.infer.matrix.optimizations[o].accuracy_margin for o in opts), default=0.0)

    def agreement_threshold(self, opts: tuple[str, ...]) -> float | None:
        """Lossless optimizations only (each declares a threshold); several stacked may each flip
        near-ties, so the loosest of theirs applies."""
        got = [self.infer.matrix.optimizations[o].output_agreement for o in opts]
        if not got or any(t is None for t in got):
            return None
        return min(t for t in got if t is not None)

    def _part(self, part: Stack, outcome: Outcome) -> AccuracyResult | None:
        from pytest_infer.measure.runner import MeasurementFailed

        if self.infer.unsupported(part):
            outcome.notes.append(f"reference {part.label} not compared: {self.infer.unsupported(part)}")
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

    def check(self, stack: Stack) -> Outcome:
        """Raises MeasurementFailed when the stack itself cannot be measured (or is known broken and a
        part of it already failed under the same entry: not launched, as in the composability suite)."""
        from pytest_infer.measure.runner import failure_of

        if self._rows is None:
            self.infer.fail_fast_on_broken_part(stack, failure_of(self.accuracy))
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
                         f"server logs: {runner.runner.run_root / stack.id / 'accuracy' / 'logs'}")

    def floor(self, result: AccuracyResult) -> float | None:
        """The model's floor for the task: its own (published rows: the model whose checkpoint they name),
        else the matrices' default for the task family."""
        matrix = self.infer.matrix
        model = self.model
        if self._rows is not None:
            model = next((m for m in matrix.models.values() if result.model.lower() in
                          {c.lower() for by_vendor in m.checkpoints.values() for c in by_vendor.values()}), None)
        own = model.floor(result.task) if model is not None else None
        if own is not None:
            return own
        return matrix.default_floor.get(result.task, matrix.default_floor.get(result.task.split("_")[0]))
